"""Reward functions: each one is named, weighted, and logged on its own.

A reward function takes a ``Completions`` batch and returns one float per completion. The total
reward is the weighted sum. Keeping them apart matters: a format reward that rises while
correctness stays flat is the classic sign of reward hacking, and only per-function logs show it.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from companion.verifier import grade


@dataclass
class Completions:
    """What a reward function may look at; lists of equal length, one entry per completion."""

    prompts: list[str]  # the prompt text (chat template included)
    texts: list[str]  # the completion text, without its end-of-turn token
    golds: list[str]  # the gold answer of the problem
    lengths: list[int]  # completion tokens (end-of-turn included)
    truncated: list[bool]  # cut by the token limit instead of ending by itself


@dataclass
class RewardFunction:
    name: str
    fn: Callable[[Completions], list[float]]
    weight: float = 1.0


def correctness_reward(batch: Completions) -> list[float]:
    """1 when the final boxed answer equals the gold answer, else 0 (strict: the answer must be in
    a final ``\\boxed{}``, after ``</think>`` when there is a think block)."""
    return [1.0 if grade(text, gold, strict=True) else 0.0 for text, gold in zip(batch.texts, batch.golds)]


_BOXED_END = r"\\boxed\{(?:[^{}]|\{[^{}]*\})+\}[\s.$)\]]*$"
_THINK_THEN_BOXED = re.compile(r"^\s*<think>(?:(?!</?think>).)*</think>(?:(?!</?think>|\\boxed\{).)*" + _BOXED_END,
                               re.DOTALL)
_XML = re.compile(r"^\s*<reasoning>(?:(?!</?reasoning>).)*</reasoning>\s*<answer>(?:(?!</?answer>).)+</answer>\s*$",
                  re.DOTALL)
_ASSISTANT_HEADER = "<|im_start|>assistant\n"


def assistant_turn(prompt: str, completion: str) -> str:
    """The assistant's whole reply: what the prompt already opened plus the completion.

    With thinking mode off, the Qwen3 template puts an empty ``<think></think>`` block in the
    prompt itself, so the format of the reply can only be judged on prompt tail + completion.
    """
    start = prompt.rfind(_ASSISTANT_HEADER)
    return (prompt[start + len(_ASSISTANT_HEADER):] if start >= 0 else "") + completion


def is_well_formatted(reply: str) -> bool:
    """A think block followed by an answer that ends with one ``\\boxed{...}``, or the
    ``<reasoning>...</reasoning><answer>...</answer>`` style."""
    return bool(_THINK_THEN_BOXED.match(reply) or _XML.match(reply))


def format_reward(batch: Completions) -> list[float]:
    """1 for a well-formed reply (see ``is_well_formatted``), else 0. Truncated replies get 0."""
    return [1.0 if not cut and is_well_formatted(assistant_turn(prompt, text)) else 0.0
            for prompt, text, cut in zip(batch.prompts, batch.texts, batch.truncated)]


def soft_overlong_punishment(max_tokens: int, cache_tokens: int) -> Callable[[Completions], list[float]]:
    """DAPO's length shaping: 0 up to ``max_tokens - cache_tokens``, then linear down to -1 at
    ``max_tokens`` (and -1 beyond). It tells the model that it is running long before it is cut."""
    if not 0 < cache_tokens <= max_tokens:
        raise ValueError(f"cache_tokens must be in (0, {max_tokens}], got {cache_tokens}")
    free = max_tokens - cache_tokens

    def punish(batch: Completions) -> list[float]:
        return [max(-1.0, (free - n) / cache_tokens) if n > free else 0.0 for n in batch.lengths]

    punish.__name__ = "soft_overlong_punishment"
    return punish


BUILTIN_REWARDS = {"correctness": correctness_reward, "format": format_reward}


def default_reward_functions(weights: dict[str, float], max_new_tokens: int = 0,
                             overlong_tokens: int = 0) -> list[RewardFunction]:
    """Named built-in functions with their weights, plus the overlong punishment when asked."""
    unknown = set(weights) - set(BUILTIN_REWARDS)
    if unknown:
        raise ValueError(f"unknown reward functions {sorted(unknown)}; built-in: {sorted(BUILTIN_REWARDS)}")
    functions = [RewardFunction(name, BUILTIN_REWARDS[name], weight) for name, weight in weights.items()]
    if overlong_tokens:
        functions.append(RewardFunction("overlong", soft_overlong_punishment(max_new_tokens, overlong_tokens), 1.0))
    return functions


def score(functions: list[RewardFunction], batch: Completions) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total reward (N,) = sum of weight * value, and each function's values (N,) by name."""
    values = {}
    for function in functions:
        result = function.fn(batch)
        if len(result) != len(batch.texts):
            raise ValueError(f"reward {function.name!r} returned {len(result)} values for {len(batch.texts)} completions")
        values[function.name] = torch.tensor(result, dtype=torch.float32)
    total = torch.zeros(len(batch.texts))
    for function in functions:
        total += function.weight * values[function.name]
    return total, values
