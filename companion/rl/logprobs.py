"""Per-token log-probabilities of completions under the policy, computed lean in memory and time.

Two savings over ``log_softmax(model(ids)).gather(...)``:

- Logits. The naive way materializes (B, T, V) fp32 logits and keeps them for the backward pass:
  for Qwen3-0.6B (V = 151,936) and 8 x 512 tokens that is 2.5 GB for one number per token. Here
  the LM head runs on a chunk of positions at a time, only the chosen token's log-prob and the
  entropy leave the chunk, and the backward pass recomputes each chunk's softmax from the hidden
  states (unless the whole batch fits in one chunk, in which case the softmax is simply kept).
  Only completion positions are computed: prompt tokens are not actions of the policy.
- Prompts. The G completions of a group share their prompt, so the "shared" layout runs each
  prompt through the model once and lets every completion attend to its keys and values (the
  same trick as one prefill per prompt in generation, with gradients flowing through it). With a
  100-token prompt and 100-token completions this halves the tokens of the forward and backward.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from companion.model import Qwen3Model, padding_mask, positions_from_padding

LOGIT_ELEMENTS_PER_CHUNK = 2**26  # 256 MB of fp32 logits per chunk, whatever the vocabulary
LAYOUTS = ("shared", "right", "left")


def auto_chunk(vocab_size: int) -> int:
    return max(16, LOGIT_ELEMENTS_PER_CHUNK // vocab_size)


class SelectedLogprobs(torch.autograd.Function):
    """log softmax(h W^T / T)[target] and the entropy of that distribution, chunk by chunk.

    hidden (N, C), weight (V, C), targets (N,) -> logprobs (N,) fp32, entropy (N,) fp32 (no grad).
    Backward: d logp / d logits = (onehot(target) - softmax) / T.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature: float, chunk: int):
        N = hidden.shape[0]
        logprobs = torch.empty(N, dtype=torch.float32, device=hidden.device)
        entropy = torch.empty(N, dtype=torch.float32, device=hidden.device)
        probs = None
        for start in range(0, N, chunk):
            end = min(N, start + chunk)
            logits = _scaled(F.linear(hidden[start:end], weight).float(), temperature)  # (n, V)
            norm = torch.logsumexp(logits, dim=-1)  # (n,)
            logprobs[start:end] = logits.gather(1, targets[start:end, None]).squeeze(1) - norm
            probs = torch.exp(logits - norm[:, None])
            entropy[start:end] = norm - (probs * logits).sum(dim=-1)
        ctx.save_for_backward(hidden, weight, targets)
        ctx.temperature, ctx.chunk = temperature, chunk
        ctx.probs = probs if N <= chunk else None  # one chunk: keep its softmax instead of recomputing
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
            probs = ctx.probs
            if probs is None:
                probs = torch.softmax(_scaled(F.linear(h, weight).float(), ctx.temperature), dim=-1)
            g = grad_logprobs[start:end, None]  # (n, 1)
            grad_logits = -probs * g  # (n, V)
            grad_logits.scatter_add_(1, targets[start:end, None], g)
            grad_logits = _scaled(grad_logits, ctx.temperature).to(weight.dtype)
            if need_hidden:
                grad_hidden[start:end] = grad_logits @ weight
            if need_weight:
                grad_weight.addmm_(grad_logits.T, h)
        ctx.probs = None
        return grad_hidden, grad_weight, None, None, None


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits if temperature == 1.0 else logits / temperature  # skip a pass over (n, V) at T = 1


def selected_logprobs(hidden, weight, targets, temperature: float = 1.0, chunk: int = 0):
    """See ``SelectedLogprobs``; ``chunk`` 0 picks a size from the vocabulary."""
    chunk = chunk or auto_chunk(weight.shape[0])
    return SelectedLogprobs.apply(hidden, weight, targets, float(temperature), int(chunk))


@dataclass
class PackedBatch:
    """Completions (and their prompts) as tensors, plus how to find each completion token's
    predictor.

    ``completion`` (B, L) right-padded; ``valid`` (B, L): its tokens up to and including the first
    EOS. The three layouts give the same log-probs (the tests check it):

    - "shared": the n distinct prompts, left-padded, in ``prompt_ids`` (n, P); the completion rows
      (B, L-1) in ``input_ids`` attend to their prompt's keys and values (``row_prompt`` (B,)).
    - "right": each row is prompt + completion from position 0, padded at the end. Causal attention
      alone keeps real tokens away from the padding, so there is no mask.
    - "left": prompts left-padded as the generation engine does; needs the padding mask.

    For "right"/"left", ``source`` (B, L) is the input position whose output predicts each
    completion token. ``positions``/``mask`` are None when no padding needs them.
    """

    layout: str
    input_ids: torch.Tensor
    positions: torch.Tensor | None
    mask: torch.Tensor | None
    completion: torch.Tensor
    valid: torch.Tensor
    source: torch.Tensor | None = None
    prompt_ids: torch.Tensor | None = None
    prompt_positions: torch.Tensor | None = None
    prompt_mask: torch.Tensor | None = None
    row_prompt: torch.Tensor | None = None

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


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    valid = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        valid[i, width - len(row):] = True
    return ids, valid


def pack(prompts: list[list[int]], completions: list[list[int]], pad_id: int, eos_ids, device=None,
         layout: str = "shared") -> PackedBatch:
    """Build a ``PackedBatch`` from token lists (each prompt and completion at least one token)."""
    if any(len(c) == 0 for c in completions) or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt and completion needs at least one token")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    B, L = len(prompts), max(map(len, completions))
    completion = torch.full((B, L), pad_id, dtype=torch.long)
    for row, tokens in enumerate(completions):
        completion[row, :len(tokens)] = torch.tensor(tokens)
    valid = completion_mask(completion, torch.tensor([len(c) for c in completions]), eos_ids)
    if layout == "shared":
        return _pack_shared(prompts, completion, valid, pad_id, device)
    if layout == "right":
        T = max(len(p) + len(c) for p, c in zip(prompts, completions)) - 1
        ids = torch.full((B, T + 1), pad_id, dtype=torch.long)
        for row, (prompt, tokens) in enumerate(zip(prompts, completions)):
            ids[row, :len(prompt) + len(tokens)] = torch.tensor(prompt + tokens)
        starts = torch.tensor([len(p) for p in prompts])
        positions = mask = None
    else:  # left
        prompt_ids, prompt_valid = _left_pad(prompts, pad_id)
        P = prompt_ids.shape[1]
        T = P + L - 1
        ids = torch.cat([prompt_ids, completion], dim=1)
        starts = torch.full((B,), P)
        positions = mask = None
        if not bool(prompt_valid.all()):
            key_valid = torch.cat([prompt_valid, torch.ones(B, L - 1, dtype=torch.bool)], dim=1)  # (B, T)
            positions = positions_from_padding(key_valid).to(device)
            mask = padding_mask(key_valid, T).to(device)
    # The output at position start-1+j predicts completion token j; clamp keeps padding in range.
    source = (starts[:, None] - 1 + torch.arange(L)[None]).clamp(max=T - 1)  # (B, L)
    return PackedBatch(layout, ids[:, :-1].to(device), positions, mask, completion.to(device), valid.to(device),
                       source=source.to(device))


def _pack_shared(prompts, completion, valid, pad_id, device) -> PackedBatch:
    unique: dict[tuple[int, ...], int] = {}
    row_prompt = torch.tensor([unique.setdefault(tuple(p), len(unique)) for p in prompts])  # (B,)
    prompt_ids, prompt_valid = _left_pad([list(p) for p in unique], pad_id)  # (n, P)
    B, L = completion.shape
    P = prompt_ids.shape[1]
    prompt_positions = prompt_mask = positions = mask = None
    if not bool(prompt_valid.all()):
        prompt_positions = positions_from_padding(prompt_valid).to(device)
        prompt_mask = padding_mask(prompt_valid, P).to(device)
        lengths = prompt_valid.sum(dim=1)[row_prompt]  # (B,) real prompt tokens of each row
        positions = (lengths[:, None] + torch.arange(L - 1)[None]).to(device)  # (B, L-1)
        key_valid = torch.cat([prompt_valid[row_prompt], torch.ones(B, L - 1, dtype=torch.bool)], dim=1)
        mask = padding_mask(key_valid, L - 1).to(device)  # (B, 1, L-1, P+L-1)
    return PackedBatch("shared", completion[:, :-1].to(device), positions, mask, completion.to(device),
                       valid.to(device), prompt_ids=prompt_ids.to(device), prompt_positions=prompt_positions,
                       prompt_mask=prompt_mask, row_prompt=row_prompt.to(device))


class SharedPrefixCache:
    """Stands in for the KV cache inside ``Qwen3Model``: the prompts' keys and values (computed once,
    at ``start == 0``), then, for the completion rows, each row's prompt keys/values followed by
    its own. Nothing is written in place, so gradients flow back to the prompts' forward pass."""

    def __init__(self, row_prompt: torch.Tensor):
        self.row_prompt = row_prompt
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int):
        if start == 0:  # the prompts: (n, K, P, D)
            self.keys[layer], self.values[layer] = k, v
            return k, v
        keys = torch.cat([self.keys[layer][self.row_prompt], k], dim=2)  # (B, K, P + T, D)
        values = torch.cat([self.values[layer][self.row_prompt], v], dim=2)
        return keys, values


def _completion_hidden(model: Qwen3Model, batch: PackedBatch) -> torch.Tensor:
    """Hidden states (B, L, C) whose LM-head outputs predict the completion tokens."""
    if batch.layout != "shared":
        hidden = model.hidden_states(batch.input_ids, batch.positions, batch.mask)  # (B, T, C)
        return hidden.gather(1, batch.source[..., None].expand(-1, -1, hidden.shape[-1]))
    cache = SharedPrefixCache(batch.row_prompt)
    prompt_hidden = model.hidden_states(batch.prompt_ids, batch.prompt_positions, batch.prompt_mask, cache, 0)
    first = prompt_hidden[batch.row_prompt, -1:]  # (B, 1, C): the prompt's last position predicts token 0
    if batch.input_ids.shape[1] == 0:
        return first
    rest = model.hidden_states(batch.input_ids, batch.positions, batch.mask, cache, batch.prompt_ids.shape[1])
    return torch.cat([first, rest], dim=1)  # (B, L, C)


def completion_logprobs(model: Qwen3Model, batch: PackedBatch, temperature: float, chunk: int = 0):
    """Log-prob (B, L) fp32 of each completion token under softmax(logits / temperature), and the
    entropy (B, L) of that distribution (no grad); both 0 outside ``batch.valid``."""
    hidden = _completion_hidden(model, batch)  # (B, L, C)
    logp, entropy = selected_logprobs(hidden[batch.valid], model.lm_head.weight, batch.completion[batch.valid],
                                      temperature, chunk)  # (N,) each, N = valid completion tokens
    zeros = torch.zeros(batch.valid.shape, dtype=torch.float32, device=hidden.device)
    return zeros.masked_scatter(batch.valid, logp), zeros.masked_scatter(batch.valid, entropy)
