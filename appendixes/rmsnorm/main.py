"""RMSNorm demo: check it against torch.nn.RMSNorm, show its properties, and measure why it upcasts.

    python appendixes/rmsnorm/main.py
    python appendixes/rmsnorm/main.py --dim 1024 --plot rmsnorm.png

Exits non-zero if a check fails.
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from rmsnorm import RMSNorm, rms_norm_no_upcast, rms_norm_reference

FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {name}" + (f"  ({detail})" if detail else ""))
    if not ok:
        FAILURES.append(name)


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Largest error over tokens of |approx - exact| / |exact| (inf or nan shows up as inf)."""
    diff = (approx.double() - exact).norm(dim=-1) / exact.norm(dim=-1)
    diff = torch.nan_to_num(diff, nan=float("inf"))
    return diff.max().item()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=512, help="hidden size C")
    parser.add_argument("--tokens", type=int, default=64, help="number of vectors normalized at once")
    parser.add_argument("--eps", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PATH", help="save a figure of the low-precision error versus scale")
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    C = args.dim
    x = torch.randn(2, args.tokens, C)  # (B, T, C)
    norm = RMSNorm(C, eps=args.eps)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(C))

    print(f"RMSNorm over C={C}: x {tuple(x.shape)} -> y {tuple(norm(x).shape)}, weight {tuple(norm.weight.shape)}")
    print("1. Against the references (fp32)")
    reference = nn.RMSNorm(C, eps=args.eps)
    with torch.no_grad():
        reference.weight.copy_(norm.weight)
        ours, theirs = norm(x), reference(x)
        exact = rms_norm_reference(x, norm.weight, args.eps)
    diff = (ours - theirs).abs().max().item()
    check("equals torch.nn.RMSNorm", diff <= 1e-6, f"max |diff| = {diff:.2e}")
    diff = (ours.double() - exact).abs().max().item()
    check("equals the fp64 formula", diff <= 1e-6, f"max |diff| = {diff:.2e}")

    print("2. What it does (and what it does not do)")
    unit = RMSNorm(C, eps=args.eps)
    with torch.no_grad():
        y = unit(x)
        rms = y.pow(2).mean(-1).sqrt()
        check("with weight 1, every output vector has RMS 1", torch.allclose(rms, torch.ones_like(rms), atol=1e-4),
              f"RMS in [{rms.min():.6f}, {rms.max():.6f}]")
        scaled = (unit(7.5 * x) - y).abs().max().item()
        check("scale invariant: norm(7.5 x) == norm(x)", scaled <= 1e-5, f"max |diff| = {scaled:.1e}")
        shifted = (unit(x + 1.0) - y).abs().max().item()
        layer_norm = nn.LayerNorm(C, elementwise_affine=False)
        ln_shift = (layer_norm(x + 1.0) - layer_norm(x)).abs().max().item()
        check("not shift invariant (no mean subtraction), unlike LayerNorm", shifted > 1e-2 and ln_shift < 1e-4,
              f"RMSNorm changes by {shifted:.2f}, LayerNorm by {ln_shift:.1e}")
    print("   RMSNorm drops LayerNorm's mean and bias: one statistic instead of two, no re-centering.")

    print("3. Why the statistics are computed in fp32")
    print("   relative error against fp64 for x = s * N(0, 1) (residual streams of real LLMs reach 100s-1000s):")
    scales = [1.0, 10.0, 100.0, 300.0, 1000.0, 3000.0]
    print(f"   {'s':>7} | {'bf16 upcast':>12} {'bf16 naive':>12} | {'fp16 upcast':>12} {'fp16 naive':>12}")
    errors = {key: [] for key in ("bf16 upcast", "bf16 naive", "fp16 upcast", "fp16 naive")}
    with torch.no_grad():
        for scale in scales:
            xs = scale * x
            exact = rms_norm_reference(xs, norm.weight, args.eps)
            for dtype, name in ((torch.bfloat16, "bf16"), (torch.float16, "fp16")):
                low = xs.to(dtype)
                low_exact = rms_norm_reference(low, norm.weight, args.eps)  # the input rounding is not the norm's fault
                errors[f"{name} upcast"].append(relative_error(norm(low), low_exact))
                errors[f"{name} naive"].append(relative_error(rms_norm_no_upcast(low, norm.weight, args.eps), low_exact))
            del exact
            row = [errors[key][-1] for key in errors]
            print(f"   {scale:>7g} | {row[0]:>12.2e} {row[1]:>12.2e} | {row[2]:>12.2e} {row[3]:>12.2e}")
    worst_upcast = max(max(errors["bf16 upcast"]), max(errors["fp16 upcast"]))
    check("upcast stays at the output dtype's rounding error at every scale", worst_upcast < 1e-2,
          f"worst {worst_upcast:.1e}")
    check("fp16 without upcast breaks once x^2 overflows 65504 (|x| > 256)", errors["fp16 naive"][-1] > 0.5,
          f"error {errors['fp16 naive'][-1]:.2g} at s={scales[-1]:g}")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for key, values in errors.items():
            shown = [min(v, 10.0) for v in values]  # inf drawn at the top of the axis
            ax.plot(scales, shown, marker="o", linestyle="-" if "upcast" in key else "--", label=key)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("activation scale s")
        ax.set_ylabel("relative error vs fp64 (capped at 10)")
        ax.set_title("RMSNorm in low precision: upcast vs naive")
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
