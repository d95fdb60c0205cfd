"""RMSNorm, written out: scale each vector to unit root-mean-square, then apply a learned gain.

    y = w * x / sqrt(mean(x^2) + eps)

Shapes: x (..., C) -> y (..., C); the weight w has shape (C,).
Only torch is needed; this file is standalone.
"""
from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Qwen3's RMSNorm: statistics in fp32 whatever the input dtype, cast back before the gain."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()  # a sum of squares in bf16/fp16 loses digits or overflows: upcast first
        inv_rms = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., 1)
        return self.weight * (x32 * inv_rms).to(x.dtype)


def rms_norm_no_upcast(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The same formula computed in the input's own dtype: the pitfall, kept here to measure it."""
    inv_rms = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
    return weight.to(x.dtype) * (x * inv_rms)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """fp64 ground truth, used to measure the error of the low-precision versions."""
    x64 = x.double()
    return weight.double() * x64 / torch.sqrt(x64.pow(2).mean(dim=-1, keepdim=True) + eps)
