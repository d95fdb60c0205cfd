"""Self-consistency's shared prefill against independent generations of the same prompt.

Self-consistency draws N samples of one prompt. ``generate(..., num_samples=N)`` runs the prompt
through the model once and copies its keys and values to the N samples; the naive way is N
copies of the prompt, each prefilled on its own. Both then decode the same N rows, so the
difference is the prefill, which grows with the prompt: a long-ish prompt (512 tokens here)
makes it visible.

Three ways to get N samples, timed in alternation (a burst of load from elsewhere hits all):

- shared:      one prompt, ``num_samples=N`` (what ``companion.scaling`` does);
- independent: N copies of the prompt in one batch (N prefills, same decode batch);
- sequential:  N separate calls of one sample each (N prefills, N decode loops; ``--sequential``).

The ratio printed last is independent / shared (above 1: sharing is cheaper).
Sampling is at temperature 0.7, top-p 0.9 with EOS blocked, so every row decodes the same number
of tokens. The model has the tiny model's architecture (random weights unless ``--model``).

    python benchmarks/bench_self_consistency.py
    python benchmarks/bench_self_consistency.py --prompt-tokens 1024 --new-tokens 32 --n 20 --sequential
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from companion.checkpoint import load_model
from companion.config import ModelConfig
from companion.generate import SamplingParams, generate_ids
from companion.model import Qwen3Model

# The shipped tiny model's shape (companion.tiny.Recipe) with a 2,048-token vocabulary.
TINY_SHAPE = ModelConfig(vocab_size=2048, hidden_size=256, intermediate_size=768, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=64, rope_theta=10_000.0,
                         max_position_embeddings=4096)


def make_model(path: str | None) -> Qwen3Model:
    if path:
        return load_model(path, device="cpu", dtype="fp32", tokenizer=False)[0]
    return Qwen3Model(TINY_SHAPE).init_weights(seed=0).eval()


def run(model, prompt: list[int], n: int, new_tokens: int, way: str, eos: int) -> float:
    """Seconds to draw ``n`` samples of ``prompt`` one ``way``."""
    params = SamplingParams(temperature=0.7, top_p=0.9)
    g = torch.Generator().manual_seed(0)
    common = dict(max_new_tokens=new_tokens, params=params, eos_ids=(eos,), generator=g, min_new_tokens=new_tokens)
    started = time.perf_counter()
    if way == "shared":
        out = generate_ids(model, [prompt], num_samples=n, **common)
    elif way == "independent":
        out = generate_ids(model, [prompt] * n, **common)
    else:
        out = [row for _ in range(n) for row in generate_ids(model, [prompt], **common)]
    seconds = time.perf_counter() - started
    assert len(out) == n and all(len(tokens) == new_tokens for tokens, _, _ in out)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: random weights, tiny-model shape)")
    parser.add_argument("--n", type=int, default=10, help="samples per prompt")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sequential", action="store_true", help="also time N separate calls (slow)")
    parser.add_argument("--out", default=None, help="also write the settings, times and ratios to this JSON file")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 is steadier on a machine shared with other jobs)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = make_model(args.model)
    vocab = model.config.vocab_size
    prompt = torch.randint(0, vocab - 1, (args.prompt_tokens,), generator=torch.Generator().manual_seed(1)).tolist()
    eos = vocab - 1  # never sampled: EOS is blocked until the last token
    ways = ["shared", "independent"] + (["sequential"] if args.sequential else [])
    for way in ways:  # warm-up
        run(model, prompt[:16], 2, 2, way, eos)
    times = {way: [] for way in ways}
    for _ in range(args.repeats):
        for way in ways:
            times[way].append(run(model, prompt, args.n, args.new_tokens, way, eos))
    medians = {way: statistics.median(t) for way, t in times.items()}
    print(f"{args.n} samples of one {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens each, "
          f"{model.num_parameters() / 1e6:.1f}M parameters, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    for way in ways:
        print(f"  {way:<12} {medians[way]:7.3f} s")
    if "sequential" in medians:
        print(f"sequential / shared: {medians['sequential'] / medians['shared']:.2f}x")
    print(f"independent / shared: {medians['independent'] / medians['shared']:.2f}x")
    if args.out:
        report = {"model": args.model or "random weights, tiny-model shape", "n": args.n,
                  "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "repeats": args.repeats,
                  "parameters": model.num_parameters(), "threads": torch.get_num_threads(),
                  "machine": f"{platform.machine()} CPU, torch {torch.__version__}",
                  "times": times, "median_seconds": medians,
                  "ratios": {f"{way} / shared": medians[way] / medians["shared"] for way in ways if way != "shared"}}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
