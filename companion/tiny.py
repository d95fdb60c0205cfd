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

On top of these, ``drill`` chats list bare equations taken from the steps of training problems
(``47 + 38``) and the assistant writes each with its result. A model of this size learns the
wording of the stories quickly but the sums slowly: trained on the story chats alone it got
three result digits in five wrong. Drills give the arithmetic many more examples per token.

Prompts come from ``companion.prompts`` so that training and evaluation use the same text.
The tokenizer is a byte-level BPE trained on this corpus, with Qwen's pre-tokenizer (digits split
one by one), Qwen3's added tokens in Qwen3's order and the Qwen3 chat template.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import tokenizers
import torch
import torch.nn.functional as F
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm

from companion.checkpoint import load_model, save_model
from companion.config import ModelConfig
from companion.generate import generate
from companion.model import Qwen3Model
from companion.prompts import REVISE_INSTRUCTION, build_revise_prompt, revise_message, build_prompt
from companion.synthetic import OPERATIONS, Limits, SyntheticProblem, Step, read_split, recompute, split_problems
from companion.tokenizer import (
    QWEN3_CHAT_TEMPLATE,
    QWEN3_NON_SPECIAL_TOKENS,
    QWEN3_SPECIAL_TOKENS,
    Tokenizer,
    load_tokenizer,
    render_qwen3_chat,
)
from companion.verifier import grade

# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------
END_OF_TURN = "<|im_end|>"
# How often each kind of example is drawn for the corpus.
CORPUS_MIX = {"cot": 0.4, "thinking": 0.2, "direct": 0.2, "revise": 0.2}
SLIP_FRACTION = 0.5  # of revise examples, how many show an attempt with a slip
# The habits of data/tiny-reasoner-habits, the start model of chapter 6 (the plain data/tiny-reasoner
# has none). Of thinking-mode replies, how many close the think block at once and state an answer,
# as a base model that has seen few reasoning traces does: greedy thinking-mode decoding then skips
# the reasoning the model can do, and reinforcement learning has a habit to change.
EMPTY_THINK_FRACTION = 0.6
# Of revise examples, how many show a bare answer (no work, as the direct prompt gives): the review
# then works the problem out and says whether the answer was right (chapter 5 reviews such drafts).
BARE_ATTEMPT_FRACTION = 0.3
# The step from which the habits enter: the last 300 of 1600 steps. From the first step they cost
# greedy step-by-step accuracy (11% on test instead of 20% in one run); this late, the arithmetic
# stays about that of the plain run.
HABITS_FROM_STEP = 1300
# Chapter 4's model whose vote beats greedy decoding, data/tiny-reasoner-paths (with --steps 6400; at
# the default 1,600 steps the ways did not help). A vote gains only where the right answer is reached
# along more paths than a wrong one, so this recipe writes each solution line in more than one way: of
# the sums and products, how many have their operands swapped, and of all lines, how many are worked
# out in two stages (``worked_equation``). Each way uses other sums, so it makes other slips.
WORKED_LINE_FRACTION = 0.5
SWAPPED_OPERAND_FRACTION = 0.5
# A second attempt at the same: whole solutions written in one of three styles, so that the vote
# pools three ways of keeping track of the story. ``labelled`` is the plain one (each line names its
# clause); ``bare`` writes the equations alone; ``given`` first lists the numbers of the question,
# then writes the equations alone. At 2/3 the three styles are equally common.
SOLUTION_STYLES = ("labelled", "bare", "given")
OTHER_STYLES_FRACTION = 2 / 3
DRILLS_PER_PROBLEM = 0.5  # drill chats added to the corpus per training problem
DRILL_EQUATIONS = 16  # equations per drill chat
DRILL_INSTRUCTION = "Work out each line."
SLIP_OFFSETS = (-100, -10, -2, -1, 1, 2, 10, 100)


def final_answer(answer: int) -> str:
    return f"The answer is \\boxed{{{answer}}}."


def solution_text(problem: SyntheticProblem) -> str:
    """The visible chain of thought: one line per step, then the boxed answer."""
    return target(problem, "cot")


def worked_equation(step: Step) -> str | None:
    """The step's equation worked out in two stages, or None where splitting it does not help.

    ``+`` and ``-`` split off the tens of a two-digit number (``37 + 15 = 37 + 10 + 5 = 47 + 5 = 52``)
    or, for a one-digit number that carries or borrows, go through the next ten
    (``37 + 5 = 37 + 3 + 2 = 40 + 2 = 42``); ``×`` splits the larger factor into tens and ones
    (``4 × 17 = 4 × 10 + 4 × 7 = 40 + 28 = 68``); ``÷`` splits the quotient the same way
    (``96 ÷ 4 = 80 ÷ 4 + 16 ÷ 4 = 20 + 4 = 24``). Every stage is a true equation.
    """
    a, b, result, op = step.left.value, step.right.value, step.result, step.op
    if op in "+-":
        if b >= 10 and b % 10:
            tens, ones = b - b % 10, b % 10
            middle = a + tens if op == "+" else a - tens
            return f"{a} {op} {b} = {a} {op} {tens} {op} {ones} = {middle} {op} {ones} = {result}"
        last = a % 10
        if op == "+" and b < 10 and last and last + b > 10:
            head = 10 - last
            return f"{a} + {b} = {a} + {head} + {b - head} = {a + head} + {b - head} = {result}"
        if op == "-" and b < 10 and last and last < b and a > 10:
            return f"{a} - {b} = {a} - {last} - {b - last} = {a - last} - {b - last} = {result}"
        return None
    if op == "×":
        big, small = (a, b) if a >= b else (b, a)
        if big < 10 or big % 10 == 0:
            return None
        tens, ones = big - big % 10, big % 10
        if a >= b:
            return f"{a} × {b} = {tens} × {b} + {ones} × {b} = {tens * b} + {ones * b} = {result}"
        return f"{a} × {b} = {a} × {tens} + {a} × {ones} = {a * tens} + {a * ones} = {result}"
    if result < 10 or result % 10 == 0:  # ÷
        return None
    tens = result - result % 10
    return f"{a} ÷ {b} = {tens * b} ÷ {b} + {a - tens * b} ÷ {b} = {tens} + {result - tens} = {result}"


def swapped(step: Step) -> Step:
    """``b + a`` for ``a + b`` (and the same for ``×``): the same step, written the other way round."""
    if step.op not in "+×":
        raise ValueError(f"{step.op} does not commute")
    return dataclasses.replace(step, left=step.right, right=step.left)


@dataclass(frozen=True)
class LineWays:
    """How often a solution is written another way: a line with the operands of its sum or product
    swapped (``swapped``), a line worked out in two stages (``worked``), the whole solution in a
    style other than labelled lines (``other_styles``). All keep every line true."""

    worked: float = 0.0
    swapped: float = 0.0
    other_styles: float = 0.0  # share of solutions in a style other than ``labelled`` (split evenly)

    def __bool__(self) -> bool:
        return bool(self.worked or self.swapped or self.other_styles)

    def draw_style(self, rng: random.Random | None) -> str:
        """One of ``SOLUTION_STYLES``; ``rng`` is only drawn from when ``other_styles`` is set."""
        if self.other_styles and rng.random() < self.other_styles:
            return rng.choice(SOLUTION_STYLES[1:])
        return SOLUTION_STYLES[0]


def solution_lines(problem: SyntheticProblem, rng: random.Random | None = None, ways: LineWays = LineWays(),
                   style: str | None = None) -> list[str]:
    """The solution lines, each written one of the ``ways`` with their probabilities, drawn from ``rng``.

    The solution's ``style`` (one of ``SOLUTION_STYLES``) is drawn first unless given, then the way
    of each line."""
    style = style or ways.draw_style(rng)
    if style not in SOLUTION_STYLES:
        raise ValueError(f"unknown solution style {style!r}; expected one of {SOLUTION_STYLES}")
    lines = [given_numbers(problem)] if style == "given" else []
    for step in problem.steps:
        if ways.swapped and step.op in "+×" and rng.random() < ways.swapped:
            step = swapped(step)
        equation = worked_equation(step) if ways.worked and rng.random() < ways.worked else None
        equation = equation or step.equation()
        lines.append(f"{step.clause}: {equation}." if style == "labelled" else f"{equation}.")
    return lines


def given_numbers(problem: SyntheticProblem) -> str:
    """The numbers written in the question, in order: ``Given: 11, 6, 14.``"""
    return f"Given: {', '.join(re.findall(r'[0-9]+', problem.question))}."


def target(problem: SyntheticProblem, style: str, lines: list[str] | None = None) -> str:
    """What the assistant writes after the prompt of ``style`` (without the end-of-turn token).

    For ``thinking`` this includes the ``<think>`` block, exactly as the Qwen3 template renders an
    assistant turn with reasoning; for ``direct`` and ``cot`` the prompt already ends with the
    empty think block that ``enable_thinking=False`` adds. ``lines`` replaces the solution lines
    (``solution_lines`` written other ways).
    """
    if style == "direct":
        return f"\\boxed{{{problem.answer}}}"
    steps = "\n".join(lines or problem.solution_lines())
    if style == "cot":
        return f"{steps}\n{final_answer(problem.answer)}"
    if style == "thinking":
        return f"<think>\n{steps}\n</think>\n\n{final_answer(problem.answer)}"
    raise ValueError(f"unknown style {style!r}")


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


def bare_review_target(problem: SyntheticProblem, shown: int) -> str:
    """The review of an answer given without work: solve the problem, then compare."""
    verdict = ("The attempt is correct." if shown == problem.answer
               else f"The attempt says {shown}, which is wrong.")
    return "\n".join(problem.solution_lines() + [f"{verdict} {final_answer(problem.answer)}"])


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


def make_example(tokenizer, problem: SyntheticProblem, kind: str, rng: random.Random,
                 ways: LineWays = LineWays(), ways_rng: random.Random | None = None) -> Example:
    """Render ``problem`` as a chat of ``kind`` (a prompt style, or ``revise``).

    The solution lines of ``cot`` and ``thinking`` replies are written the ``ways`` given (drawn
    from ``ways_rng``); reviews keep the plain lines."""
    if kind == "revise":
        attempt = None
        if rng.random() < SLIP_FRACTION:
            attempt = slipped_attempt(problem, rng)
        attempt = attempt or correct_attempt(problem)
        prompt = build_revise_prompt(tokenizer, problem.question, attempt.text(problem))
        reply = review_target(problem, attempt)
    else:
        prompt = build_prompt(tokenizer, problem.question, kind)
        lines = solution_lines(problem, ways_rng, ways) if ways and kind in ("cot", "thinking") else None
        reply = target(problem, kind, lines)
    return Example(kind, prompt, reply + END_OF_TURN, len(problem.steps))


def with_habits(tokenizer, problem: SyntheticProblem, example: Example, rng: random.Random,
                empty_think: float, bare_attempts: float) -> Example:
    """``example``, or in its place (with the given probabilities) a thinking reply that leaves the
    think block empty, or a review of a bare answer given without work.

    The worked solutions that empty think blocks take out of the corpus are put back: a direct
    chat becomes a step-by-step chat of the same problem with the same probability (the mix has as
    many direct chats as thinking ones), so the habit does not cost the model arithmetic practice."""
    if example.kind == "thinking" and empty_think and rng.random() < empty_think:
        reply = f"<think>\n\n</think>\n\n{final_answer(problem.answer)}"
        return Example("thinking", example.prompt, reply + END_OF_TURN, example.steps)
    if example.kind == "direct" and empty_think and rng.random() < empty_think:
        return make_example(tokenizer, problem, "cot", rng)
    if example.kind == "revise" and bare_attempts and rng.random() < bare_attempts:
        shown = problem.answer
        if rng.random() < SLIP_FRACTION:
            slipped = slipped_attempt(problem, rng)
            shown = slipped.values[-1][2] if slipped else problem.answer + rng.choice([o for o in SLIP_OFFSETS if o > 0])
        prompt = build_revise_prompt(tokenizer, problem.question, f"\\boxed{{{shown}}}")
        return Example("revise", prompt, bare_review_target(problem, shown) + END_OF_TURN, example.steps)
    return example


def drill_example(tokenizer, problems, rng: random.Random, equations: int = DRILL_EQUATIONS,
                  ways: LineWays = LineWays(), ways_rng: random.Random | None = None) -> Example:
    """A chat of bare equations drawn from the steps of ``problems``, answered one per line.

    Drawing the equations from real solutions gives them the operand sizes and the mix of
    operations that the stories need.
    """
    steps = [rng.choice(rng.choice(problems).steps) for _ in range(equations)]
    if ways.swapped:  # sums and products both ways round, as the solutions write them
        steps = [swapped(s) if s.op in "+×" and ways_rng.random() < ways.swapped else s for s in steps]
    question = "\n".join(f"{s.left.value} {s.op} {s.right.value}" for s in steps)
    messages = [{"role": "user", "content": f"{question}\n{DRILL_INSTRUCTION}"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=False)
    reply = "\n".join(f"{s.equation()}." for s in steps)
    return Example("drill", prompt, reply + END_OF_TURN, 1)


def build_corpus(tokenizer, problems, seed: int = 0, kinds_per_problem: int = 2,
                 mix: dict[str, float] | None = None, drills_per_problem: float = DRILLS_PER_PROBLEM,
                 empty_think: float = 0.0, bare_attempts: float = 0.0, ways: LineWays = LineWays()) -> list[Example]:
    """Every problem rendered as ``kinds_per_problem`` different kinds drawn from ``mix``, plus
    ``drills_per_problem * len(problems)`` drill chats, shuffled.

    The habits (``empty_think``, ``bare_attempts``; see ``with_habits``) are drawn from a random
    stream of their own, so the corpus with them holds the same chats in the same order as the
    one without, apart from the replaced replies: a run can switch from one to the other mid-way.
    How each solution line is written (``ways``) is drawn from a third stream.
    """
    mix = mix or CORPUS_MIX
    problems = list(problems)
    rng = random.Random(f"corpus-{seed}")
    habits = random.Random(f"habits-{seed}")
    ways_rng = random.Random(f"ways-{seed}")
    examples = []
    for problem in problems:
        recompute(problem.steps)
        for kind in _draw_kinds(rng, mix, kinds_per_problem):
            example = make_example(tokenizer, problem, kind, rng, ways, ways_rng)
            examples.append(with_habits(tokenizer, problem, example, habits, empty_think, bare_attempts))
    examples += [drill_example(tokenizer, problems, rng, ways=ways, ways_rng=ways_rng)
                 for _ in range(round(drills_per_problem * len(problems)))]
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


def tokenizer_corpus(problems, seed: int = 0, drills_per_problem: float = DRILLS_PER_PROBLEM,
                     ways: LineWays = LineWays()) -> list[str]:
    """The texts the tokenizer learns from: the training chats, rendered without a tokenizer."""
    return [example.text for example in build_corpus(_PromptRenderer(), problems, seed,
                                                     drills_per_problem=drills_per_problem, ways=ways)]


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
# The shipped model's amount of work. A fixed step count (not a time budget) makes the same command
# give the same model on any machine, however busy. On a 2-core CPU (two torch threads) a step takes
# about 1 s, so 1600 steps take 27.3 minutes run alone (the card); with other jobs on the cores
# they took 32, and made the byte-identical model (training is deterministic on CPU).
DEFAULT_STEPS = 1600


@dataclass(frozen=True)
class Recipe:
    """Model size and optimization settings of the tiny model (the defaults made the shipped one)."""

    hidden_size: int = 256
    num_layers: int = 6
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 64
    intermediate_size: int = 768
    rope_theta: float = 10_000.0
    batch_size: int = 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    kinds_per_problem: int = 2
    drills_per_problem: float = DRILLS_PER_PROBLEM
    empty_think: float = 0.0
    bare_attempts: float = 0.0
    habits_from_step: int = 0  # the step from which the habits above apply (0: the whole run)
    worked_lines: float = 0.0  # share of solution lines worked out in two stages (LineWays)
    swapped_operands: float = 0.0  # share of sums and products written with their operands swapped
    other_styles: float = 0.0  # share of solutions written bare or after the given numbers (LineWays)
    train_problems: int | None = None  # None: the whole train split
    val_examples: int = 256
    eval_every: int = 100
    checkpoint_minutes: float = 3.0
    bf16: bool = True

    @property
    def line_ways(self) -> "LineWays":
        return LineWays(worked=self.worked_lines, swapped=self.swapped_operands, other_styles=self.other_styles)


# data/tiny-reasoner-habits: the shipped recipe with the habits in its last 300 steps.
HABITS = dict(empty_think=EMPTY_THINK_FRACTION, bare_attempts=BARE_ATTEMPT_FRACTION, habits_from_step=HABITS_FROM_STEP)


def model_config(recipe: Recipe, tokenizer: Tokenizer) -> ModelConfig:
    """A Qwen3 config of the recipe's size, whose vocabulary is exactly the tokenizer's."""
    return ModelConfig(
        vocab_size=len(tokenizer), hidden_size=recipe.hidden_size, intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers, num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_kv_heads, head_dim=recipe.head_dim, rope_theta=recipe.rope_theta,
        max_position_embeddings=TINY_MAX_LENGTH, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, torch_dtype="float32",
    )


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example; the loss covers ids from ``reply_start`` on."""

    ids: list[int]
    reply_start: int


def encode_examples(tokenizer: Tokenizer, examples: list[Example]) -> list[Encoded]:
    """Prompt and reply are encoded apart, as at inference, where the model continues the prompt."""
    prompts = tokenizer.batch_encode([e.prompt for e in examples])
    replies = tokenizer.batch_encode([e.reply for e in examples])
    encoded = [Encoded(p + r, len(p)) for p, r in zip(prompts, replies)]
    too_long = [len(e.ids) for e in encoded if len(e.ids) > TINY_MAX_LENGTH]
    if too_long:
        raise ValueError(f"{len(too_long)} examples exceed {TINY_MAX_LENGTH} tokens (longest {max(too_long)})")
    return encoded


def batch_order(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: shuffled, then grouped by similar length to waste little padding.

    Examples are shuffled, cut into pools of 50 batches, sorted by length inside each pool, split
    into batches, and the batches are shuffled again. The order depends only on (seed, epoch).
    """
    rng = random.Random(f"batches-{seed}-{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = 50 * batch_size
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(encoded: list[Encoded], indices: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded inputs and next-token labels; prompt tokens and padding are labelled -100.

    With right padding no attention mask is needed: causal attention never looks ahead, so a
    real token never sees a pad.
    """
    rows = [encoded[i] for i in indices]
    width = max(len(row.ids) for row in rows) - 1
    inputs = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for r, row in enumerate(rows):
        ids = torch.tensor(row.ids)
        inputs[r, :len(ids) - 1] = ids[:-1]
        labels[r, row.reply_start - 1:len(ids) - 1] = ids[row.reply_start:]
    return inputs, labels


def batch_loss(model: Qwen3Model, inputs: torch.Tensor, labels: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Mean cross-entropy over the reply tokens of the batch."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(inputs)
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)


def learning_rate(step: int, total_steps: int, recipe: Recipe) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` of the peak at ``total_steps``."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = min(1.0, (step - recipe.warmup_steps) / max(1, total_steps - recipe.warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return recipe.lr * (recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * cosine)


def make_optimizer(model: Qwen3Model, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not on norms)."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": matrices, "weight_decay": recipe.weight_decay}, {"params": vectors, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.95), eps=1e-8)


@torch.no_grad()
def validation_loss(model: Qwen3Model, encoded: list[Encoded], pad_id: int, recipe: Recipe) -> float:
    """Mean reply-token loss on the held-out examples (token-weighted over batches)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(encoded), recipe.batch_size):
        inputs, labels = collate(encoded, list(range(start, min(start + recipe.batch_size, len(encoded)))), pad_id)
        tokens = int((labels != -100).sum())
        total += float(batch_loss(model, inputs, labels, recipe.bf16)) * tokens
        count += tokens
    model.train()
    return total / max(1, count)


@dataclass
class Progress:
    """Where training stands; saved with the weights so that a resumed run continues exactly."""

    step: int = 0
    total_steps: int | None = None  # fixed after calibration when not given
    epoch: int = 0
    position: int = 0  # next batch of the epoch
    elapsed: float = 0.0  # seconds of training so far, over all sessions


class RunFolder:
    """The files of a training run under ``--out``."""

    def __init__(self, root):
        self.root = Path(root)
        self.tokenizer = self.root / "tokenizer"
        self.state = self.root / "state.pt"
        self.log = self.root / "log.jsonl"
        self.plot = self.root / "loss.png"
        self.model = self.root / "model"


def prepare_tokenizer(run: RunFolder, problems, seed: int, resume: bool,
                      drills_per_problem: float = DRILLS_PER_PROBLEM, ways: LineWays = LineWays()) -> Tokenizer:
    """Train the tokenizer once per run; a resumed run reads the one it saved."""
    if resume and run.tokenizer.is_dir():
        return load_tokenizer(run.tokenizer)
    tokenizer = train_tokenizer(tokenizer_corpus(problems, seed, drills_per_problem, ways))
    tokenizer.save(run.tokenizer)
    return tokenizer


def has_habits(recipe: Recipe) -> bool:
    return bool(recipe.empty_think or recipe.bare_attempts)


def model_name(recipe: Recipe) -> str:
    """The name of the model a recipe makes, as its card gives it (the shipped ones are in ``data/``)."""
    if has_habits(recipe):
        return "tiny-reasoner-habits"
    return "tiny-reasoner-paths" if recipe.line_ways else "tiny-reasoner"


def training_chats(tokenizer: Tokenizer, recipe: Recipe, seed: int, train_problems, habits: bool) -> list[Encoded]:
    """The encoded training corpus, with the recipe's habits or without them."""
    return encode_examples(tokenizer, build_corpus(
        tokenizer, train_problems, seed, recipe.kinds_per_problem, drills_per_problem=recipe.drills_per_problem,
        empty_think=recipe.empty_think if habits else 0.0, bare_attempts=recipe.bare_attempts if habits else 0.0,
        ways=recipe.line_ways))


def prepare_data(tokenizer: Tokenizer, recipe: Recipe, seed: int, train_problems, val_problems):
    """Encoded training chats and a fixed set of held-out chats for the validation loss.

    The training chats carry the habits when they apply from the first step; with a later
    ``habits_from_step`` they are the plain chats, and ``late_data`` gives the ones with habits.
    """
    train = training_chats(tokenizer, recipe, seed, train_problems, habits=recipe.habits_from_step == 0)
    val = build_corpus(tokenizer, val_problems[:recipe.val_examples], seed, kinds_per_problem=1, drills_per_problem=0,
                       ways=recipe.line_ways)
    return train, encode_examples(tokenizer, val)


def late_data(tokenizer: Tokenizer, recipe: Recipe, seed: int, train_problems) -> list[Encoded] | None:
    """The training chats with habits, for the steps from ``habits_from_step`` on (None when the
    run never switches). Chat i is chat i of ``prepare_data``'s with its reply maybe replaced, so
    the batch order stays the same across the switch."""
    if not has_habits(recipe) or recipe.habits_from_step == 0:
        return None
    return training_chats(tokenizer, recipe, seed, train_problems, habits=True)


def save_state(path: Path, model: Qwen3Model, optimizer, progress: Progress, recipe: Recipe, seed: int) -> None:
    """Weights, optimizer moments, progress and RNG state, written atomically."""
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "progress": asdict(progress),
        "recipe": asdict(recipe), "seed": seed, "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
    }
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path, model: Qwen3Model, optimizer, recipe: Recipe, seed: int) -> Progress:
    state = torch.load(path, weights_only=False)
    # A field added to Recipe since the state was written is at its default in that run (it had no such knob).
    saved = {**asdict(Recipe()), **state["recipe"]}
    if saved != asdict(recipe) or state["seed"] != seed:
        raise ValueError(f"{path} was written by another recipe or seed; resume with the same settings")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    return Progress(**state["progress"])


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint a run resumes from."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def plot_log(log_path: Path, png_path: Path) -> None:
    """Training loss (smoothed) and validation loss against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    figure, axis = plt.subplots(figsize=(7, 4))
    if train:
        steps, losses = zip(*train)
        axis.plot(steps, losses, alpha=0.3, color="C0")
        axis.plot(steps, _smooth(losses), color="C0", label="train (reply tokens)")
    if val:
        axis.plot(*zip(*val), "o-", color="C1", label="validation")
    axis.set(xlabel="step", ylabel="cross-entropy", yscale="log", title="tiny-reasoner training")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)


def _smooth(values, weight: float = 0.9) -> list[float]:
    smoothed, last = [], values[0]
    for value in values:
        last = weight * last + (1 - weight) * value
        smoothed.append(last)
    return smoothed


def train(out, minutes: float | None = None, seed: int = 0, resume: bool = False, steps: int | None = None,
          recipe: Recipe = Recipe(), progress_bar: bool = True, pause_after: int | None = None) -> Path:
    """Train the tiny model from scratch; returns the HF-format model folder ``<out>/model``.

    The amount of work is fixed: ``steps`` optimizer steps (``DEFAULT_STEPS`` when neither
    ``steps`` nor ``minutes`` is given), so the same call gives the same model on any machine,
    however busy. ``minutes`` is an optional cap on the training time over all sessions: with
    ``steps`` it stops the run early (the schedule stays that of ``steps``); without ``steps``,
    the number of steps is set from the speed of the first steps so that the schedule ends within
    the cap (the step count is then stored, so a resumed run keeps the same schedule).
    ``pause_after`` ends this session after that many steps, as an interruption would; ``resume``
    continues.
    """
    if steps is None and minutes is None:
        steps = DEFAULT_STEPS
    run = RunFolder(out)
    if run.state.exists() and not resume:
        raise FileExistsError(f"{run.state} exists: pass --resume to continue, or choose another --out")
    run.root.mkdir(parents=True, exist_ok=True)
    train_problems = split_problems("train")[:recipe.train_problems]
    tokenizer = prepare_tokenizer(run, train_problems, seed, resume, recipe.drills_per_problem, recipe.line_ways)
    encoded, val_encoded = prepare_data(tokenizer, recipe, seed, train_problems, split_problems("validation"))
    late = late_data(tokenizer, recipe, seed, train_problems)
    torch.manual_seed(seed)
    model = Qwen3Model(model_config(recipe, tokenizer)).init_weights(seed=seed)
    optimizer = make_optimizer(model, recipe)
    progress = Progress(total_steps=steps)
    if resume and run.state.exists():
        progress = load_state(run.state, model, optimizer, recipe, seed)
        truncate_log(run.log, progress.step)
    _training_loop(run, model, optimizer, tokenizer, encoded, val_encoded, progress, recipe, seed, minutes,
                   progress_bar, pause_after, late)
    plot_log(run.log, run.plot)
    inputs, replies = tokens_trained(encoded, recipe, seed, progress.step, late)
    facts = CardFacts(progress.step, progress.elapsed, progress.epoch + 1, seed, len(encoded),
                      sum(len(e.ids) for e in encoded), model.num_parameters(), inputs, replies,
                      torch.get_num_threads())
    save_model(model, tokenizer, run.model, extra_files={"README.md": model_card(recipe, facts)})
    shutil.copy(run.plot, run.model / "loss.png")
    return run.model


def _training_loop(run, model, optimizer, tokenizer, encoded, val_encoded, progress: Progress, recipe: Recipe,
                   seed: int, minutes: float, progress_bar: bool, pause_after: int | None,
                   late: list[Encoded] | None = None) -> None:
    """Steps until the schedule ends, the time budget is spent or the session pauses.

    A checkpoint is written every ``checkpoint_minutes`` and at the end; after an interruption,
    ``--resume`` continues from the last one (later log lines are dropped).
    """
    budget = math.inf if minutes is None else minutes * 60
    session_start = last_save = time.perf_counter()
    elapsed_before, first_step = progress.elapsed, progress.step
    data = _BatchStream(encoded, recipe.batch_size, seed, tokenizer.pad_token_id, late, recipe.habits_from_step)
    bar = tqdm(total=progress.total_steps, initial=progress.step, desc="train-tiny", unit="step",
               disable=not progress_bar)
    model.train()
    with run.log.open("a") as log:
        while progress.total_steps is None or progress.step < progress.total_steps:
            if progress.elapsed >= budget:
                bar.write(f"time budget of {minutes} minutes spent at step {progress.step}")
                break
            if pause_after is not None and progress.step - first_step >= pause_after:
                break
            inputs, labels = data.next(progress)
            lr = learning_rate(progress.step, progress.total_steps or 10**9, recipe)
            loss = _optimizer_step(model, optimizer, inputs, labels, lr, recipe)
            progress.step += 1
            progress.elapsed = elapsed_before + time.perf_counter() - session_start
            if progress.total_steps is None and progress.step == CALIBRATION_STEPS:
                progress.total_steps = bar.total = _steps_in_budget(progress, budget)
            record = {"step": progress.step, "loss": round(loss, 5), "lr": lr, "epoch": progress.epoch,
                      "tokens": int((labels != -100).sum()), "elapsed": round(progress.elapsed, 1)}
            if progress.step % recipe.eval_every == 0 or progress.step == progress.total_steps:
                record["val_loss"] = round(validation_loss(model, val_encoded, data.pad_id, recipe), 5)
            log.write(json.dumps(record) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}")
            if time.perf_counter() - last_save > recipe.checkpoint_minutes * 60:
                log.flush()
                save_state(run.state, model, optimizer, progress, recipe, seed)
                plot_log(run.log, run.plot)
                last_save = time.perf_counter()
    bar.close()
    save_state(run.state, model, optimizer, progress, recipe, seed)


class _BatchStream:
    """Batches in the order of ``batch_order``, from the epoch and position stored in ``Progress``.

    From step ``late_from`` on, a batch takes the same chats from ``late`` (the corpus with habits)."""

    def __init__(self, encoded: list[Encoded], batch_size: int, seed: int, pad_id: int,
                 late: list[Encoded] | None = None, late_from: int = 0):
        self.encoded, self.batch_size, self.seed, self.pad_id = encoded, batch_size, seed, pad_id
        self.late, self.late_from = late, late_from
        self.lengths = [len(e.ids) for e in encoded]
        self.epoch, self.batches = None, []

    def source(self, step: int) -> list[Encoded]:
        return self.late if self.late is not None and step >= self.late_from else self.encoded

    def next_batch(self, progress: Progress) -> list[int]:
        if progress.position >= len(self._epoch(progress.epoch)):
            progress.epoch, progress.position = progress.epoch + 1, 0
        batch = self._epoch(progress.epoch)[progress.position]
        progress.position += 1
        return batch

    def next(self, progress: Progress) -> tuple[torch.Tensor, torch.Tensor]:
        source = self.source(progress.step)
        return collate(source, self.next_batch(progress), self.pad_id)

    def _epoch(self, epoch: int) -> list[list[int]]:
        if epoch != self.epoch:
            self.epoch, self.batches = epoch, batch_order(self.lengths, self.batch_size, self.seed, epoch)
        return self.batches


CALIBRATION_STEPS = 20  # with --minutes and no --steps: steps timed to size the schedule
TIME_MARGIN = 0.92  # of the budget given to training steps; the rest covers evaluation and saving


def _steps_in_budget(progress: Progress, budget: float) -> int:
    seconds_per_step = progress.elapsed / progress.step
    return max(progress.step, int(budget * TIME_MARGIN / seconds_per_step))


def _optimizer_step(model, optimizer, inputs, labels, lr: float, recipe: Recipe) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = batch_loss(model, inputs, labels, recipe.bf16)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


# ---------------------------------------------------------------------------------------------
# Measuring the model and describing it
# ---------------------------------------------------------------------------------------------
MAX_NEW_TOKENS = {"direct": 24, "cot": 256, "thinking": 256, "revise": 320}
# The test of the shipped model compares its greedy cot accuracy on the first problems of the
# test split with the number the report stores for those same problems.
CHECK_PROBLEMS = 200


def measure(model: Qwen3Model, tokenizer: Tokenizer, records: list[dict], samples: int = 8,
            temperature: float = 1.0, seed: int = 0, batch_size: int = 256, revise: bool = True,
            progress: bool = False) -> dict:
    """The numbers the chapters rely on: greedy accuracy per prompt style, accuracy by number of
    steps (cot), pass@``samples`` at ``temperature`` (cot), and one round of self-refinement: the
    model reviews its own greedy cot answer with the revise prompt."""
    golds = [r["answer"] for r in records]
    report = {"problems": len(records), "greedy": {}, "by_steps": {}}
    answers = {}
    for style in ("cot", "direct", "thinking"):
        prompts = [build_prompt(tokenizer, r["question"], style) for r in records]
        outputs = generate(model, tokenizer, prompts, MAX_NEW_TOKENS[style], batch_size=batch_size, progress=progress)
        answers[style] = [o.text for o in outputs]
        report["greedy"][style] = _accuracy([grade(o.text, gold) for o, gold in zip(outputs, golds)])
    correct_cot = [grade(text, gold) for text, gold in zip(answers["cot"], golds)]
    report["greedy_first"] = {"problems": min(CHECK_PROBLEMS, len(records)),
                              "cot": _accuracy(correct_cot[:CHECK_PROBLEMS])}
    for steps in sorted({r["steps"] for r in records}):
        report["by_steps"][str(steps)] = _accuracy([c for c, r in zip(correct_cot, records) if r["steps"] == steps])
    prompts = [build_prompt(tokenizer, r["question"], "cot") for r in records]
    outputs = generate(model, tokenizer, prompts, MAX_NEW_TOKENS["cot"], temperature=temperature, seed=seed,
                       num_samples=samples, batch_size=batch_size, progress=progress)
    solved = [any(grade(outputs[i * samples + j].text, gold) for j in range(samples)) for i, gold in enumerate(golds)]
    report[f"pass@{samples}"] = _accuracy(solved)
    report["temperature"] = temperature
    if revise:
        report["revise"] = measure_revision(model, tokenizer, records, answers["cot"], correct_cot, batch_size,
                                            progress)
    return report


def measure_revision(model: Qwen3Model, tokenizer: Tokenizer, records: list[dict], attempts: list[str],
                     correct: list[bool], batch_size: int = 256, progress: bool = False) -> dict:
    """One greedy round of self-refinement: each attempt is shown back with the revise prompt.

    Returns the accuracy after the review, and how many wrong attempts it fixed and how many right
    ones it broke (as fractions of all problems).
    """
    prompts = [build_revise_prompt(tokenizer, r["question"], attempt) for r, attempt in zip(records, attempts)]
    outputs = generate(model, tokenizer, prompts, MAX_NEW_TOKENS["revise"], batch_size=batch_size, progress=progress)
    after = [grade(o.text, r["answer"]) for o, r in zip(outputs, records)]
    return {"before": _accuracy(correct), "after": _accuracy(after),
            "fixed": _accuracy([a and not b for a, b in zip(after, correct)]),
            "broken": _accuracy([b and not a for a, b in zip(after, correct)])}


def _accuracy(flags: list[bool]) -> float:
    return sum(flags) / max(1, len(flags))


def reproduce_command(seed: int, steps: int, recipe: Recipe, out: str = "runs/tiny") -> str:
    """The ``train-tiny`` command that makes this model: only the settings that differ from the defaults."""
    parts = ["python -m companion train-tiny", f"--out {out}"]
    if steps != DEFAULT_STEPS:
        parts.append(f"--steps {steps}")
    if seed != 0:
        parts.append(f"--seed {seed}")
    default = Recipe()
    for flag, field, _, _ in RECIPE_FLAGS:
        if getattr(recipe, field) != getattr(default, field):
            parts.append(f"{flag} {getattr(recipe, field)}")
    return " ".join(parts)


def tokens_trained(encoded: list[Encoded], recipe: Recipe, seed: int, steps: int,
                   late: list[Encoded] | None = None) -> tuple[int, int]:
    """(input tokens, reply tokens) of the first ``steps`` batches, replaying the batch order."""
    data = _BatchStream(encoded, recipe.batch_size, seed, 0, late, recipe.habits_from_step)
    progress, inputs, replies = Progress(), 0, 0
    for step in range(steps):
        source, batch = data.source(step), data.next_batch(progress)
        inputs += sum(len(source[i].ids) for i in batch)
        replies += sum(len(source[i].ids) - source[i].reply_start for i in batch)
    return inputs, replies


@dataclass(frozen=True)
class CardFacts:
    """What the card says about a run besides the recipe: measured, counted or derived."""

    steps: int
    elapsed: float  # seconds in the training loop
    epochs_begun: int
    seed: int
    examples: int  # chats per epoch
    tokens: int  # tokens per epoch
    parameters: int
    tokens_trained: int = 0  # input tokens over the whole run
    reply_tokens_trained: int = 0
    threads: int | None = None
    cpu_count: int | None = os.cpu_count()


def model_card(recipe: Recipe, facts: CardFacts, report: dict | None = None) -> str:
    """README.md of the model folder: what it is, how it was made, how well it does."""
    speed = ""
    if facts.tokens_trained and facts.elapsed:
        speed = (f" ({facts.elapsed / facts.steps:.2f} s per step, {facts.tokens_trained / facts.elapsed:,.0f} "
                 f"tokens/s; {facts.tokens_trained:,} tokens seen, {facts.reply_tokens_trained:,} of them under the loss)")
    threads = f", {facts.threads} torch thread(s)" if facts.threads else ""
    lines = [
        "---", "license: apache-2.0", "library_name: transformers", "pipeline_tag: text-generation", "---", "",
        f"# {model_name(recipe)}", "",
        "A small Qwen3-architecture model trained from scratch on CPU by this project, on synthetic",
        "multi-step arithmetic word problems (`data/arith`, made by `companion/synthetic.py`). It is",
        *(["the tiny model with habits planted late in training (see Training): in thinking mode it mostly",
           "closes the think block at once and guesses, although it writes good steps when asked to. It is",
           "the start model of chapter 6, whose RL run trains that habit away."] if has_habits(recipe) else
          ["the tiny model with solutions written in more than one way (see Training). Chapter 4 trained it",
           "to give a vote more than one path to each answer."]
          if recipe.line_ways else
          ["the default model of the notebooks: weak enough that chain of thought, sampling and voting,",
           "self-refinement and RL can each measurably improve it."]), "",
        "## Model", "",
        f"- {facts.parameters:,} parameters (embeddings tied with the output layer), stored in fp32.",
        f"- Qwen3 architecture: {recipe.num_layers} layers, hidden size {recipe.hidden_size}, "
        f"{recipe.num_heads} query heads and {recipe.num_kv_heads} key/value heads of size {recipe.head_dim}, "
        f"MLP size {recipe.intermediate_size}, RoPE theta {recipe.rope_theta:g}, context {TINY_MAX_LENGTH} tokens.",
        "- Tokenizer: byte-level BPE trained on the corpus, Qwen's pre-tokenizer (digits one by one),",
        "  Qwen3's 26 added tokens in Qwen3's order and the Qwen3 chat template (thinking on or off).", "",
        "## Training", "",
        f"- Reproduce: `{reproduce_command(facts.seed, facts.steps, recipe)}` (see `companion/tiny.py`).",
        f"- {facts.steps} optimizer steps of {recipe.batch_size} chats, seed {facts.seed}; {facts.examples:,} chats "
        f"({facts.tokens:,} tokens) per epoch, {facts.epochs_begun} epoch(s) begun.",
        f"- Measured training time: {facts.elapsed / 60:.1f} minutes on a {facts.cpu_count}-core CPU{threads}{speed}.",
        f"- AdamW (betas 0.9/0.95, weight decay {recipe.weight_decay}), peak learning rate {recipe.lr:g}, "
        f"{recipe.warmup_steps} warmup steps, cosine decay to {recipe.min_lr_ratio:g} of the peak; "
        f"{'bf16 autocast' if recipe.bf16 else 'fp32'}; loss on assistant tokens only.",
        f"- Chats per problem: {recipe.kinds_per_problem}, of the kinds "
        + ", ".join(f"{kind} {share:.0%}" for kind, share in CORPUS_MIX.items())
        + f"; plus {recipe.drills_per_problem:g} drill chat per problem ({DRILL_EQUATIONS} bare equations each, "
          "taken from the steps of training problems)."
        + (f" {recipe.empty_think:.0%} of the thinking replies leave the think block empty and state the answer at once, "
           f"and {recipe.empty_think:.0%} of the direct chats become step-by-step chats, so the corpus keeps its "
           "worked solutions." if recipe.empty_think else "")
        + (f" {recipe.bare_attempts:.0%} of the reviews are of a bare answer: the review works the problem out, "
           "then says whether the answer was right." if recipe.bare_attempts else "")
        + (f" In step-by-step and thinking replies, {recipe.swapped_operands:.0%} of the sums and products have their "
           "operands swapped." if recipe.swapped_operands else "")
        + (f" {recipe.worked_lines:.0%} of the solution lines of step-by-step and thinking replies are worked out in "
           "two stages where a split helps (tens and ones, or through the next ten), the others at once."
           if recipe.worked_lines else "")
        + (f" {recipe.other_styles:.0%} of the step-by-step and thinking solutions are written without the clause "
           "labels, half of those after a line that lists the question's numbers (`Given: 11, 6, 14.`)."
           if recipe.other_styles else "")
        + (f" These habits enter the corpus at step {recipe.habits_from_step}; the steps before it train on the "
           "same chats without them." if has_habits(recipe) and recipe.habits_from_step else ""),
        "", "![loss](loss.png)", "",
    ]
    if report:
        lines += _report_lines(report)
    lines += [
        "## Prompt formats", "",
        "Prompts come from `companion.prompts.build_prompt` (styles `direct`, `cot`, `thinking`); a",
        "review of an earlier attempt from `companion.prompts.build_revise_prompt`, ending with:", "",
        f"> {REVISE_INSTRUCTION}", "",
        "## Limits", "",
        "It only knows the arithmetic stories it was trained on: stated numbers up to "
        f"{Limits.max_operand}, factors and divisors up to {Limits.max_factor}, results up to {Limits.max_value}, "
        "four operations,",
        "one to six steps. It is a teaching model, not a general one.", "",
    ]
    return "\n".join(lines) + "\n"


def _report_lines(report: dict, model: str = "data/tiny-reasoner") -> list[str]:
    samples = next(key for key in report if key.startswith("pass@"))
    lines = [
        f"## Accuracy on the `{report.get('split', 'test')}` split ({report['problems']} problems)", "",
        f"Measured by `python -m companion tiny-report --model {model} "
        f"--limit {report['problems']}` (greedy unless said).", "",
        "| measure | accuracy |", "|---|---|",
    ]
    lines += [f"| greedy, `{style}` prompt | {value:.1%} |" for style, value in report["greedy"].items()]
    first = report.get("greedy_first")
    if first:
        lines.append(f"| greedy, `cot` prompt, first {first['problems']} problems | {first['cot']:.1%} |")
    lines.append(f"| {samples} (cot, temperature {report['temperature']:g}) | {report[samples]:.1%} |")
    revise = report.get("revise")
    if revise:
        lines.append(f"| after one self-review of the greedy cot answer (revise prompt) | {revise['after']:.1%} "
                     f"(fixed {revise['fixed']:.1%}, broke {revise['broken']:.1%}) |")
    lines += [f"| greedy cot, {steps}-step problems | {value:.1%} |" for steps, value in report["by_steps"].items()]
    return lines + [""]


def report_on_model(model_dir, split: str = "test", limit: int | None = None, samples: int = 8,
                    progress: bool = False) -> dict:
    """Measure a saved model on a split, then write ``report.json`` and the card's table."""
    model_dir = Path(model_dir)
    model, tokenizer = load_model(model_dir, device="cpu", dtype="float32")
    records = read_split(split)[:limit]
    started = time.perf_counter()
    report = dict(measure(model, tokenizer, records, samples=samples, progress=progress), split=split)
    report["seconds"] = round(time.perf_counter() - started, 1)
    (model_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    card = (model_dir / "README.md").read_text()
    shown = f"data/{model_dir.name}" if model_dir.resolve().parent.name == "data" else str(model_dir)
    table = "\n".join(_report_lines(report, shown))
    marker = "## Prompt formats"
    card = re.sub(r"## Accuracy on the .*?(?=## Prompt formats)", "", card, flags=re.S)
    (model_dir / "README.md").write_text(card.replace(marker, table + "\n" + marker, 1))
    return report


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
# The Recipe fields that train-tiny sets from the command line: (flag, field, type, help). The same
# table makes the parser, the Recipe of a run, and the reproduce command on the model card.
RECIPE_FLAGS = (
    ("--train-problems", "train_problems", int, "use only the first N train problems"),
    ("--hidden-size", "hidden_size", int, None),
    ("--layers", "num_layers", int, None),
    ("--intermediate-size", "intermediate_size", int, None),
    ("--drills-per-problem", "drills_per_problem", float,
     "drill chats (bare equations) added to the corpus per training problem"),
    ("--empty-think", "empty_think", float,
     f"fraction of thinking-mode replies whose think block is left empty (default {Recipe.empty_think}; "
     f"data/tiny-reasoner-habits: {EMPTY_THINK_FRACTION})"),
    ("--bare-attempts", "bare_attempts", float,
     f"fraction of review examples that review a bare answer given without work (default "
     f"{Recipe.bare_attempts}; data/tiny-reasoner-habits: {BARE_ATTEMPT_FRACTION})"),
    ("--habits-from-step", "habits_from_step", int,
     f"the step from which --empty-think and --bare-attempts apply (default {Recipe.habits_from_step}: "
     f"all steps; data/tiny-reasoner-habits: {HABITS_FROM_STEP})"),
    ("--worked-lines", "worked_lines", float,
     f"fraction of solution lines worked out in two stages, e.g. 37 + 15 = 37 + 10 + 5 = 47 + 5 = 52 "
     f"(default {Recipe.worked_lines}; chapter 4's tiny-reasoner-paths: {WORKED_LINE_FRACTION})"),
    ("--swapped-operands", "swapped_operands", float,
     f"fraction of sums and products written with their operands swapped, e.g. 15 + 37 for 37 + 15 "
     f"(default {Recipe.swapped_operands}; chapter 4's tiny-reasoner-paths: {SWAPPED_OPERAND_FRACTION})"),
    ("--other-styles", "other_styles", float,
     f"fraction of solutions written in a style other than labelled lines: the equations alone, or after "
     f"a list of the question's numbers (default {Recipe.other_styles}; {OTHER_STYLES_FRACTION:.3g} makes "
     f"the three styles equally common)"),
)


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("train-tiny", help="train the tiny reasoning model from scratch on CPU",
                                   description="Train the tiny Qwen3-architecture model on the synthetic "
                                               "arithmetic corpus. Writes OUT/model (HF format), OUT/log.jsonl, "
                                               "OUT/loss.png and OUT/state.pt (for --resume).")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimizer steps (default {DEFAULT_STEPS}; with --minutes only, as many as fit it)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="optional cap on the training time over all sessions (default: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    for flag, field, kind, help_text in RECIPE_FLAGS:
        parser.add_argument(flag, dest=field, type=kind, default=getattr(Recipe, field), help=help_text,
                            metavar=flag[2:].replace("-", "_").upper())
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_train_cli)

    report = subparsers.add_parser("tiny-report", help="measure a tiny model on a split and update its card")
    report.add_argument("--model", required=True, help="model folder (e.g. runs/tiny/model)")
    report.add_argument("--split", default="test", choices=("train", "validation", "test"))
    report.add_argument("--limit", type=int, default=None, help="only the first N problems")
    report.add_argument("--samples", type=int, default=8, help="samples per problem for pass@k")
    report.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    report.set_defaults(func=_run_report_cli)


def recipe_from_args(args) -> Recipe:
    """The Recipe that parsed ``train-tiny`` arguments ask for."""
    return Recipe(**{field: getattr(args, field) for _, field, _, _ in RECIPE_FLAGS})


def _run_train_cli(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = train(args.out, args.minutes, args.seed, args.resume, args.steps, recipe_from_args(args),
                   not args.no_progress)
    print(f"model written to {folder}")
    return 0


def _run_report_cli(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    report = report_on_model(args.model, args.split, args.limit, args.samples, progress=True)
    print(json.dumps(report, indent=2))
    return 0
