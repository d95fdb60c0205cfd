"""RoPE demo: check the half-split rotation against the complex-number formulation, show that q.k
depends only on the offset between positions, and show the layout and precision pitfalls.

    python appendixes/rope/main.py
    python appendixes/rope/main.py --head-dim 64 --base 10000 --plot rope.png

Exits non-zero if a check fails.
"""
from __future__ import annotations

import argparse
import math
import sys

import torch

from rope import (apply_rope, apply_rope_complex, apply_rope_interleaved, half_split_to_interleaved,
                  rope_cos_sin, rope_frequencies)

FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {name}" + (f"  ({detail})" if detail else ""))
    if not ok:
        FAILURES.append(name)


def rope_at(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    cos, sin = rope_cos_sin(positions, inv_freq)
    return apply_rope(x, cos, sin)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head-dim", type=int, default=128, help="D, the per-head dimension (even)")
    parser.add_argument("--base", type=float, default=1_000_000.0, help="rope_theta (Qwen3: 1e6, LLaMA-2: 1e4)")
    parser.add_argument("--positions", type=int, default=256, help="sequence length T used in the checks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PATH", help="save a figure of the rotation frequencies")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    D, T, base = args.head_dim, args.positions, args.base

    inv_freq = rope_frequencies(D, base)
    positions = torch.arange(T)
    cos, sin = rope_cos_sin(positions, inv_freq)
    x = torch.randn(2, 4, T, D)  # (B, H, T, D)
    print(f"RoPE, D={D}, base={base:g}: x {tuple(x.shape)}, inv_freq {tuple(inv_freq.shape)}, "
          f"cos/sin {tuple(cos.shape)}")

    print("1. The rotation, two ways")
    ours = apply_rope(x, cos, sin)
    reference = apply_rope_complex(x, positions, inv_freq)
    diff = (ours - reference).abs().max().item()
    check("rotate_half form == complex multiply z * e^(j m theta)", diff <= 1e-5, f"max |diff| = {diff:.1e}")
    norms = (ours.norm(dim=-1) - x.norm(dim=-1)).abs().max().item()
    check("a rotation keeps every vector's norm", norms <= 1e-4, f"max |change| = {norms:.1e}")
    check("position 0 is the identity", torch.equal(ours[:, :, 0], x[:, :, 0]))

    print("2. Relative positions: q(m).k(n) depends only on m - n (fp64)")
    inv64 = rope_frequencies(D, base, dtype=torch.float64)
    q, k = torch.randn(D, dtype=torch.float64), torch.randn(D, dtype=torch.float64)
    spread = 0.0
    for offset in (0, 1, 7, 100):
        starts = torch.tensor([0, 13, 1000, 50_000], dtype=torch.float64)
        qm = rope_at(q.expand(len(starts), D), starts + offset, inv64)
        kn = rope_at(k.expand(len(starts), D), starts, inv64)
        scores = (qm * kn).sum(-1)
        spread = max(spread, (scores - scores[0]).abs().max().item())
        print(f"   offset {offset:>3}: q.k at n = {[int(s) for s in starts.tolist()]} -> "
              f"{', '.join(f'{s:+.6f}' for s in scores.tolist())}")
    check("same offset, same score, wherever the pair sits", spread <= 1e-8, f"max spread {spread:.1e}")
    far = rope_at(q, torch.tensor(0.0, dtype=torch.float64), inv64) @ rope_at(k, torch.tensor(0.0, dtype=torch.float64), inv64)
    near = q @ k
    check("offset 0 gives the plain dot product", abs(far.item() - near.item()) <= 1e-9)

    print("3. Layout: half-split (Qwen3, HF) versus interleaved (RoFormer, Meta's LLaMA code)")
    perm = half_split_to_interleaved(D)
    interleaved = apply_rope_interleaved(x[..., perm], positions, inv_freq)
    diff = (interleaved - ours[..., perm]).abs().max().item()
    check("interleaved(P x) == P half_split(x): same function up to a permutation", diff <= 1e-5,
          f"max |diff| = {diff:.1e}, P = {perm[:6].tolist()}...")
    wrong = apply_rope_interleaved(x, positions, inv_freq)
    q_h, k_h = ours[0, 0], ours[0, 1]  # two heads as query and key, half-split everywhere
    q_w, k_w = wrong[0, 0], wrong[0, 1]
    score_gap = ((q_w @ k_w.T) - (q_h @ k_h.T)).abs().max().item()
    check("the wrong layout on half-split weights gives different attention scores", score_gap > 1.0,
          f"max score difference {score_gap:.1f}")
    print("   That is why converting Meta's LLaMA weights to HF reorders the rows of q_proj and k_proj\n"
          "   inside each head by the inverse of P: [0, 2, 4, ..., 1, 3, 5, ...].")

    print("4. Precision: keep positions and angles in fp32")
    bf16_positions = torch.arange(4096).to(torch.bfloat16)
    distinct = bf16_positions.unique().numel()
    check("positions cast to bf16 collide", distinct < 4096, f"only {distinct} distinct values for 0..4095; "
          f"257 -> {torch.tensor(257).to(torch.bfloat16).item():g}")
    angle_error = (positions.float()[:, None] * inv_freq - positions.double()[:, None] * inv64).abs().max().item()
    print(f"   fp32 angle error up to position {T}: {angle_error:.1e} rad (fp64 reference)")

    print("5. Frequencies: pair i turns by theta_i = base^(-2i/D) radians per token")
    wavelengths = 2 * math.pi / inv64
    for i in sorted({0, 1, D // 8, D // 4, D // 2 - 1}):
        print(f"   pair {i:>3}: theta = {inv64[i].item():.3e}, one turn every {wavelengths[i].item():>12.1f} tokens")
    print("   Fast pairs resolve neighbours; slow pairs barely move and carry content over long distances.")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        for b in sorted({10_000.0, base}):
            left.plot(2 * math.pi / rope_frequencies(D, b, dtype=torch.float64), label=f"base {b:g}")
        left.set_yscale("log")
        left.set_xlabel("pair index i")
        left.set_ylabel("wavelength 2pi/theta_i (tokens)")
        left.set_title("RoPE rotation wavelengths")
        left.legend()
        image = right.imshow(cos[:, : D // 2].T.numpy(), aspect="auto", cmap="RdBu", origin="lower")
        right.set_xlabel("position m")
        right.set_ylabel("pair index i")
        right.set_title("cos(m theta_i)")
        fig.colorbar(image, ax=right)
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
