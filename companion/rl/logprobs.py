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
    """Prompts (left-padded to P) and completions (right-padded to L) in one rectangle.

    ``input_ids`` (B, P + L - 1): the last completion token is never an input, since nothing is
    predicted after it. ``valid`` (B, L): completion tokens up to and including the first EOS.
    ``positions``/``mask`` are None when no prompt is padded (plain causal attention).
    """

    input_ids: torch.Tensor
    positions: torch.Tensor | None
    mask: torch.Tensor | None
    prompt_len: int
    completion: torch.Tensor
    valid: torch.Tensor

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


def pack(prompts: list[list[int]], completions: list[list[int]], pad_id: int, eos_ids, device=None) -> PackedBatch:
    """Build a ``PackedBatch`` from token lists (each completion at least one token)."""
    if any(len(c) == 0 for c in completions):
        raise ValueError("every completion needs at least one token")
    B, P, L = len(prompts), max(map(len, prompts)), max(map(len, completions))
    ids = torch.full((B, P + L), pad_id, dtype=torch.long)
    prompt_valid = torch.zeros(B, P, dtype=torch.bool)
    for row, (prompt, completion) in enumerate(zip(prompts, completions)):
        ids[row, P - len(prompt):P] = torch.tensor(prompt)
        ids[row, P:P + len(completion)] = torch.tensor(completion)
        prompt_valid[row, P - len(prompt):] = True
    lengths = torch.tensor([len(c) for c in completions])
    completion = ids[:, P:]
    valid = completion_mask(completion, lengths, eos_ids)
    positions = mask = None
    if not bool(prompt_valid.all()):
        key_valid = torch.cat([prompt_valid, torch.ones(B, L - 1, dtype=torch.bool)], dim=1)  # (B, P+L-1)
        positions = positions_from_padding(key_valid).to(device)
        mask = padding_mask(key_valid, P + L - 1).to(device)
    return PackedBatch(ids[:, :-1].to(device), positions, mask, P, completion.to(device), valid.to(device))


def completion_logprobs(model: Qwen3Model, batch: PackedBatch, temperature: float, chunk: int = 0):
    """Log-prob (B, L) fp32 of each completion token under softmax(logits / temperature), and the
    entropy (B, L) of that distribution (no grad); both 0 outside ``batch.valid``."""
    hidden = model.hidden_states(batch.input_ids, batch.positions, batch.mask)  # (B, P+L-1, C)
    hidden = hidden[:, batch.prompt_len - 1:]  # (B, L, C): position P-1+j predicts completion token j
    logp, entropy = selected_logprobs(hidden[batch.valid], model.lm_head.weight, batch.completion[batch.valid],
                                      temperature, chunk)  # (N,) each, N = valid tokens
    zeros = torch.zeros(batch.valid.shape, dtype=torch.float32, device=hidden.device)
    return zeros.masked_scatter(batch.valid, logp), zeros.masked_scatter(batch.valid, entropy)
