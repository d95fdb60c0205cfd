"""Rotary position embedding (RoPE), half-split layout as in Qwen3 / Hugging Face.

Each head vector of size D is treated as D/2 pairs; pair i is rotated by the angle m * theta_i, where m
is the token's position and theta_i = base^(-2i/D). In the half-split layout, pair i is the two
coordinates (i, i + D/2); in the interleaved layout (original RoFormer, Meta's LLaMA code) it is
(2i, 2i + 1). Both are here, with the permutation that converts one into the other.

Shapes: x (B, H, T, D); positions (T,) or (B, T); cos/sin (..., T, D) broadcastable to x.
Only torch is needed; this file is standalone.
"""
from __future__ import annotations

import torch


def rope_frequencies(head_dim: int, base: float = 1_000_000.0, dtype=torch.float32) -> torch.Tensor:
    """Inverse frequencies theta_i = base^(-2i/D), i in [0, D/2): (D/2,)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(dtype) / head_dim
    return 1.0 / (base ** exponents)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of m * theta_i, repeated for both halves: positions (...,) -> (..., D)."""
    angles = positions.to(inv_freq.dtype)[..., None] * inv_freq  # (..., D/2)
    angles = torch.cat((angles, angles), dim=-1)  # coordinates i and i + D/2 share theta_i
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) with x1, x2 the two halves of the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split RoPE: x_i' = x_i cos - x_{i+D/2} sin, x_{i+D/2}' = x_{i+D/2} cos + x_i sin."""
    return x * cos + rotate_half(x) * sin


def apply_rope_complex(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """The reference formulation: pair i is the complex number z_i = x_i + j x_{i+D/2}, multiplied by e^(j m theta_i)."""
    half = x.shape[-1] // 2
    z = torch.complex(x[..., :half], x[..., half:])  # (..., T, D/2)
    angles = positions.to(inv_freq.dtype)[..., None] * inv_freq  # (T, D/2)
    rotated = z * torch.polar(torch.ones_like(angles), angles)
    return torch.cat((rotated.real, rotated.imag), dim=-1)


def apply_rope_interleaved(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Interleaved RoPE (RoFormer, Meta's LLaMA): pair i is coordinates (2i, 2i + 1)."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)  # (..., D/2, 2)
    z = torch.complex(pairs[..., 0], pairs[..., 1])
    angles = positions.to(inv_freq.dtype)[..., None] * inv_freq
    rotated = z * torch.polar(torch.ones_like(angles), angles)
    return torch.stack((rotated.real, rotated.imag), dim=-1).flatten(-2)


def half_split_to_interleaved(head_dim: int) -> torch.Tensor:
    """Index p with x_interleaved = x_half_split[..., p]: [0, D/2, 1, D/2 + 1, ...]."""
    half = head_dim // 2
    return torch.stack((torch.arange(half), torch.arange(half) + half), dim=-1).flatten()
