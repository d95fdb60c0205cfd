"""GLU feed-forward demo: check GLU, GeGLU, SwiGLU (and ReGLU, bilinear) against their formulas
written with plain matrix products, GLU against torch.nn.functional.glu, and compare parameter
budgets with the classic two-matrix MLP.

    python appendixes/glu_feed_forward/main.py
    python appendixes/glu_feed_forward/main.py --hidden 256 --intermediate 768 --plot glu.png

Exits non-zero if a check fails.
"""
from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.nn.functional as F

from glu import ACTIVATIONS, GLU, GatedFeedForward, GeGLU, PlainFeedForward, SwiGLU, parameter_count

FAILURES: list[str] = []
# fp32 layer against a float64 reference. Kernels differ by CPU (oneDNN matmul blocking, vectorized
# sigmoid/exp), and one CI machine put fp32-vs-fp32 at 1.4e-5; a wrong formula is off by ~1e-1.
TOL = 1e-4

# The activations spelled out from their definitions, independent of torch's implementations.
FORMULAS = {
    "glu": lambda z: 1 / (1 + torch.exp(-z)),  # sigmoid
    "geglu": lambda z: z * 0.5 * (1 + torch.erf(z / math.sqrt(2))),  # z * Phi(z)
    "swiglu": lambda z: z / (1 + torch.exp(-z)),  # z * sigmoid(z)
    "reglu": lambda z: torch.where(z > 0, z, torch.zeros_like(z)),
    "bilinear": lambda z: z,
}


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {name}" + (f"  ({detail})" if detail else ""))
    if not ok:
        FAILURES.append(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=128, help="C, hidden size")
    parser.add_argument("--intermediate", type=int, default=384, help="F, intermediate size")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PATH", help="save a figure of the gate activations")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    C, Fdim = args.hidden, args.intermediate
    x = torch.randn(2, args.tokens, C)

    print(f"Gated feed-forward: x {tuple(x.shape)} -> gate, up {(2, args.tokens, Fdim)} -> out {tuple(x.shape)}")
    print("1. Each variant against  (act(x W^T) * (x V^T)) W2^T  with act written from its definition")
    with torch.no_grad():
        for name in ACTIVATIONS:
            layer = GatedFeedForward(C, Fdim, name)
            W, V, W2 = (p.double() for p in (layer.gate_proj.weight, layer.up_proj.weight, layer.down_proj.weight))
            x64 = x.double()
            expected = (FORMULAS[name](x64 @ W.T) * (x64 @ V.T)) @ W2.T
            diff = (layer(x).double() - expected).abs().max().item()
            check(f"{name:<8}", diff <= TOL, f"max |diff| = {diff:.1e}")
        for cls, name in ((GLU, "glu"), (GeGLU, "geglu"), (SwiGLU, "swiglu")):
            check(f"{cls.__name__} is GatedFeedForward with act={name}", cls(C, Fdim).activation == name)

        print("2. GLU is torch's F.glu on the concatenated projections")
        layer = GLU(C, Fdim)
        both = torch.cat((layer.up_proj(x), layer.gate_proj(x)), dim=-1)  # F.glu(a|b) = a * sigmoid(b)
        diff = (layer(x) - layer.down_proj(F.glu(both, dim=-1))).abs().max().item()
        check("down(F.glu([up(x), gate(x)])) == GLU(x)", diff <= TOL, f"max |diff| = {diff:.1e}")
        print("   Many codebases store gate and up as one fused (2F, C) matrix and split it: check which half is which.")

        print("3. SwiGLU's Swish: z * sigmoid(beta z), beta = 1")
        z = torch.linspace(-6, 6, 1001)
        diff = (F.silu(z) - z * torch.sigmoid(1.0 * z)).abs().max().item()
        check("SiLU == Swish with beta 1", diff <= 1e-6)
        print(f"   smallest SiLU value {F.silu(z).min():.4f} at z = {z[F.silu(z).argmin()]:.2f}: "
              "unlike ReLU, small negative inputs pass a little signal and gradient")

        print("4. Parameter budget: three matrices instead of two")
        plain = PlainFeedForward(C, 4 * C)
        matched = SwiGLU(C, round(8 * C / 3))
        print(f"   classic MLP, F = 4C = {4 * C}:        {parameter_count(plain):>10,} parameters")
        print(f"   SwiGLU, F = 8C/3 = {round(8 * C / 3)}:          {parameter_count(matched):>10,} parameters")
        ratio = parameter_count(matched) / parameter_count(plain)
        check("F = 8C/3 gives a gated layer the classic layer's budget", abs(ratio - 1) < 0.01, f"ratio {ratio:.4f}")
        print("   Qwen3-0.6B: C = 1024, F = 3072 = 3C, so 3 * 1024 * 3072 = 9,437,184 parameters per layer's MLP")

        print("5. The gate at work (SwiGLU on this random input)")
        layer = SwiGLU(C, Fdim)
        gate = F.silu(layer.gate_proj(x))
        closed = (gate.abs() < 0.05).float().mean().item()
        print(f"   {closed:.0%} of the (token, channel) gate values are near zero (|silu| < 0.05): that channel of up(x) are "
              "switched off for that token")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        z = torch.linspace(-4, 4, 401)
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, label in (("glu", "sigmoid (GLU)"), ("geglu", "GELU (GeGLU)"), ("swiglu", "SiLU (SwiGLU)"),
                            ("reglu", "ReLU (ReGLU)")):
            ax.plot(z, ACTIVATIONS[name](z), label=label)
        ax.axhline(0, color="gray", linewidth=0.5)
        ax.axvline(0, color="gray", linewidth=0.5)
        ax.set_xlabel("gate pre-activation z")
        ax.set_ylabel("act(z), multiplies up(x)")
        ax.set_title("Gate activations of the GLU family")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"saved {args.plot}")

    if FAILURES:
        print(f"FAILED: {', '.join(FAILURES)}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
