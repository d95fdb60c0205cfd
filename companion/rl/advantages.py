"""Group-relative advantages: how much better each completion did than its siblings.

GRPO has no value network. The baseline of a completion is the mean reward of the other samples
for the same prompt, so the advantage says "better or worse than this prompt's usual". Dividing
by the group's standard deviation (GRPO) makes every prompt's advantages unit-sized; Dr. GRPO
drops the division because it up-weights prompts that are almost always right or always wrong,
and Lite-PPO divides by the std of the whole batch instead.
"""
from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, scale: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """rewards (P, G): P prompts, G completions each -> advantages (P, G).

    ``scale``: "group" divides by each group's std, "batch" by the std of all P*G rewards, "none"
    keeps ``reward - group mean``. The std is the sample std (Bessel's correction), as in TRL.
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (prompts, group_size >= 2), got {tuple(rewards.shape)}")
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    if scale == "none":
        return centered
    if scale == "group":
        std = rewards.std(dim=1, keepdim=True)  # (P, 1)
    elif scale == "batch":
        std = rewards.std() if rewards.numel() > 1 else rewards.new_zeros(())
    else:
        raise ValueError(f"scale must be group, batch or none; got {scale!r}")
    return centered / (std + eps)


def has_spread(rewards: torch.Tensor) -> torch.Tensor:
    """(P, G) -> (P,) bool: the group's rewards are not all equal, so it carries a learning signal."""
    return (rewards.max(dim=1).values - rewards.min(dim=1).values) > 1e-6
