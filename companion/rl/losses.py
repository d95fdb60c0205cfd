"""The GRPO-family objective: a clipped surrogate per token, an optional KL penalty, and the
choice of how per-token losses are averaged into one number.

Per token (all tensors (B, L); A is the sequence's advantage broadcast over its tokens):

    r      = exp(logp - logp_old)                   (GSPO: exp(mean_t(logp - logp_old)) per sequence)
    pg     = -min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A)
    kl     = exp(ref - logp) - (ref - logp) - 1      (Schulman's k3: unbiased, always >= 0)
    loss   = pg + beta * kl

Aggregation (m = loss mask; sums over the whole optimizer step, whatever the micro-batching):

    grpo     sum_i [sum_t m l / sum_t m] / n_seq     each sequence counts once (DeepSeekMath)
    dapo     sum_i sum_t m l / n_tokens              each token counts once (DAPO)
    dr_grpo  sum_i sum_t m l / (n_seq * L_const)     a constant per token (Dr. GRPO)

Each micro-batch contributes its share of these sums divided by the normalizer of the whole
optimizer step, so that accumulating the micro-batch gradients gives exactly the big-batch
gradient (per-micro-batch means would not: short micro-batches would weigh more).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Normalizer:
    """Counts over the rows of one optimizer step: active tokens, active sequences, a constant."""

    num_tokens: int
    num_sequences: int
    constant: int = 1

    @classmethod
    def from_mask(cls, mask: torch.Tensor, constant: int = 1) -> Normalizer:
        """mask (B, L) of every row in the optimizer step. A sequence whose tokens are all masked
        out (a truncated one under ``mask_truncated``) is not counted."""
        return cls(int(mask.sum()), int((mask.sum(dim=1) > 0).sum()), constant)


def aggregate(values: torch.Tensor, mask: torch.Tensor, loss_type: str, norm: Normalizer) -> torch.Tensor:
    """This micro-batch's share of the step's loss. values, mask (B, L) -> scalar."""
    masked = values * mask
    if loss_type == "grpo":
        per_sequence = masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # (B,) token mean of each sequence
        return per_sequence.sum() / max(1, norm.num_sequences)
    if loss_type == "dapo":
        return masked.sum() / max(1, norm.num_tokens)
    if loss_type == "dr_grpo":
        return masked.sum() / (max(1, norm.num_sequences) * norm.constant)
    raise ValueError(f"unknown loss_type {loss_type!r}")


def importance_log_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor, level: str) -> torch.Tensor:
    """log pi/pi_old per token (B, L), or GSPO's length-normalized sequence log-ratio broadcast to
    the tokens (its gradient is the mean of the token gradients, so every token of a sequence
    moves together)."""
    log_ratio = logp - old_logp
    if level == "token":
        return log_ratio
    if level == "sequence":
        per_sequence = (log_ratio * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # (B,)
        return per_sequence[:, None].expand_as(log_ratio)
    raise ValueError(f"importance level must be token or sequence, got {level!r}")


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the sampled token: e^d - d - 1, d = ref - logp."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float) -> torch.Tensor:
    """-min(r A, clip(r, 1-eps_low, 1+eps_high) A) per token: the pessimistic of the two, so the
    update gains nothing from pushing r past the trust region in the direction A favors."""
    return -torch.minimum(ratio * advantages, ratio.clamp(1 - eps_low, 1 + eps_high) * advantages)


@dataclass
class LossTerms:
    """The pieces of one micro-batch: ``loss`` is what is back-propagated; the rest is for logs."""

    loss: torch.Tensor  # policy_loss + beta * kl_loss, already normalized for the step
    policy_loss: torch.Tensor
    kl_loss: torch.Tensor
    ratio: torch.Tensor  # (B, L), detached
    kl: torch.Tensor | None  # (B, L), detached
    clipped_low: torch.Tensor  # (B, L) bool: ratio below 1-eps_low where A < 0 (the clip binds)
    clipped_high: torch.Tensor  # (B, L) bool: ratio above 1+eps_high where A > 0


def grpo_loss(logp, old_logp, ref_logp, advantages, mask, norm: Normalizer, *, loss_type: str = "grpo",
              eps_low: float = 0.2, eps_high: float = 0.2, beta: float = 0.0,
              importance_level: str = "token") -> LossTerms:
    """logp, old_logp, ref_logp (or None), mask: (B, L); advantages (B,)."""
    mask = mask.to(logp.dtype)
    log_ratio = importance_log_ratio(logp, old_logp, mask, importance_level)
    ratio = torch.exp(log_ratio)
    A = advantages[:, None].to(logp.dtype)  # (B, 1)
    pg = clipped_surrogate(ratio, A, eps_low, eps_high)
    policy_loss = aggregate(pg, mask, loss_type, norm)
    kl = None
    kl_loss = torch.zeros((), device=logp.device)
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs the reference log-probs")
    if ref_logp is not None:  # with beta = 0 the KL is only measured (log_kl), outside the graph
        kl = k3_kl(logp if beta > 0 else logp.detach(), ref_logp)
        kl_loss = aggregate(kl, mask, loss_type, norm)
    ratio = ratio.detach()
    return LossTerms(
        loss=policy_loss + beta * kl_loss if beta > 0 else policy_loss,  # a measured-only KL stays out
        policy_loss=policy_loss.detach(), kl_loss=kl_loss.detach(), ratio=ratio,
        kl=None if kl is None else kl.detach(),
        clipped_low=(ratio < 1 - eps_low) & (A < 0), clipped_high=(ratio > 1 + eps_high) & (A > 0),
    )
