"""Qwen3 (and Qwen2.5) written from scratch.

Shapes: B batch, T new positions in this call, S key positions (cache length so far), H query heads,
K key/value heads, D head dim, C hidden size, V vocabulary.

The two families differ only in attention: Qwen3 normalizes q and k per head (QK-norm) and has no
bias; Qwen2.5 has a bias on q, k, v and no QK-norm. Both are a ``ModelConfig`` switch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from companion.config import ModelConfig


class RMSNorm(nn.Module):
    """Scale each vector to unit root-mean-square, then by a learned gain.

    The statistics are computed in fp32 even for bf16 activations (a sum of squares in bf16 loses
    most of its digits); the result is cast back before the gain, as Qwen does.
    """

    def __init__(self, dim: int, eps: float = 1e-6, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        # sum * (1/D) rather than mean(): same value, about half the kernel launches on CPU
        mean_square = (x32 * x32).sum(dim=-1, keepdim=True) * (1.0 / x.shape[-1])
        return self.weight * (x32 * torch.rsqrt(mean_square + self.eps)).to(x.dtype)


# ---- rotary position embedding -------------------------------------------------------------------

def rope_frequencies(head_dim: int, theta: float, device=None) -> torch.Tensor:
    """Inverse frequencies theta^(-2i/D) for i in [0, D/2): (D/2,) fp32."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / (theta ** exponents)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * frequency, in the half-split layout: positions (...,) -> (..., D) fp32."""
    angles = positions.float()[..., None] * inv_freq  # (..., D/2)
    angles = torch.cat((angles, angles), dim=-1)  # (..., D): dims i and i + D/2 share a frequency
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (x_i, x_{i+D/2}) pair by its position's angle. x (B, H, T, D); cos/sin (B, 1, T, D)."""
    return x * cos + rotate_half(x) * sin


# ---- attention -----------------------------------------------------------------------------------

def attention_written_out(q, k, v, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Grouped-query attention spelled out; the teaching twin of ``scaled_dot_product_attention``.

    q (B, H, T, D); k, v (B, K, S, D); mask (B or 1, 1, T, S) bool, True = may attend, or None for
    causal attention where the T queries are the last T of the S keys.
    """
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # (B, H, S, D): each key/value head serves `group` query heads
    v = v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if mask is None:
        T, S = scores.shape[-2:]
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return weights @ v  # (B, H, T, D)


def attention_sdpa(q, k, v, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The same computation through PyTorch's fused kernel."""
    T, S = q.shape[-2], k.shape[-2]
    if mask is None and T > 1 and T != S:
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=(mask is None and T > 1), enable_gqa=q.shape[1] != k.shape[1]
    )


ATTENTION_IMPLEMENTATIONS = {"sdpa": attention_sdpa, "written_out": attention_written_out}


class KVCache:
    """Preallocated keys and values of every layer: (layers, B, K, max_len, D) each.

    Rows are left-padded so that all rows write the same position at each step; a row's own
    position (for RoPE) is its cache position minus its padding.
    """

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        shape = (config.num_hidden_layers, batch_size, config.num_key_value_heads, max_len, config.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int):
        """Write k, v (B, K, T, D) at [start, start+T) and return all keys/values up to there."""
        end = start + k.shape[2]
        if end > self.max_len:
            raise IndexError(f"KV cache holds {self.max_len} positions; asked to write up to {end}")
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only these batch rows (finished sequences stop costing compute)."""
        self.keys = self.keys.index_select(1, rows)
        self.values = self.values.index_select(1, rows)

    def repeat_rows(self, times: int) -> None:
        """Each row becomes `times` consecutive rows: one prompt prefill shared by several samples."""
        self.keys = self.keys.repeat_interleave(times, dim=1)
        self.values = self.values.repeat_interleave(times, dim=1)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, device=None, dtype=None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        C, D = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(C, self.num_heads * D, bias=config.qkv_bias, **factory)
        self.k_proj = nn.Linear(C, self.num_kv_heads * D, bias=config.qkv_bias, **factory)
        self.v_proj = nn.Linear(C, self.num_kv_heads * D, bias=config.qkv_bias, **factory)
        self.o_proj = nn.Linear(self.num_heads * D, C, bias=False, **factory)
        self.q_norm = RMSNorm(D, config.rms_norm_eps, **factory) if config.qk_norm else None
        self.k_norm = RMSNorm(D, config.rms_norm_eps, **factory) if config.qk_norm else None
        self.attend = attention_sdpa

    def forward(self, x, cos, sin, mask=None, cache: KVCache | None = None, layer: int = 0, start: int = 0):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:  # Qwen3: per-head RMSNorm keeps attention logits in range
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v, start)  # (B, K, S, D) with S = start + T
        out = self.attend(q, k, v, mask)  # (B, H, T, D)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))


class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig, device=None, dtype=None):
        super().__init__()
        factory = dict(bias=False, device=device, dtype=dtype)
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, **factory)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, **factory)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, **factory)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, config: ModelConfig, device=None, dtype=None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, **factory)
        self.attn = Attention(config, **factory)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, **factory)
        self.mlp = FeedForward(config, **factory)

    def forward(self, x, cos, sin, mask=None, cache=None, layer=0, start=0):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache, layer, start)
        return x + self.mlp(self.mlp_norm(x))


class Qwen3Model(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, V)."""

    def __init__(self, config: ModelConfig, device=None, dtype=None):
        """``device="meta"`` builds the structure without allocating memory (see checkpoint.build_model)."""
        super().__init__()
        self.config = config
        factory = dict(device=device, dtype=dtype)
        if device is not None and torch.device(device).type == "meta":
            # On meta, Embedding's normal_() init goes through torch._refs and imports torch._dynamo
            # (seconds); a meta model has no values to initialize anyway.
            empty = torch.empty(config.vocab_size, config.hidden_size, **factory)
            self.embed = nn.Embedding(config.vocab_size, config.hidden_size, _weight=empty)
        else:
            self.embed = nn.Embedding(config.vocab_size, config.hidden_size, **factory)
        self.blocks = nn.ModuleList(TransformerBlock(config, **factory) for _ in range(config.num_hidden_layers))
        self.final_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, **factory)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False, **factory)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed.weight
        self.reset_rope()

    def reset_rope(self) -> None:
        """RoPE frequencies, kept in fp32 and outside the state dict (model.to(bf16) must not round them)."""
        device = None if self.device.type == "meta" else self.device  # meta has no values to compute
        self.inv_freq = rope_frequencies(self.config.head_dim, self.config.rope_theta, device=device)

    def init_weights(self, seed: int | None = None, std: float = 0.02) -> "Qwen3Model":
        """Random weights as in HF's initializer: normal(0, std) matrices, zero biases, unit norms."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                with torch.no_grad():
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        return self

    def set_attention(self, implementation: str) -> None:
        """Switch between the fused kernel ("sdpa") and the written-out teaching version."""
        for block in self.blocks:
            block.attn.attend = ATTENTION_IMPLEMENTATIONS[implementation]

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def hidden_states(self, input_ids, positions=None, mask=None, cache: KVCache | None = None, start: int = 0):
        """The final-norm hidden states (B, T, C), before the LM head."""
        B, T = input_ids.shape
        if positions is None:
            positions = torch.arange(start, start + T, device=input_ids.device).expand(B, T)
        if self.inv_freq.device != input_ids.device:
            self.inv_freq = self.inv_freq.to(input_ids.device)
        cos, sin = rope_cos_sin(positions, self.inv_freq)  # (B, T, D) fp32
        x = self.embed(input_ids)
        cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)  # (B, 1, T, D): shared by heads
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, mask, cache, layer, start)
        return self.final_norm(x)

    def forward(self, input_ids, positions=None, mask=None, cache: KVCache | None = None, start: int = 0,
                last_only: bool = False):
        """Logits (B, T, V); with ``last_only`` just (B, 1, V), which is all prefill needs.

        ``mask`` (B, 1, T, S) bool (True = may attend) is needed only with padding; without it the
        attention is causal. With ``cache``, keys/values are written at [start, start+T).
        """
        h = self.hidden_states(input_ids, positions, mask, cache, start)
        if last_only:
            h = h[:, -1:]
        return self.lm_head(h)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def padding_mask(key_valid: torch.Tensor, num_queries: int) -> torch.Tensor:
    """Causal mask that also hides padded keys: key_valid (B, S) bool -> (B, 1, T, S).

    The T queries are the last T of the S keys. A padded query may attend to itself, so that no
    softmax row is empty (an empty row gives NaN, which would leak into later layers' values).
    """
    S = key_valid.shape[1]
    T = num_queries
    causal = torch.ones(T, S, dtype=torch.bool, device=key_valid.device).tril(diagonal=S - T)
    mask = causal[None] & key_valid[:, None, :]
    own = torch.zeros(T, S, dtype=torch.bool, device=key_valid.device)
    own[torch.arange(T), torch.arange(S - T, S)] = True
    return (mask | own[None])[:, None]  # (B, 1, T, S)


def positions_from_padding(key_valid: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded rows: 0 at each row's first real token. (B, S) bool -> (B, S) long."""
    return (key_valid.long().cumsum(dim=1) - 1).clamp(min=0)
