"""Generation speed: companion's engine against transformers' generate, same weights, one process.

For each case: a 64-token prompt, 128 new tokens, greedy, with EOS blocked (``min_new_tokens``) so
neither engine stops early. Runs alternate (ours, theirs, ours, theirs, ...) so that a burst of
load from elsewhere hits both, and the median of the runs is reported. Prints tokens per second,
the ratio, and each result as a fraction of the memory-bandwidth limit (all weights are read once
per decode step at batch 1, so bytes-per-step / bandwidth bounds the speed).

    python benchmarks/bench_generate.py                 # every case (several minutes on 2 cores)
    python benchmarks/bench_generate.py --cases tiny-b1 tiny-b16
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from companion.checkpoint import build_model, hf_to_ours
from companion.config import ModelConfig, preset
from companion.generate import SamplingParams, compiled_decode_step, generate_ids

TINY = ModelConfig(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
                   rope_theta=10000.0)
CASES = {  # name: (config, dtype, batch)
    "0.6b-fp32-b1": (preset("Qwen/Qwen3-0.6B"), torch.float32, 1),
    "0.6b-bf16-b1": (preset("Qwen/Qwen3-0.6B"), torch.bfloat16, 1),
    "0.6b-bf16-b8": (preset("Qwen/Qwen3-0.6B"), torch.bfloat16, 8),
    "tiny-b1": (TINY, torch.float32, 1),
    "tiny-b16": (TINY, torch.float32, 16),
}
PROMPT_LENGTHS_B8 = [64, 56, 48, 40, 64, 32, 60, 52]  # mixed lengths, left-padded


def measure_bandwidth(gib: float = 1.0, reps: int = 5) -> float:
    """Read bandwidth in bytes/s: the best of a few full passes over a large fp32 tensor."""
    x = torch.ones(int(gib * 2**30 / 4))
    x.sum()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best


def twin_models(config: ModelConfig, dtype):
    """A random transformers model and ours holding exactly the same weights."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    hf = Qwen3ForCausalLM._from_config(Qwen3Config(**config.to_hf_dict()), dtype=dtype).eval()
    ours = build_model(config, dtype=dtype)
    with torch.no_grad():
        for name, tensor in hf.state_dict().items():
            if name == "lm_head.weight" and config.tie_word_embeddings:
                continue
            ours.get_parameter(hf_to_ours(name)).copy_(tensor)
    return hf.eval(), ours.eval()


def prompts_for(batch: int, vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(1234)
    lengths = PROMPT_LENGTHS_B8 if batch == 8 else [64] * batch
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


def run_hf(model, prompts, new_tokens):
    length = max(map(len, prompts))
    ids = torch.zeros(len(prompts), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, length - len(p):] = torch.tensor(p)
        mask[row, length - len(p):] = 1
    with torch.inference_mode():
        t = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, pad_token_id=0, eos_token_id=1)
        seconds = time.perf_counter() - t
    assert out.shape[1] - length == new_tokens
    return seconds, out[:, length:]


def run_ours(model, prompts, new_tokens, decode_step=None):
    t = time.perf_counter()
    results = generate_ids(model, prompts, new_tokens, SamplingParams(), eos_ids=(1,), min_new_tokens=new_tokens,
                           decode_step=decode_step)
    seconds = time.perf_counter() - t
    assert all(len(tokens) == new_tokens for tokens, _, _ in results)
    return seconds, torch.tensor([tokens for tokens, _, _ in results])


def bench_case(name, runs, new_tokens, bandwidth, compile_step=False):
    config, dtype, batch = CASES[name]
    hf, ours = twin_models(config, dtype)
    prompts = prompts_for(batch, config.vocab_size)
    step = compiled_decode_step(ours) if compile_step else None
    run_hf(hf, prompts, 4), run_ours(ours, prompts, 4), run_ours(ours, prompts, 8, step)  # warm-up (and compile)
    hf_times, our_times = [], []
    for _ in range(runs):
        seconds, hf_tokens = run_hf(hf, prompts, new_tokens)
        hf_times.append(seconds)
        seconds, our_tokens = run_ours(ours, prompts, new_tokens, step)
        our_times.append(seconds)
    same = (hf_tokens == our_tokens).float().mean().item()
    tokens = batch * new_tokens
    hf_rate, our_rate = tokens / statistics.median(hf_times), tokens / statistics.median(our_times)
    weight_bytes = ours.num_parameters() * torch.finfo(dtype).bits // 8
    limit = bandwidth / weight_bytes * batch  # tokens/s if each decode step only read the weights once
    label = name + (" compiled" if compile_step else "")
    return dict(case=label, hf=hf_rate, ours=our_rate, ratio=our_rate / hf_rate, same_tokens=same,
                ours_of_limit=our_rate / limit, hf_of_limit=hf_rate / limit)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--compile", action="store_true", help="also measure with the decode step torch.compiled")
    args = parser.parse_args(argv)
    bandwidth = measure_bandwidth()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, read bandwidth {bandwidth / 1e9:.1f} GB/s")
    print(f"{'case':<14} {'transformers tok/s':>19} {'companion tok/s':>16} {'ratio':>6} {'same tokens':>12} "
          f"{'ours / bw limit':>16} {'hf / bw limit':>14}")
    for name, compile_step in [(n, c) for n in args.cases for c in ([False, True] if args.compile else [False])]:
        r = bench_case(name, args.runs, args.new_tokens, bandwidth, compile_step)
        print(f"{r['case']:<14} {r['hf']:>19.1f} {r['ours']:>16.1f} {r['ratio']:>5.2f}x {r['same_tokens']:>12.0%} "
              f"{r['ours_of_limit']:>16.0%} {r['hf_of_limit']:>14.0%}", flush=True)


if __name__ == "__main__":
    main()
