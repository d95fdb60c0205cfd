"""The GLU family of feed-forward layers (Shazeer, 2020, "GLU Variants Improve Transformer").

    FFN_variant(x) = down( act(gate(x)) * up(x) )

    GLU     act = sigmoid
    GeGLU   act = GELU
    SwiGLU  act = SiLU = Swish with beta 1: z * sigmoid(z)          <- Qwen3, LLaMA, Mistral
    ReGLU   act = ReLU
    Bilinear act = identity

Shapes: x (..., C) -> gate(x), up(x) (..., F) -> output (..., C), with C the hidden size and F the
intermediate size. The parameter names (gate_proj, up_proj, down_proj) are Qwen3's.
Only torch is needed; this file is standalone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "glu": torch.sigmoid,
    "geglu": F.gelu,  # exact (erf) GELU; T5 v1.1's GeGLU uses the tanh approximation
    "swiglu": F.silu,
    "reglu": F.relu,
    "bilinear": lambda z: z,
}


class GatedFeedForward(nn.Module):
    """down(act(gate(x)) * up(x)), three bias-free projections."""

    def __init__(self, hidden_size: int, intermediate_size: int, activation: str = "swiglu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {', '.join(ACTIVATIONS)}")
        self.activation = activation
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.activation]
        return self.down_proj(act(self.gate_proj(x)) * self.up_proj(x))


class GLU(GatedFeedForward):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__(hidden_size, intermediate_size, "glu")


class GeGLU(GatedFeedForward):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__(hidden_size, intermediate_size, "geglu")


class SwiGLU(GatedFeedForward):
    """Qwen3's MLP: down_proj(silu(gate_proj(x)) * up_proj(x))."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__(hidden_size, intermediate_size, "swiglu")


class PlainFeedForward(nn.Module):
    """The original transformer MLP, for comparison: down(gelu(up(x))), two projections."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x)))


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
