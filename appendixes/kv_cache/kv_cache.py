"""A KV cache and a tiny decoder-only LM that uses it.

Generation without a cache recomputes the keys and values of the whole sequence at every step.
They never change (a token's key depends only on the tokens up to it), so the cache keeps them:
prefill writes the prompt's keys/values once, each decoding step writes one more position and
attends to everything written so far.

Shapes: L layers, B batch, K key/value heads, M cache capacity, D head dim, T new tokens, S = start + T.
    cache.keys, cache.values: (L, B, K, M, D)
    update(layer, k, v, start): k, v (B, K, T, D) written at [start, start + T); returns (B, K, S, D)
Only torch is needed; this file is standalone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Preallocated keys and values of every layer; the caller says where to write (``start``)."""

    def __init__(self, num_layers: int, batch_size: int, num_kv_heads: int, max_len: int, head_dim: int,
                 dtype=torch.float32, device=None):
        shape = (num_layers, batch_size, num_kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int):
        end = start + k.shape[2]
        if end > self.max_len:
            raise IndexError(f"the cache holds {self.max_len} positions; asked to write up to {end}")
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        # Return only the filled part: the slots after `end` are zeros, not keys, and must not be attended.
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() * 2


# ---- a tiny Qwen-style decoder, just enough to exercise the cache ----------------------------------

def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Half-split RoPE of x (B, heads, T, D) at the given positions (T,)."""
    D = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2).float() / D))
    angles = positions.float()[:, None] * inv_freq
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    return x * cos + torch.cat((-x[..., D // 2:], x[..., : D // 2]), dim=-1) * sin


class Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int, intermediate: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.attn_norm = nn.RMSNorm(hidden, eps=1e-6)
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)
        self.mlp_norm = nn.RMSNorm(hidden, eps=1e-6)
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x, positions, theta, cache: KVCache | None, layer: int, start: int):
        B, T, _ = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rope(q, positions, theta), rope(k, positions, theta)  # keys are cached already rotated
        if cache is not None:
            k, v = cache.update(layer, k, v, start)  # (B, K, S, D): all keys so far
        S = k.shape[2]
        # The T queries are the last T of S positions: query t sees keys 0 .. S - T + t.
        mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T) if T > 1 else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.heads != self.kv_heads)
        x = x + self.o_proj(out.transpose(1, 2).reshape(B, T, -1))
        m = self.mlp_norm(x)
        return x + self.down_proj(F.silu(self.gate_proj(m)) * self.up_proj(m))


class TinyLM(nn.Module):
    def __init__(self, vocab_size=256, hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=192,
                 rope_theta=10_000.0):
        super().__init__()
        self.rope_theta = rope_theta
        self.embed = nn.Embedding(vocab_size, hidden)
        self.layers = nn.ModuleList(Layer(hidden, heads, kv_heads, head_dim, intermediate) for _ in range(layers))
        self.final_norm = nn.RMSNorm(hidden, eps=1e-6)
        self.lm_head = nn.Linear(hidden, vocab_size, bias=False)

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        first = self.layers[0]
        return KVCache(len(self.layers), batch_size, first.kv_heads, max_len, first.head_dim)

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None, start: int = 0,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T) are the tokens at positions start .. start + T - 1; returns logits (B, T, V)."""
        if positions is None:
            positions = torch.arange(start, start + ids.shape[1])  # the bookkeeping the cache relies on
        x = self.embed(ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, positions, self.rope_theta, cache, i, start)
        return self.lm_head(self.final_norm(x))


@torch.no_grad()
def generate(model: TinyLM, prompt: torch.Tensor, new_tokens: int, use_cache: bool = True,
             forget_positions: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Greedy decoding. Returns the tokens (B, T + new_tokens) and the logits of each new token.

    ``forget_positions`` reproduces a classic bug: decoding steps rotate the new token as if it were
    at position 0 instead of at the cache length.
    """
    tokens = prompt
    step_logits = []
    if use_cache:
        cache = model.new_cache(prompt.shape[0], prompt.shape[1] + new_tokens)
        logits = model(prompt, cache=cache, start=0)[:, -1]  # prefill: the whole prompt at once
        for step in range(new_tokens):
            step_logits.append(logits)
            next_token = logits.argmax(-1, keepdim=True)
            tokens = torch.cat((tokens, next_token), dim=1)
            if step == new_tokens - 1:
                break
            start = tokens.shape[1] - 1  # positions already in the cache
            positions = torch.zeros(1, dtype=torch.long) if forget_positions else None
            logits = model(next_token, cache=cache, start=start, positions=positions)[:, -1]
    else:
        for _ in range(new_tokens):
            logits = model(tokens)[:, -1]  # recompute everything
            step_logits.append(logits)
            tokens = torch.cat((tokens, logits.argmax(-1, keepdim=True)), dim=1)
    return tokens, step_logits
