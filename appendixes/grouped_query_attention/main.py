"""Grouped-query attention demo: check the written-out attention against PyTorch's fused kernel
(enable_gqa=True) and against multi-head attention with repeated keys/values, and print what the
sharing saves in KV-cache memory.

    python appendixes/grouped_query_attention/main.py
    python appendixes/grouped_query_attention/main.py --heads 8 --kv-heads 2 --seq 128 --plot gqa.png

Exits non-zero if a check fails.
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from gqa import attention, attention_grouped, causal_mask, kv_cache_bytes, repeat_kv

FAILURES: list[str] = []
TOL = 1e-5


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {name}" + (f"  ({detail})" if detail else ""))
    if not ok:
        FAILURES.append(name)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=16, help="H, query heads")
    parser.add_argument("--kv-heads", type=int, default=8, help="K, key/value heads (divides H)")
    parser.add_argument("--seq", type=int, default=64, help="S, sequence length")
    parser.add_argument("--head-dim", type=int, default=64, help="D")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PATH", help="save a figure of KV-cache size versus K")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    B, H, K, S, D = args.batch, args.heads, args.kv_heads, args.seq, args.head_dim
    if H % K:
        parser.error(f"--kv-heads ({K}) must divide --heads ({H})")
    G = H // K

    q = torch.randn(B, H, S, D)
    k = torch.randn(B, K, S, D)
    v = torch.randn(B, K, S, D)
    print(f"GQA: q {tuple(q.shape)}, k/v {tuple(k.shape)}; group size G = H/K = {G} "
          f"(query head h reads kv head h // {G})")

    print("1. Causal self-attention over the whole sequence (prefill)")
    ours = attention(q, k, v)
    fused = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    check("== scaled_dot_product_attention(enable_gqa=True)", max_diff(ours, fused) <= TOL,
          f"max |diff| = {max_diff(ours, fused):.1e}")
    mha = F.scaled_dot_product_attention(q, repeat_kv(k, G), repeat_kv(v, G), is_causal=True)
    check("== multi-head attention on keys/values repeated G times", max_diff(ours, mha) <= TOL,
          f"max |diff| = {max_diff(ours, mha):.1e}")
    grouped = attention_grouped(q, k, v)
    check("== the grouped view that never copies keys/values", max_diff(ours, grouped) <= TOL,
          f"max |diff| = {max_diff(ours, grouped):.1e}")
    for h in sorted({0, G - 1, G, H - 1} & set(range(H))):
        single = F.scaled_dot_product_attention(q[:, h:h + 1], k[:, h // G:h // G + 1], v[:, h // G:h // G + 1],
                                                is_causal=True)
        if max_diff(ours[:, h:h + 1], single) > TOL:
            check(f"query head {h} uses kv head {h // G}", False)
            break
    else:
        check("each query head h attends with kv head h // G alone", True)

    print("2. The last T queries against all S keys (chunked prefill, one decode step)")
    for T in (1, min(5, S)):
        tail = attention(q[:, :, -T:], k, v)
        mask = causal_mask(T, S)
        fused_tail = F.scaled_dot_product_attention(q[:, :, -T:], k, v, attn_mask=mask, enable_gqa=True)
        check(f"T={T}: == fused kernel with a causal mask offset by S - T = {S - T}",
              max_diff(tail, fused_tail) <= TOL, f"max |diff| = {max_diff(tail, fused_tail):.1e}")
        check(f"T={T}: == the last {T} rows of the full computation", max_diff(tail, ours[:, :, -T:]) <= TOL)
    if S > 5:
        print("   Pitfall: is_causal=True with T < S aligns the mask to the top-left, not to the last T positions:")
        wrong = F.scaled_dot_product_attention(q[:, :, -5:], k, v, is_causal=True, enable_gqa=True)
        check("is_causal=True on a 5-query tail gives a different (wrong) answer", max_diff(wrong, ours[:, :, -5:]) > 1e-2)

    print("3. A padding mask (left padding of row 0)")
    pad = min(3, S - 1)
    valid = torch.ones(B, S, dtype=torch.bool)
    valid[0, :pad] = False
    mask = causal_mask(S, S)[None] & valid[:, None, :]  # (B, T, S)
    mask = mask | torch.eye(S, dtype=torch.bool)  # padded queries see themselves: no empty softmax row
    mask = mask[:, None]  # (B, 1, T, S)
    masked = attention(q, k, v, mask)
    fused_masked = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    check("== fused kernel with the same boolean mask", max_diff(masked, fused_masked) <= TOL)
    check("== grouped view with the same mask", max_diff(masked, attention_grouped(q, k, v, mask)) <= TOL)

    print("4. Pitfall: repeat versus repeat_interleave")
    if G > 1 and K > 1:
        tiled = F.scaled_dot_product_attention(q, k.repeat(1, G, 1, 1), v.repeat(1, G, 1, 1), is_causal=True)
        check("tiling kv heads ([kv0, kv1, kv0, kv1]) pairs query heads with the wrong keys",
              max_diff(tiled, ours) > 1e-2, f"max |diff| = {max_diff(tiled, ours):.2f}")
    else:
        print("   (needs K > 1 and G > 1 to show; run with e.g. --heads 8 --kv-heads 2)")

    print("5. The two extremes: MHA (K = H) and MQA (K = 1)")
    for kv_heads, name in ((H, "MHA"), (1, "MQA")):
        kk, vv = torch.randn(B, kv_heads, S, D), torch.randn(B, kv_heads, S, D)
        diff = max_diff(attention(q, kk, vv), F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=True))
        check(f"{name}, K = {kv_heads}", diff <= TOL, f"max |diff| = {diff:.1e}")

    print("6. What GQA buys: the KV cache (bf16, Qwen3-0.6B: 28 layers, head_dim 128, 16 query heads)")
    layers, head_dim, context = 28, 128, 40960
    sizes = {}
    for kv_heads in (16, 8, 4, 2, 1):
        per_token = kv_cache_bytes(layers, kv_heads, head_dim, 1)
        sizes[kv_heads] = kv_cache_bytes(layers, kv_heads, head_dim, context) / 2**30
        label = {16: "MHA", 8: "GQA, Qwen3-0.6B", 1: "MQA"}.get(kv_heads, "GQA")
        print(f"   K = {kv_heads:>2} ({label:<15}): {per_token / 1024:6.0f} KiB per token, "
              f"{sizes[kv_heads]:5.2f} GiB for {context} tokens")
    print("   Attention FLOPs do not change (every query head still scores every key); memory and the "
          "bandwidth to read it shrink by G.")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        heads = list(sizes)
        ax.bar([str(h) for h in heads], [sizes[h] for h in heads], color=["C1" if h == 8 else "C0" for h in heads])
        ax.set_xlabel("key/value heads K (16 query heads)")
        ax.set_ylabel(f"KV cache for {context} tokens (GiB, bf16)")
        ax.set_title("Qwen3-0.6B shape: KV-cache memory versus K")
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
