"""Where the time of a torch.compile'd decode step goes, for the tiny benchmark model on CPU.

Runs the generation engine (64-token prompt, greedy, EOS blocked) with ``model.decode_step``
compiled, profiles one whole generation with ``torch.profiler`` and splits each step into the
compiled call's Python-side overhead (Dynamo's guard check, the bytecode that gathers the graph's
inputs, Inductor's wrapper that launches the kernels, the compiled region itself) and the kernels
it launches (under ``cpp_wrapper`` the kernels are launched from C++, out of the profiler's sight,
so only the time per token compares). ``--variant`` tries Inductor settings that could lower the overhead:

    python benchmarks/profile_compiled_step.py                       # default torch.compile
    python benchmarks/profile_compiled_step.py --variant cpp_wrapper # C++ kernel launcher
    python benchmarks/profile_compiled_step.py --variant freezing    # weights folded in as constants
    python benchmarks/profile_compiled_step.py --variant chunk       # what the engine does: 4 greedy steps per call

``chunk`` is ``companion.generate.CompiledDecoder``'s default for a small model: four greedy steps
compiled as one graph under ``cpp_wrapper``, so the call's fixed cost is paid once per four tokens.
"""
from __future__ import annotations

import argparse

import torch
import torch._inductor.config as inductor
from bench_generate import TINY, prompts_for, run_ours

from companion.checkpoint import build_model
from companion.generate import CompiledDecoder

OVERHEAD_ROWS = {  # profiler row -> what it is
    "TorchDynamo Cache Lookup": "guard check",
    "Pregraph bytecode": "input gathering",
    "## Call CompiledFxGraph": "Inductor wrapper",
    "Torch-Compiled Region": "compiled region",
}
VARIANTS = ("default", "cpp_wrapper", "freezing", "chunk")


def profile(batch: int = 1, new_tokens: int = 128, variant: str = "default", runs: int = 3) -> dict:
    """Per-token wall time (median of ``runs``, prefill included) and the profiler's per-step split,
    in microseconds. The Inductor settings of ``variant`` hold only inside this call."""
    torch.manual_seed(0)
    model = build_model(TINY, dtype=torch.float32).eval()
    prompts = prompts_for(batch, TINY.vocab_size)  # bench_generate.py's prompts and engine call
    torch._dynamo.reset()  # each variant compiles afresh, under its own settings
    with inductor.patch(cpp_wrapper=variant == "cpp_wrapper", freezing=variant == "freezing"):
        step = CompiledDecoder(model, 4) if variant == "chunk" else torch.compile(model.decode_step, dynamic=True)
        run_ours(model, prompts, new_tokens, step)  # compiles
        seconds = sorted(run_ours(model, prompts, new_tokens, step)[0] for _ in range(runs))[runs // 2]
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            run_ours(model, prompts, new_tokens, step)
    steps = new_tokens - 1  # decode steps: the first token comes from the prefill
    overhead, kernels = {}, {}
    for row in prof.key_averages():
        label = next((v for k, v in OVERHEAD_ROWS.items() if row.key.startswith(k)), None)
        if label:
            overhead[label] = overhead.get(label, 0.0) + row.self_cpu_time_total / steps
        elif row.key in ("aten::mm", "aten::addmm", "aten::bmm") or "scaled_dot_product" in row.key:
            kernels[row.key] = kernels.get(row.key, 0.0) + row.self_cpu_time_total / steps
    return {"variant": variant, "batch": batch, "us_per_token": seconds / new_tokens * 1e6,
            "overhead_us": overhead, "products_and_attention_us": kernels}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variant", choices=VARIANTS, nargs="+", default=["default"])
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, tiny model, batch {args.batch}, "
          f"{args.new_tokens} new tokens (whole generation, prefill included, per token)")
    for variant in args.variant:
        result = profile(args.batch, args.new_tokens, variant, args.runs)
        overhead = result["overhead_us"]
        kernels = result["products_and_attention_us"]
        print(f"{variant}: {result['us_per_token']:.0f} us per token")
        print("  compiled call's own work per token: " + ", ".join(f"{k} {v:.0f} us" for k, v in overhead.items())
              + f"; total {sum(overhead.values()):.0f} us")
        print("  matrix products and attention per token (prefill's share included): "
              + ", ".join(f"{k} {v:.0f} us" for k, v in kernels.items()) + f"; total {sum(kernels.values()):.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
