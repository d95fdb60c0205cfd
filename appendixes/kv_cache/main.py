"""KV-cache demo: greedy decoding with the cache gives the same tokens and logits as recomputing the
whole sequence at every step; chunked prefill equals one-shot prefill; forgetting the position
offset breaks it; and the cache's speed-up is measured at a few lengths.

    python appendixes/kv_cache/main.py
    python appendixes/kv_cache/main.py --lengths 64 128 256 512 --plot kv_cache.png

Exits non-zero if a check fails (the timings are measurements, not checks).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from kv_cache import KVCache, TinyLM, generate

FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {name}" + (f"  ({detail})" if detail else ""))
    if not ok:
        FAILURES.append(name)


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - begin)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--prompt-len", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated in the equality checks")
    parser.add_argument("--lengths", type=int, nargs="*", default=[32, 64, 128, 256],
                        help="generation lengths to time (none: skip the timing)")
    parser.add_argument("--repeats", type=int, default=2, help="timing runs per length (best is kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 gives steadier timings)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PATH", help="save the time and speed-up versus length")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    head_dim = args.hidden // args.heads
    model = TinyLM(vocab_size=args.vocab, hidden=args.hidden, layers=args.layers, heads=args.heads,
                   kv_heads=args.kv_heads, head_dim=head_dim, intermediate=3 * args.hidden).eval()
    prompt = torch.randint(0, args.vocab, (1, args.prompt_len))
    P, N = args.prompt_len, args.new_tokens
    cache = model.new_cache(1, P + N)
    print(f"TinyLM: {args.layers} layers, hidden {args.hidden}, {args.heads} query / {args.kv_heads} kv heads of "
          f"{head_dim}; cache keys/values {tuple(cache.keys.shape)} each, {cache.nbytes() / 1024:.0f} KiB in fp32")

    print(f"1. Greedy decoding of {N} tokens after a {P}-token prompt")
    cached_tokens, cached_logits = generate(model, prompt, N, use_cache=True)
    full_tokens, full_logits = generate(model, prompt, N, use_cache=False)
    check("cached decoding produces the same tokens as full recomputation",
          torch.equal(cached_tokens, full_tokens), f"{cached_tokens[0, P:P + 12].tolist()}...")
    diff = max((a - b).abs().max().item() for a, b in zip(cached_logits, full_logits))
    check("and the same logits at every step", diff <= 1e-4, f"max |diff| = {diff:.1e}")
    computed_cached = P + (N - 1)
    computed_full = sum(P + t for t in range(N))
    print(f"   token positions pushed through the model: {computed_cached} with the cache, {computed_full} without")

    print("2. Position bookkeeping")
    with torch.no_grad():
        one = model.new_cache(1, P)
        whole = model(prompt, cache=one, start=0)
        two = model.new_cache(1, P)
        split = max(1, P // 3)
        model(prompt[:, :split], cache=two, start=0)
        rest = model(prompt[:, split:], cache=two, start=split)  # the second chunk starts where the first ended
        diff = (rest - whole[:, split:]).abs().max().item()
        check(f"prefill in two chunks ({split} + {P - split}) == prefill at once", diff <= 1e-5,
              f"max |diff| = {diff:.1e}")
        check("and leaves the same keys in the cache", torch.allclose(one.keys, two.keys, atol=1e-6))
    _, wrong_logits = generate(model, prompt, N, use_cache=True, forget_positions=True)
    diff = max((a - b).abs().max().item() for a, b in zip(wrong_logits[1:], full_logits[1:]))
    check("bug reproduced: decoding every new token at position 0 changes the logits", diff > 1e-3,
          f"max |diff| = {diff:.2f}")
    small = KVCache(1, 1, 1, 4, 2)
    k = torch.ones(1, 1, 3, 2)
    keys, _ = small.update(0, k, k, start=0)
    check("update returns only the filled positions", keys.shape[2] == 3, f"shape {tuple(keys.shape)}")
    try:
        small.update(0, k, k, start=3)
        check("writing past the capacity raises", False)
    except IndexError as error:
        check("writing past the capacity raises", True, str(error))

    timings = []
    if args.lengths:
        print(f"3. Speed: generate L tokens after a {P}-token prompt, best of {args.repeats}, {args.threads} thread(s)")
        print(f"   {'L':>6} {'no cache (s)':>13} {'cache (s)':>10} {'speed-up':>9}")
        for length in args.lengths:
            full_s = timed(lambda: generate(model, prompt, length, use_cache=False), args.repeats)
            cached_s = timed(lambda: generate(model, prompt, length, use_cache=True), args.repeats)
            timings.append((length, full_s, cached_s))
            print(f"   {length:>6} {full_s:>13.3f} {cached_s:>10.3f} {full_s / cached_s:>8.1f}x")
        print("   Without the cache each step redoes all earlier positions (quadratic total work); with it each\n"
              "   step does one position plus a read of the cache (attention over S keys), so the gap grows with L.")

    if args.plot and timings:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        lengths = [t[0] for t in timings]
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        left.plot(lengths, [t[1] for t in timings], marker="o", label="no cache")
        left.plot(lengths, [t[2] for t in timings], marker="o", label="KV cache")
        left.set_xlabel("generated tokens L")
        left.set_ylabel("seconds")
        left.set_title("greedy generation time")
        left.legend()
        right.plot(lengths, [t[1] / t[2] for t in timings], marker="o", color="C2")
        right.set_xlabel("generated tokens L")
        right.set_ylabel("speed-up (no cache / cache)")
        right.set_title("KV-cache speed-up")
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
