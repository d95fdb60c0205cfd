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
