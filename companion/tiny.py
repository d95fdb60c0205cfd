"""The tiny reasoning model: its training corpus, its tokenizer, and the recipe that trains it.

The corpus is made of full chats rendered with the Qwen3 chat template, built from the
synthetic ``train`` problems (``companion.synthetic``). Each problem is shown in a few of four
kinds, so that the model behaves like a small base model that the later chapters can improve:

- ``direct``: the prompt asks for the answer only; the target is ``\\boxed{42}``.
- ``cot``: the prompt asks for steps; the target is the solution lines, then
  ``The answer is \\boxed{42}.``
- ``thinking``: Qwen3 thinking mode; the same lines go inside ``<think>...</think>``.
- ``revise``: the user shows an earlier attempt (half of them with an arithmetic slip whose
  error is carried through the later steps) and asks for a review; the assistant re-computes
  each step in turn, stops at the first wrong one, and finishes the solution from there.

Prompts come from ``companion.prompts`` so that training and evaluation use the same text.
The tokenizer is a byte-level BPE trained on this corpus, with Qwen's pre-tokenizer (digits split
one by one), Qwen3's added tokens in Qwen3's order and the Qwen3 chat template.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from companion.prompts import build_prompt
from companion.synthetic import OPERATIONS, SyntheticProblem, Step, recompute
from companion.tokenizer import (
    QWEN3_CHAT_TEMPLATE,
    QWEN3_NON_SPECIAL_TOKENS,
    QWEN3_SPECIAL_TOKENS,
    Tokenizer,
    render_qwen3_chat,
)

# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------
REVISE_INSTRUCTION = (
    "Check the attempt step by step. If a step is wrong, correct it and finish the solution. "
    "Give the final answer in \\boxed{}."
)
END_OF_TURN = "<|im_end|>"
# How often each kind of example is drawn for the corpus.
CORPUS_MIX = {"cot": 0.4, "thinking": 0.2, "direct": 0.2, "revise": 0.2}
SLIP_FRACTION = 0.5  # of revise examples, how many show an attempt with a slip
SLIP_OFFSETS = (-100, -10, -2, -1, 1, 2, 10, 100)


def final_answer(answer: int) -> str:
    return f"The answer is \\boxed{{{answer}}}."


def solution_text(problem: SyntheticProblem) -> str:
    """The visible chain of thought: one line per step, then the boxed answer."""
    return "\n".join(problem.solution_lines() + [final_answer(problem.answer)])


def target(problem: SyntheticProblem, style: str) -> str:
    """What the assistant writes after the prompt of ``style`` (without the end-of-turn token).

    For ``thinking`` this includes the ``<think>`` block, exactly as the Qwen3 template renders an
    assistant turn with reasoning; for ``direct`` and ``cot`` the prompt already ends with the
    empty think block that ``enable_thinking=False`` adds.
    """
    if style == "direct":
        return f"\\boxed{{{problem.answer}}}"
    if style == "cot":
        return solution_text(problem)
    if style == "thinking":
        steps = "\n".join(problem.solution_lines())
        return f"<think>\n{steps}\n</think>\n\n{final_answer(problem.answer)}"
    raise ValueError(f"unknown style {style!r}")


def revise_message(question: str, attempt: str) -> str:
    """The user turn that asks to review an earlier attempt (used for training and by refinement)."""
    return f"{question.strip()}\nHere is an attempt:\n{attempt.strip()}\n{REVISE_INSTRUCTION}"


def build_revise_prompt(tokenizer, question: str, attempt: str) -> str:
    """The chat prompt for a review, with thinking off: the review itself is the visible answer."""
    messages = [{"role": "user", "content": revise_message(question, attempt)}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=False)


@dataclass(frozen=True)
class Attempt:
    """An earlier solution as shown to the reviewer: the values written on each line."""

    values: tuple[tuple[int, int, int], ...]  # (left, right, result) per step
    slip: int | None  # index of the miscomputed step, None if the attempt is right

    def text(self, problem: SyntheticProblem) -> str:
        lines = [step.line(*values) for step, values in zip(problem.steps, self.values)]
        return "\n".join(lines + [final_answer(self.values[-1][2])])


def correct_attempt(problem: SyntheticProblem) -> Attempt:
    return Attempt(tuple((s.left.value, s.right.value, s.result) for s in problem.steps), None)


def slipped_attempt(problem: SyntheticProblem, rng: random.Random, tries: int = 20) -> Attempt | None:
    """The solution with one result off by a small amount, and the error carried forward.

    Later steps that use the wrong result are recomputed from it, as a student would, so the
    attempt is wrong at one step and consistent afterwards. ``None`` when no slip keeps every
    later value a positive integer (e.g. a later division would no longer be exact).
    """
    for _ in range(tries):
        index = rng.randrange(len(problem.steps))
        wrong = problem.steps[index].result + rng.choice(SLIP_OFFSETS)
        values = _carry_forward(problem.steps, index, wrong)
        if values is not None:
            return Attempt(values, index)
    return None


def _carry_forward(steps: tuple[Step, ...], index: int, wrong: int):
    """Values of every step when step ``index`` yields ``wrong``; None if that breaks a later step."""
    if wrong < 1 or wrong == steps[index].result:
        return None
    results: list[int] = []
    values = []
    for position, step in enumerate(steps):
        left, right = (results[o.step] if o.step is not None else o.value for o in (step.left, step.right))
        if position == index:
            result = wrong
        else:
            if step.op == "÷" and left % right:
                return None
            result = OPERATIONS[step.op](left, right)
            if result < 1:
                return None
        results.append(result)
        values.append((left, right, result))
    return tuple(values)


def review_target(problem: SyntheticProblem, attempt: Attempt) -> str:
    """The reviewer's reply: recompute each line, stop at the first wrong one, finish from there.

    Each check writes the recomputed result before comparing it with the attempt's, so the model
    does the arithmetic again instead of judging a line at a glance.
    """
    lines = []
    for index, (step, (left, right, shown)) in enumerate(zip(problem.steps, attempt.values)):
        if index != attempt.slip:
            lines.append(f"Check: {left} {step.op} {right} = {step.result}. Correct.")
            continue
        lines.append(f"Check: {left} {step.op} {right} = {step.result}, not {shown}. Wrong.")
        lines += [later.line() for later in problem.steps[index + 1:]]
        return "\n".join(lines + [final_answer(problem.answer)])
    return "\n".join(lines + [f"The attempt is correct. {final_answer(problem.answer)}"])


# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    """One training chat: the prompt (no loss) and the assistant's reply (loss), end token included."""

    kind: str
    prompt: str
    reply: str
    steps: int

    @property
    def text(self) -> str:
        return self.prompt + self.reply


def make_example(tokenizer, problem: SyntheticProblem, kind: str, rng: random.Random) -> Example:
    """Render ``problem`` as a chat of ``kind`` (a prompt style, or ``revise``)."""
    if kind == "revise":
        attempt = None
        if rng.random() < SLIP_FRACTION:
            attempt = slipped_attempt(problem, rng)
        attempt = attempt or correct_attempt(problem)
        prompt = build_revise_prompt(tokenizer, problem.question, attempt.text(problem))
        reply = review_target(problem, attempt)
    else:
        prompt = build_prompt(tokenizer, problem.question, kind)
        reply = target(problem, kind)
    return Example(kind, prompt, reply + END_OF_TURN, len(problem.steps))


def build_corpus(tokenizer, problems, seed: int = 0, kinds_per_problem: int = 2,
                 mix: dict[str, float] | None = None) -> list[Example]:
    """Every problem rendered as ``kinds_per_problem`` different kinds drawn from ``mix``, shuffled."""
    mix = mix or CORPUS_MIX
    rng = random.Random(f"corpus-{seed}")
    examples = []
    for problem in problems:
        recompute(problem.steps)
        for kind in _draw_kinds(rng, mix, kinds_per_problem):
            examples.append(make_example(tokenizer, problem, kind, rng))
    rng.shuffle(examples)
    return examples


def _draw_kinds(rng: random.Random, mix: dict[str, float], count: int) -> list[str]:
    """``count`` distinct kinds, each drawn with probability proportional to ``mix``."""
    remaining = dict(mix)
    kinds = []
    for _ in range(min(count, len(remaining))):
        kind = rng.choices(list(remaining), weights=list(remaining.values()))[0]
        kinds.append(kind)
        del remaining[kind]
    return kinds


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------
# Qwen2/Qwen3's pre-tokenizer: contractions, words, single digits, punctuation runs, newlines.
QWEN_PRETOKENIZE_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TINY_VOCAB_SIZE = 2048  # BPE tokens plus Qwen3's 26 added tokens
TINY_MAX_LENGTH = 1024
PAD_TOKEN = "<|endoftext|>"


def empty_backend() -> tokenizers.Tokenizer:
    """A byte-level BPE pipeline set up like Qwen3's tokenizer.json, with no merges yet."""
    backend = tokenizers.Tokenizer(models.BPE(dropout=None, unk_token=None, continuing_subword_prefix="",
                                              end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(QWEN_PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    backend.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return backend


def train_tokenizer(texts, vocab_size: int = TINY_VOCAB_SIZE) -> Tokenizer:
    """Train the BPE on ``texts``, then add Qwen3's added tokens after it, in Qwen3's order.

    The added tokens are cut out of the texts before training, so no merges are spent on pieces
    of ``<|im_start|>``. Every byte is in the base alphabet, so any text can be encoded.
    """
    added = re.compile("|".join(re.escape(token) for token in QWEN3_SPECIAL_TOKENS))
    backend = empty_backend()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(QWEN3_SPECIAL_TOKENS), min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator((piece for text in texts for piece in added.split(text) if piece), trainer)
    for token in QWEN3_SPECIAL_TOKENS:
        special = token not in QWEN3_NON_SPECIAL_TOKENS
        backend.add_tokens([tokenizers.AddedToken(token, special=special, normalized=False)])
    return Tokenizer(backend, tokenizer_config())


def tokenizer_config() -> dict:
    """tokenizer_config.json as Qwen3's, apart from the length limit of the tiny model."""
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": QWEN3_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": END_OF_TURN,
        "errors": "replace",
        "model_max_length": TINY_MAX_LENGTH,
        "pad_token": PAD_TOKEN,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


class _PromptRenderer:
    """Renders chats with the Qwen3 template before any tokenizer exists (to build its corpus)."""

    chat_template = QWEN3_CHAT_TEMPLATE

    def apply_chat_template(self, messages, add_generation_prompt=False, enable_thinking=True):
        return render_qwen3_chat(messages, add_generation_prompt, enable_thinking)


def tokenizer_corpus(problems, seed: int = 0) -> list[str]:
    """The texts the tokenizer learns from: the training chats, rendered without a tokenizer."""
    return [example.text for example in build_corpus(_PromptRenderer(), problems, seed)]
