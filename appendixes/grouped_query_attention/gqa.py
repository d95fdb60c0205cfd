"""Grouped-query attention (GQA), written out.

H query heads share K key/value heads: query head h reads key/value head h // G, with G = H / K the
group size. K = H is multi-head attention (MHA); K = 1 is multi-query attention (MQA).

Shapes: B batch, H query heads, K key/value heads, T queries, S keys, D head dim.
    q (B, H, T, D); k, v (B, K, S, D); mask (B or 1, 1, T, S) bool, True = may attend.
When there is no mask, attention is causal and the T queries are the *last* T of the S positions
(prefill: T = S; one decoding step with a cache: T = 1).
Only torch is needed; this file is standalone.
"""
from __future__ import annotations

import math

import torch


def causal_mask(num_queries: int, num_keys: int, device=None) -> torch.Tensor:
    """(T, S) bool: query t (at position S - T + t) may attend keys 0 .. S - T + t."""
    return torch.ones(num_queries, num_keys, dtype=torch.bool, device=device).tril(diagonal=num_keys - num_queries)


def repeat_kv(x: torch.Tensor, group: int) -> torch.Tensor:
    """(B, K, S, D) -> (B, K * group, S, D): each key/value head copied for the `group` query heads it serves.

    repeat_interleave gives [kv0, kv0, kv1, kv1, ...], so query head h meets kv head h // group.
    (``x.repeat(1, group, 1, 1)`` would give [kv0, kv1, kv0, kv1, ...]: the wrong pairing.)
    """
    return x.repeat_interleave(group, dim=1) if group > 1 else x


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + mask) v with key/value heads repeated: (B, H, T, D)."""
    group = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, group), repeat_kv(v, group)  # (B, H, S, D)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if mask is None:
        mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # softmax in fp32 even for bf16 inputs
    return weights @ v


def attention_grouped(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The same result without copying keys/values: view the H query heads as (K, G) and broadcast."""
    B, H, T, D = q.shape
    K, S = k.shape[1], k.shape[2]
    qg = q.view(B, K, H // K, T, D)  # (B, K, G, T, D): the G query heads of each group side by side
    scores = qg @ k[:, :, None].transpose(-2, -1) / math.sqrt(D)  # (B, K, G, T, S)
    if mask is None:
        mask = causal_mask(T, S, device=q.device)
    else:
        mask = mask[:, :, None]  # (B or 1, 1, 1, T, S)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return (weights @ v[:, :, None]).reshape(B, H, T, D)


def kv_cache_bytes(num_layers: int, num_kv_heads: int, head_dim: int, tokens: int, bytes_per_value: int = 2) -> int:
    """Memory of the keys and values kept for `tokens` positions (bf16 by default)."""
    return 2 * num_layers * num_kv_heads * head_dim * tokens * bytes_per_value
