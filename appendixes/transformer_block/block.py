"""One Qwen3 decoder block, self-contained: RMSNorm, RoPE, grouped-query attention with QK-norm,
SwiGLU MLP, in the pre-norm residual arrangement

    x = x + attn(attn_norm(x))
    x = x + mlp(mlp_norm(x))

Shapes: B batch, T tokens, C hidden size, H query heads, K key/value heads, D head dim, F intermediate.
Parameter names follow the companion package (attn_norm, attn.q_proj, ..., mlp.down_proj).
Only torch is needed; this file is standalone (the folders ../rmsnorm, ../rope,
../grouped_query_attention and ../glu_feed_forward study each piece on its own).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class BlockConfig:
    hidden_size: int = 64  # C
    intermediate_size: int = 192  # F
    num_attention_heads: int = 4  # H
    num_key_value_heads: int = 2  # K
    head_dim: int = 32  # D (Qwen3: not hidden_size / H in general)
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    qk_norm: bool = True  # Qwen3: yes; Qwen2.5: no
    qkv_bias: bool = False  # Qwen3: no; Qwen2.5: yes


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (..., T) -> cos, sin (..., T, D) in fp32, half-split layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    angles = positions.float()[..., None] * inv_freq.to(positions.device)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def attend(q, k, v, mask=None):
    """Causal grouped-query attention through PyTorch's fused kernel: q (B, H, T, D), k/v (B, K, S, D)."""
    T, S = q.shape[-2], k.shape[-2]
    if mask is None and T > 1 and T != S:  # the T queries are the last T of S positions
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1,
                                          enable_gqa=q.shape[1] != k.shape[1])


class Attention(nn.Module):
    def __init__(self, config: BlockConfig):
        super().__init__()
        C, D = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, D
        self.q_proj = nn.Linear(C, self.num_heads * D, bias=config.qkv_bias)
        self.k_proj = nn.Linear(C, self.num_kv_heads * D, bias=config.qkv_bias)
        self.v_proj = nn.Linear(C, self.num_kv_heads * D, bias=config.qkv_bias)
        self.o_proj = nn.Linear(self.num_heads * D, C, bias=False)
        self.q_norm = RMSNorm(D, config.rms_norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(D, config.rms_norm_eps) if config.qk_norm else None

    def forward(self, x, cos, sin, mask=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:  # QK-norm: RMSNorm of each head vector, before RoPE
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = attend(q, k, v, mask)  # (B, H, T, D)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))


class FeedForward(nn.Module):
    """SwiGLU."""

    def __init__(self, config: BlockConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class TransformerBlock(nn.Module):
    """x (B, T, C), cos/sin (B or 1, 1, T, D), optional mask (B or 1, 1, T, T) -> (B, T, C)."""

    def __init__(self, config: BlockConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = FeedForward(config)

    def forward(self, x, cos, sin, mask=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.mlp(self.mlp_norm(x))
