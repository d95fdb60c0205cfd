"""Prompt styles shared by training data, evaluation, scaling, refinement and RL.

One question becomes one chat prompt. The three styles differ only in the instruction and in
whether Qwen3's thinking mode is on:

- ``direct``: answer at once, no visible reasoning.
- ``cot``: reason step by step in the visible answer, then ``\\boxed{}``.
- ``thinking``: Qwen3 thinking mode; the reasoning goes inside ``<think>...</think>``.
"""
from __future__ import annotations

PROMPT_STYLES = ("direct", "cot", "thinking")
DEFAULT_PROMPT_STYLE = "cot"

INSTRUCTIONS = {
    "direct": "Give only the final answer, in \\boxed{}.",
    "cot": "Solve it step by step, then give the final answer in \\boxed{}.",
    "thinking": "Give the final answer in \\boxed{}.",
}


def user_message(question: str, style: str = DEFAULT_PROMPT_STYLE) -> str:
    if style not in INSTRUCTIONS:
        raise ValueError(f"unknown prompt style {style!r}; choose one of {', '.join(PROMPT_STYLES)}")
    return f"{question.strip()}\n{INSTRUCTIONS[style]}"


def build_prompt(tokenizer, question: str, style: str = DEFAULT_PROMPT_STYLE) -> str:
    """The chat prompt text for ``question``, ending with the assistant's generation prompt."""
    messages = [{"role": "user", "content": user_message(question, style)}]
    return tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, enable_thinking=(style == "thinking")
    )


# ---- self-refinement: review an earlier attempt ------------------------------------------------

REVISE_INSTRUCTION = (
    "Check the attempt step by step. If a step is wrong, correct it and finish the solution. "
    "Give the final answer in \\boxed{}."
)


def revise_message(question: str, attempt: str) -> str:
    """The user turn that asks to review an earlier attempt (used for training and by refinement)."""
    return f"{question.strip()}\nHere is an attempt:\n{attempt.strip()}\n{REVISE_INSTRUCTION}"


def build_revise_prompt(tokenizer, question: str, attempt: str) -> str:
    """The chat prompt for a review, with thinking off: the review itself is the visible answer."""
    messages = [{"role": "user", "content": revise_message(question, attempt)}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=False)
