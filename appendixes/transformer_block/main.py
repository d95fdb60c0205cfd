"""Transformer block demo: recompute one Qwen3 block by hand, step by step with plain tensor
operations and a loop over heads, print every intermediate shape, and check the module against it.
Then show causality, the residual path, and that only relative positions matter.

    python appendixes/transformer_block/main.py
    python appendixes/transformer_block/main.py --hidden 128 --heads 8 --kv-heads 2 --seq 24 --plot block.png

Exits non-zero if a check fails.
"""
from __future__ import annotations

import argparse
import math
import sys

import torch

from block import BlockConfig, TransformerBlock, rope_cos_sin

FAILURES: list[str] = []
TOL = 1e-5


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {name}" + (f"  ({detail})" if detail else ""))
    if not ok:
        FAILURES.append(name)


def show(name: str, tensor: torch.Tensor, verbose: bool) -> None:
    if verbose:
        print(f"   {name:<44} {tuple(tensor.shape)}")


def hand_forward(block: TransformerBlock, cfg: BlockConfig, x: torch.Tensor, positions: torch.Tensor,
                 verbose: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's forward pass from its raw weights. Returns the output and the attention weights."""
    P = {name: p.detach() for name, p in block.named_parameters()}
    B, T, C = x.shape
    H, K, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    G, eps = H // K, cfg.rms_norm_eps

    def rmsnorm(v, weight):
        return weight * (v / torch.sqrt((v * v).mean(dim=-1, keepdim=True) + eps))

    def rotate(v):  # v (B, T, heads, D), position m: pair (i, i + D/2) turned by m * theta_i
        theta = cfg.rope_theta ** (-torch.arange(0, D, 2).float() / D)  # (D/2,)
        angle = positions.float()[:, None] * theta  # (T, D/2)
        c, s = angle.cos()[None, :, None], angle.sin()[None, :, None]  # (1, T, 1, D/2)
        first, second = v[..., : D // 2], v[..., D // 2:]
        return torch.cat((first * c - second * s, second * c + first * s), dim=-1)

    show("x", x, verbose)
    h = rmsnorm(x, P["attn_norm.weight"])
    show("h = attn_norm(x)", h, verbose)
    q = (h @ P["attn.q_proj.weight"].T).view(B, T, H, D)
    k = (h @ P["attn.k_proj.weight"].T).view(B, T, K, D)
    v = (h @ P["attn.v_proj.weight"].T).view(B, T, K, D)
    if cfg.qkv_bias:
        q = q + P["attn.q_proj.bias"].view(H, D)
        k = k + P["attn.k_proj.bias"].view(K, D)
        v = v + P["attn.v_proj.bias"].view(K, D)
    show("q = q_proj(h), split into H heads", q, verbose)
    show("k, v = k_proj(h), v_proj(h), K heads each", k, verbose)
    if cfg.qk_norm:
        q, k = rmsnorm(q, P["attn.q_norm.weight"]), rmsnorm(k, P["attn.k_norm.weight"])
        show("QK-norm: RMSNorm over each head's D values", q, verbose)
    q, k = rotate(q), rotate(k)
    show("RoPE on q and k (not v)", k, verbose)

    future = torch.arange(T)[None, :] > torch.arange(T)[:, None]  # (T, T): key j is after query t
    heads, weights = [], []
    for head in range(H):
        kv = head // G  # grouped-query attention: G query heads share one key/value head
        scores = q[:, :, head] @ k[:, :, kv].transpose(1, 2) / math.sqrt(D)  # (B, T, T)
        scores = scores.masked_fill(future, float("-inf"))
        w = torch.softmax(scores, dim=-1)
        weights.append(w)
        heads.append(w @ v[:, :, kv])  # (B, T, D)
    show("scores / weights of one head", weights[0], verbose)
    attn = torch.cat(heads, dim=-1)  # (B, T, H*D): heads side by side, in order
    show("heads concatenated", attn, verbose)
    x = x + attn @ P["attn.o_proj.weight"].T
    show("x + o_proj(attention)", x, verbose)

    h = rmsnorm(x, P["mlp_norm.weight"])
    gate, up = h @ P["mlp.gate_proj.weight"].T, h @ P["mlp.up_proj.weight"].T
    show("gate(h), up(h)", gate, verbose)
    mlp = (gate * torch.sigmoid(gate) * up) @ P["mlp.down_proj.weight"].T
    out = x + mlp
    show("x + down(silu(gate) * up)", out, verbose)
    return out, torch.stack(weights, dim=1)  # (B, H, T, T)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=64, help="C")
    parser.add_argument("--intermediate", type=int, default=192, help="F")
    parser.add_argument("--heads", type=int, default=4, help="H")
    parser.add_argument("--kv-heads", type=int, default=2, help="K")
    parser.add_argument("--head-dim", type=int, default=32, help="D")
    parser.add_argument("--seq", type=int, default=12, help="T")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--no-qk-norm", action="store_true", help="drop QK-norm (as Qwen2.5)")
    parser.add_argument("--qkv-bias", action="store_true", help="add q/k/v biases (as Qwen2.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PATH", help="save the attention weights of every head")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.heads % args.kv_heads:
        parser.error("--kv-heads must divide --heads")

    cfg = BlockConfig(hidden_size=args.hidden, intermediate_size=args.intermediate, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, head_dim=args.head_dim, qk_norm=not args.no_qk_norm,
                      qkv_bias=args.qkv_bias)
    block = TransformerBlock(cfg)
    with torch.no_grad():  # non-trivial norm gains and biases, so that a misplaced one shows
        for name, p in block.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    B, T = args.batch, args.seq
    x = torch.randn(B, T, cfg.hidden_size)
    positions = torch.arange(T)
    cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta)  # (T, D), broadcast over B and heads

    print(f"Qwen3 block: {cfg}")
    n_params = sum(p.numel() for p in block.parameters())
    print(f"{n_params:,} parameters")
    print("1. The forward pass by hand")
    with torch.no_grad():
        expected, weights = hand_forward(block, cfg, x, positions)
        out = block(x, cos, sin)
    diff = (out - expected).abs().max().item()
    check("module == hand-computed forward", diff <= TOL, f"max |diff| = {diff:.1e}")

    print("2. Properties")
    with torch.no_grad():
        changed = x.clone()
        changed[:, -1] += 3.0
        out2 = block(changed, cos, sin)
        earlier = (out2[:, :-1] - out[:, :-1]).abs().max().item()
        check("causal: changing the last token leaves all earlier outputs unchanged", earlier <= 1e-6,
              f"max |diff| = {earlier:.1e}; last token moved by {(out2[:, -1] - out[:, -1]).abs().max():.2f}")
        shift = 1000
        cos_s, sin_s = rope_cos_sin(positions + shift, cfg.head_dim, cfg.rope_theta)
        moved = (block(x, cos_s, sin_s) - out).abs().max().item()
        check(f"only relative positions matter: positions + {shift} give the same output", moved <= 1e-3,
              f"max |diff| = {moved:.1e}, fp32 angle rounding")
        silent = TransformerBlock(cfg)
        silent.load_state_dict(block.state_dict())
        silent.attn.o_proj.weight.zero_()
        silent.mlp.down_proj.weight.zero_()
        check("residual path: with o_proj and down_proj zero the block is the identity",
              torch.equal(silent(x, cos, sin), x))
        rows = weights.sum(-1)
        check("each attention row is a probability distribution over past tokens",
              torch.allclose(rows, torch.ones_like(rows), atol=1e-5) and bool((weights.triu(1) == 0).all()))
    C, H, K, D, Fd = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size
    formula = C * D * (2 * H + 2 * K) + 3 * C * Fd + 2 * C + (2 * D if cfg.qk_norm else 0) + \
        ((H + 2 * K) * D if cfg.qkv_bias else 0)
    check("parameters = C*D*(2H + 2K) + 3*C*F + norms (+ biases)", n_params == formula, f"{formula:,}")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, H, figsize=(2.6 * H, 2.8), squeeze=False)
        for head, ax in enumerate(axes[0]):
            ax.imshow(weights[0, head].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"head {head} (kv {head // (H // K)})")
            ax.set_xlabel("key")
            ax.set_ylabel("query")
        fig.suptitle("attention weights of a random block (causal)")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"saved {args.plot}")

    if FAILURES:
        print(f"FAILED: {', '.join(FAILURES)}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
