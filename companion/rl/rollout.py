"""Rollouts: G completions per prompt from the current policy, decoded and scored.

Sampling goes through the same engine as evaluation (``generate_ids`` with ``num_samples=G``):
one prefill per prompt whose keys and values are shared by its G samples, and each sampled token's
log-prob under the temperature-scaled distribution. The trainer later recomputes those log-probs
with gradients; the difference between the two is logged as a health check of the engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from companion.generate import SamplingParams, generate_ids
from companion.prompts import build_prompt
from companion.rl.rewards import Completions, RewardFunction, score


@dataclass
class Group:
    """One prompt and its G sampled completions, with their rewards."""

    problem_index: int
    prompt_text: str
    prompt_ids: list[int]
    gold: str
    completions: list[list[int]]  # G token lists, each ending with its EOS unless truncated
    sampler_logprobs: list[list[float]]
    truncated: list[bool]
    texts: list[str]
    rewards: torch.Tensor = field(default=None)  # (G,)
    reward_values: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (G,)

    @property
    def size(self) -> int:
        return len(self.completions)


class PromptStream:
    """Problem indices in a fresh seeded order each epoch. Its whole state is (epoch, position),
    so a resumed run draws exactly the prompts the uninterrupted run would have drawn."""

    def __init__(self, num_problems: int, seed: int = 0, epoch: int = 0, position: int = 0):
        if num_problems < 1:
            raise ValueError("no problems to train on")
        self.num_problems, self.seed = num_problems, seed
        self.epoch, self.position = epoch, position
        self._order = self._permutation(epoch)

    def _permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_problems, generator=generator).tolist()

    def take(self, count: int) -> list[int]:
        taken = []
        while len(taken) < count:
            if self.position == self.num_problems:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            taken.append(self._order[self.position])
            self.position += 1
        return taken

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_problems": self.num_problems}

    def load_state_dict(self, state: dict) -> None:
        if state["num_problems"] != self.num_problems or state["seed"] != self.seed:
            raise ValueError(f"the checkpoint drew from {state['num_problems']} problems with seed {state['seed']}; "
                             f"this run has {self.num_problems} with seed {self.seed}")
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._permutation(self.epoch)


class PromptCache:
    """Chat prompt text and token ids of each problem, built once."""

    def __init__(self, tokenizer, questions: list[str], style: str):
        self.tokenizer, self.questions, self.style = tokenizer, questions, style
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def __getitem__(self, index: int) -> tuple[str, list[int]]:
        if index not in self._cache:
            text = build_prompt(self.tokenizer, self.questions[index], self.style)
            self._cache[index] = (text, self.tokenizer.encode(text))
        return self._cache[index]


def eos_ids_of(tokenizer) -> tuple[int, ...]:
    return tuple(getattr(tokenizer, "eos_token_ids", None) or [tokenizer.eos_token_id])


def strip_eos(tokens: list[int], eos_ids) -> list[int]:
    return tokens[:-1] if tokens and tokens[-1] in eos_ids else tokens


def sample_groups(model, tokenizer, prompts: PromptCache, golds: list[str], indices: list[int], group_size: int,
                  max_new_tokens: int, params: SamplingParams, generator: torch.Generator | None,
                  reward_functions: list[RewardFunction], rollout_prompts: int = 0,
                  min_new_tokens: int = 0, decode_step=None) -> list[Group]:
    """Sample ``group_size`` completions for each problem in ``indices`` and score them.

    ``rollout_prompts`` caps how many prompts are generated together (0: all at once);
    ``decode_step`` is the engine's optional replacement for the model in decoding (compiled).
    """
    eos_ids = eos_ids_of(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    groups = []
    chunk = rollout_prompts or len(indices)
    for start in range(0, len(indices), chunk):
        part = indices[start:start + chunk]
        outputs = generate_ids(model, [prompts[i][1] for i in part], max_new_tokens, params, eos_ids,
                               num_samples=group_size, generator=generator, min_new_tokens=min_new_tokens,
                               pad_id=pad_id, decode_step=decode_step)  # prompt-major: prompt j's samples are rows j*G .. j*G+G-1
        for j, index in enumerate(part):
            rows = outputs[j * group_size:(j + 1) * group_size]
            groups.append(Group(
                problem_index=index, prompt_text=prompts[index][0], prompt_ids=prompts[index][1], gold=golds[index],
                completions=[tokens for tokens, _, _ in rows], sampler_logprobs=[lp for _, lp, _ in rows],
                truncated=[reason == "length" for _, _, reason in rows],
                texts=[tokenizer.decode(strip_eos(tokens, eos_ids)) for tokens, _, _ in rows]))
    model.train(was_training)
    score_groups(groups, reward_functions)
    return groups


def score_groups(groups: list[Group], reward_functions: list[RewardFunction]) -> None:
    """Fill in ``rewards`` and ``reward_values`` of every group (one call for the whole batch)."""
    if not groups:
        return
    batch = Completions(
        prompts=[g.prompt_text for g in groups for _ in range(g.size)],
        texts=[t for g in groups for t in g.texts],
        golds=[g.gold for g in groups for _ in range(g.size)],
        lengths=[len(c) for g in groups for c in g.completions],
        truncated=[t for g in groups for t in g.truncated])
    total, values = score(reward_functions, batch)
    offset = 0
    for g in groups:
        g.rewards = total[offset:offset + g.size]
        g.reward_values = {name: v[offset:offset + g.size] for name, v in values.items()}
        offset += g.size
