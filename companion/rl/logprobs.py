"""Per-token log-probabilities of completions under the policy, computed without ever holding the
full-vocabulary logits of the whole batch.

The naive way, ``log_softmax(model(ids)).gather(...)``, materializes (B, T, V) fp32 logits and keeps
them for the backward pass: for Qwen3-0.6B (V = 151,936) and 8 x 512 tokens that is 2.5 GB for a
single number per token. Here the LM head runs on a chunk of positions at a time, only the chosen
token's log-prob and the entropy survive the chunk, and the backward pass recomputes each chunk's
softmax from the hidden states. Only completion positions are computed: prompt tokens are not
actions of the policy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from companion.model import Qwen3Model, padding_mask, positions_from_padding

LOGIT_ELEMENTS_PER_CHUNK = 2**26  # 256 MB of fp32 logits per chunk, whatever the vocabulary


def auto_chunk(vocab_size: int) -> int:
    return max(16, LOGIT_ELEMENTS_PER_CHUNK // vocab_size)


class SelectedLogprobs(torch.autograd.Function):
    """log softmax(h W^T / T)[target] and the entropy of that distribution, chunk by chunk.

    hidden (N, C), weight (V, C), targets (N,) -> logprobs (N,) fp32, entropy (N,) fp32 (no grad).
    Backward: d logp / d logits = (onehot(target) - softmax) / T, recomputed per chunk.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature: float, chunk: int):
        N = hidden.shape[0]
        logprobs = torch.empty(N, dtype=torch.float32, device=hidden.device)
        entropy = torch.empty(N, dtype=torch.float32, device=hidden.device)
        for start in range(0, N, chunk):
            end = min(N, start + chunk)
            logits = F.linear(hidden[start:end], weight).float() / temperature  # (n, V)
            norm = torch.logsumexp(logits, dim=-1)  # (n,)
            logprobs[start:end] = logits.gather(1, targets[start:end, None]).squeeze(1) - norm
            probs = torch.exp(logits - norm[:, None])
            entropy[start:end] = norm - (probs * logits).sum(dim=-1)
        ctx.save_for_backward(hidden, weight, targets)
        ctx.temperature, ctx.chunk = temperature, chunk
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, _grad_entropy):
        hidden, weight, targets = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight) if need_weight else None
        for start in range(0, hidden.shape[0], ctx.chunk):
            end = min(hidden.shape[0], start + ctx.chunk)
            h = hidden[start:end]
            logits = F.linear(h, weight).float() / ctx.temperature
            g = grad_logprobs[start:end, None]  # (n, 1)
            grad_logits = -torch.softmax(logits, dim=-1) * g  # (n, V)
            grad_logits.scatter_add_(1, targets[start:end, None], g)
            grad_logits = (grad_logits / ctx.temperature).to(weight.dtype)
            if need_hidden:
                grad_hidden[start:end] = grad_logits @ weight
            if need_weight:
                grad_weight.addmm_(grad_logits.T, h)
        return grad_hidden, grad_weight, None, None, None


def selected_logprobs(hidden, weight, targets, temperature: float = 1.0, chunk: int = 0):
    """See ``SelectedLogprobs``; ``chunk`` 0 picks a size from the vocabulary."""
    chunk = chunk or auto_chunk(weight.shape[0])
    return SelectedLogprobs.apply(hidden, weight, targets, float(temperature), int(chunk))


@dataclass
class PackedBatch:
    """Prompt + completion rows in one rectangle, and where each completion token is predicted.

    ``input_ids`` (B, T). ``completion`` (B, L) right-padded; ``valid`` (B, L): its tokens up to and
    including the first EOS. ``source`` (B, L): the input position whose output predicts each
    completion token. ``positions``/``mask`` are None unless rows are left-padded.

    Two layouts give the same log-probs (a test checks it). "right" (the default) writes each row
    as prompt + completion from position 0 and pads at the end: causal attention alone keeps real
    tokens away from the padding, so no mask is needed and attention stays on the fused kernel
    (no (T, T) weights in memory). "left" left-pads the prompts, as the generation engine does, and
    needs the padding mask and shifted positions.
    """

    input_ids: torch.Tensor
    positions: torch.Tensor | None
    mask: torch.Tensor | None
    completion: torch.Tensor
    valid: torch.Tensor
    source: torch.Tensor

    @property
    def num_rows(self) -> int:
        return self.completion.shape[0]


def completion_mask(completion: torch.Tensor, lengths: torch.Tensor, eos_ids) -> torch.Tensor:
    """(B, L) ids, (B,) lengths -> (B, L) bool: tokens up to and including the first EOS, within
    the length. Built from positions, never from "token != pad": the pad id is often an EOS id."""
    L = completion.shape[1]
    index = torch.arange(L, device=completion.device)[None]  # (1, L)
    inside = index < lengths[:, None]
    eos = torch.isin(completion, torch.as_tensor(list(eos_ids), device=completion.device)) & inside
    first_eos = torch.where(eos.any(dim=1), eos.int().argmax(dim=1), torch.full_like(lengths, L))  # (B,)
    return inside & (index <= first_eos[:, None])


def pack(prompts: list[list[int]], completions: list[list[int]], pad_id: int, eos_ids, device=None,
         layout: str = "right") -> PackedBatch:
    """Build a ``PackedBatch`` from token lists (each prompt and completion at least one token)."""
    if any(len(c) == 0 for c in completions) or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt and completion needs at least one token")
    B, L = len(prompts), max(map(len, completions))
    completion = torch.full((B, L), pad_id, dtype=torch.long)
    for row, tokens in enumerate(completions):
        completion[row, :len(tokens)] = torch.tensor(tokens)
    lengths = torch.tensor([len(c) for c in completions])
    valid = completion_mask(completion, lengths, eos_ids)
    if layout == "right":
        T = max(len(p) + len(c) for p, c in zip(prompts, completions)) - 1
        ids = torch.full((B, T + 1), pad_id, dtype=torch.long)
        for row, (prompt, tokens) in enumerate(zip(prompts, completions)):
            ids[row, :len(prompt) + len(tokens)] = torch.tensor(prompt + tokens)
        starts = torch.tensor([len(p) for p in prompts])
        positions = mask = None
    elif layout == "left":
        P = max(map(len, prompts))
        T = P + L - 1
        ids = torch.full((B, T + 1), pad_id, dtype=torch.long)
        prompt_valid = torch.zeros(B, P, dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            ids[row, P - len(prompt):P] = torch.tensor(prompt)
            prompt_valid[row, P - len(prompt):] = True
        ids[:, P:] = completion
        starts = torch.full((B,), P)
        positions = mask = None
        if not bool(prompt_valid.all()):
            key_valid = torch.cat([prompt_valid, torch.ones(B, L - 1, dtype=torch.bool)], dim=1)  # (B, T)
            positions = positions_from_padding(key_valid).to(device)
            mask = padding_mask(key_valid, T).to(device)
    else:
        raise ValueError(f"layout must be right or left, got {layout!r}")
    # The output at position start-1+j predicts completion token j; clamp keeps padding in range.
    source = (starts[:, None] - 1 + torch.arange(L)[None]).clamp(max=T - 1)  # (B, L)
    return PackedBatch(ids[:, :-1].to(device), positions, mask, completion.to(device), valid.to(device),
                       source.to(device))


def completion_logprobs(model: Qwen3Model, batch: PackedBatch, temperature: float, chunk: int = 0):
    """Log-prob (B, L) fp32 of each completion token under softmax(logits / temperature), and the
    entropy (B, L) of that distribution (no grad); both 0 outside ``batch.valid``."""
    hidden = model.hidden_states(batch.input_ids, batch.positions, batch.mask)  # (B, T, C)
    B, T, C = hidden.shape
    flat_index = torch.arange(B, device=hidden.device)[:, None] * T + batch.source  # (B, L)
    selected = hidden.reshape(B * T, C)[flat_index[batch.valid]]  # (N, C), N = valid completion tokens
    logp, entropy = selected_logprobs(selected, model.lm_head.weight, batch.completion[batch.valid],
                                      temperature, chunk)  # (N,) each
    zeros = torch.zeros(batch.valid.shape, dtype=torch.float32, device=hidden.device)
    return zeros.masked_scatter(batch.valid, logp), zeros.masked_scatter(batch.valid, entropy)
