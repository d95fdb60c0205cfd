"""Where the time of one decode step goes: ``Qwen3Model.decode_step`` timed part by part, in the loop.

Small ops timed alone run from a warm cache and look cheap; inside the generation loop each one
follows reads of other weights, so this script replays ``decode_step`` line by line for a few
hundred steps (as the engine calls it, with a growing KV cache) and adds up the wall time of
each part. The replay's logits are checked against ``model.decode_step`` itself, so the
profile cannot drift from the code it describes.

    python benchmarks/profile_decode_step.py                     # tiny config, batch 1 and 16
    python benchmarks/profile_decode_step.py --batch 1 --steps 400

Also prints the batch-1 floor: the bytes of weights a step reads over the measured read
bandwidth, and what a given multiple of transformers' speed would demand of it.
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

from bench_generate import TINY, measure_bandwidth
from companion.checkpoint import build_model
from companion.model import KVCache, apply_rope_signed, linear_one_step, rms_norm

WEIGHT_READS = ("q/k/v matmul", "o matmul", "gate/up matmul", "down matmul", "lm head")


@torch.inference_mode()
def profile(model, batch: int, steps: int, prompt: int = 64, warmup: int = 50) -> tuple[dict, float]:
    """Mean seconds per step of each part of the decode step, and the largest logit difference
    between the replay and ``model.decode_step``."""
    c = model.config
    B, H, K, D = batch, c.num_attention_heads, c.num_key_value_heads, c.head_dim
    cache = KVCache(c, B, prompt + warmup + steps + 1, dtype=model.dtype)
    model(torch.zeros(B, prompt, dtype=torch.long), torch.arange(prompt).expand(B, prompt), None, cache, start=0)
    weights = model.decode_weights()
    tokens = torch.randint(0, c.vocab_size, (B,), generator=torch.Generator().manual_seed(0))
    spent: dict[str, float] = defaultdict(float)
    clock = time.perf_counter

    def timed(part, fn):
        t = clock()
        out = fn()
        spent[part] += clock() - t
        return out

    worst = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            spent.clear()
        start = prompt + step
        positions = torch.full((B,), start)
        t0 = clock()
        x = timed("embedding", lambda: model.embed(tokens))
        cos, signed_sin = timed("rope angles", lambda: model.decode_rope(positions, x.dtype))
        for layer, (block, w) in enumerate(zip(model.blocks, weights)):
            h = timed("rms norms", lambda: rms_norm(x, block.attn_norm.weight, block.attn_norm.eps))
            qkv = timed("q/k/v matmul", lambda: w.qkv_of(h).view(B, H + 2 * K, D))
            qk, v = qkv[:, : H + K], qkv[:, H + K:]
            if w.qk_norm is not None:
                qk = timed("rms norms", lambda: rms_norm(qk, w.qk_norm, c.rms_norm_eps))
            qk = timed("rope rotation", lambda: apply_rope_signed(qk, cos, signed_sin))
            keys, values = timed("cache write", lambda: cache.append_one(layer, qk[:, H:], v, start))
            out = timed("attention", lambda: F.scaled_dot_product_attention(qk[:, :H].view(B, K, H // K, D), keys,
                                                                             values))
            attn = timed("o matmul", lambda: linear_one_step(out.view(B, H * D), block.attn.o_proj.weight))
            x = timed("residual adds", lambda: x + attn)
            h = timed("rms norms", lambda: rms_norm(x, block.mlp_norm.weight, block.mlp_norm.eps))
            gate, up = timed("gate/up matmul", lambda: w.gate_up_of(h))
            act = timed("silu * up", lambda: F.silu(gate) * up)
            down = timed("down matmul", lambda: linear_one_step(act, block.mlp.down_proj.weight))
            x = timed("residual adds", lambda: x + down)
        h = timed("rms norms", lambda: rms_norm(x, model.final_norm.weight, model.final_norm.eps))
        logits = timed("lm head", lambda: linear_one_step(h, model.lm_head.weight))
        spent["total"] += clock() - t0
        if step % 97 == 0:  # the replay must be the real decode step (it rewrites the same cache slot)
            reference = model.decode_step(tokens, positions, None, cache, start=start, weights=weights)
            worst = max(worst, float((reference - logits).abs().max()))
        tokens = logits.argmax(dim=-1)
    return {part: seconds / steps for part, seconds in spent.items()}, worst


VIEWS = {"aten::view", "aten::slice", "aten::select", "aten::as_strided", "aten::unsqueeze", "aten::t",
         "aten::transpose", "aten::unflatten", "aten::expand", "aten::alias", "aten::split", "aten::chunk",
         "aten::narrow", "aten::flatten", "aten::_unsafe_view", "aten::reshape", "aten::squeeze"}
BIG = {"aten::linear", "aten::mm", "aten::matmul", "aten::mv", "aten::scaled_dot_product_attention"}


@torch.inference_mode()
def count_operations(model) -> dict[str, int]:
    """Top-level ATen operations of one batch-1 decode step: matrix products and attention, the
    other kernels, and views (which launch no kernel)."""
    from torch.profiler import profile as torch_profile

    cache = KVCache(model.config, 1, 16, dtype=model.dtype)
    model(torch.zeros(1, 8, dtype=torch.long), torch.arange(8)[None], None, cache, start=0)
    weights = model.decode_weights()
    with torch_profile() as recorded:
        model.decode_step(torch.zeros(1, dtype=torch.long), torch.tensor([8]), None, cache, start=8, weights=weights)
    names = [event.name for event in recorded.events() if event.cpu_parent is None]
    big = sum(name in BIG for name in names)
    views = sum(name in VIEWS for name in names)
    return {"matmul/attention": big, "other kernels": len(names) - big - views, "views": views}


@torch.inference_mode()
def timed_alone(fn, repeats: int = 3000) -> float:
    """Seconds per call of ``fn`` in a tight loop: warm caches, nothing else in between."""
    for _ in range(100):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hf-tokens-per-second", type=float, default=None,
                        help="transformers' batch-1 speed (from bench_generate.py), to say what a multiple demands")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(TINY, dtype=torch.float32).eval()
    bandwidth = measure_bandwidth()
    weight_bytes = model.num_parameters() * 4
    print(f"torch {torch.__version__}, {args.threads} threads; tiny config, {weight_bytes / 1e6:.1f} MB of fp32 "
          f"weights; read bandwidth {bandwidth / 1e9:.1f} GB/s")
    for batch in args.batch:
        parts, worst = profile(model, batch, args.steps)
        assert worst < 1e-5, f"the replay parted from model.decode_step by {worst}"
        total = parts.pop("total")
        print(f"\nbatch {batch}: {total * 1e6:.0f} us per step ({batch / total:.0f} tok/s), replay = decode_step "
              f"within {worst:.1e}")
        for part, seconds in sorted(parts.items(), key=lambda item: -item[1]):
            print(f"  {part:16s} {seconds * 1e6:7.1f} us  {seconds / total:6.1%}")
        reads = sum(parts.get(p, 0.0) for p in WEIGHT_READS)
        other = total - reads - parts.get("attention", 0.0)
        print(f"  weight-reading matmuls {reads * 1e6:.0f} us ({weight_bytes / reads / 1e9:.1f} GB/s), attention "
              f"{parts.get('attention', 0.0) * 1e6:.0f} us, everything else {other * 1e6:.0f} us")
    print(f"\noperations of one decode step: {count_operations(model)}")
    x, gain = torch.randn(1, TINY.hidden_size), torch.ones(TINY.hidden_size)
    print(f"timed alone, batch 1: one small kernel (x + x) {timed_alone(lambda: x + x) * 1e6:.2f} us, "
          f"one rms_norm {timed_alone(lambda: rms_norm(x, gain, 1e-6)) * 1e6:.1f} us")
    floor = weight_bytes / bandwidth
    print(f"\nbatch-1 floor: {floor * 1e6:.0f} us per token to read the weights once, at most "
          f"{1 / floor:.0f} tok/s")
    if args.hf_tokens_per_second:
        for multiple in (2, 3):
            need = multiple * args.hf_tokens_per_second
            print(f"  {multiple}x transformers = {need:.0f} tok/s = {1e6 / need:.0f} us per token, "
                  f"{need * floor:.0%} of the bandwidth limit")


if __name__ == "__main__":
    main()
