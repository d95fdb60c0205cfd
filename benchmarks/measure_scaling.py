"""Measure inference-time scaling on a model and write the results table (markdown + JSON).

Rows: greedy with the direct, the step-by-step and the thinking prompt, self-consistency at
several N (all samples, and with early stopping), best-of-n by mean log-prob and by the
heuristic, and pass@k (unbiased). Each row has its accuracy and mean generated tokens per problem.

The sampled rows all come from one pool of ``--pool`` samples per problem (step-by-step prompt,
one shared prefill per problem): the first N samples of the pool stand for a run with N samples,
and early stopping is replayed on them with exactly the rule of ``scaling.self_consistency``.
So every N is measured on the same samples, and nothing is sampled twice.

    python benchmarks/measure_scaling.py --model data/tiny-reasoner --limit 500
    python benchmarks/measure_scaling.py --model data/tiny-reasoner --limit 50 --pool 8 --ns 3 5 --ks 1 4 --no-sweep

Writes OUT_DIR/scaling.md, scaling.json, scaling_curves.png and (unless --no-sweep)
sampling_sweep.png.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

from companion import scaling
from companion.checkpoint import load_model
from companion.data import load_problems
from companion.prompts import build_prompt
from companion.scaling import RunSettings, choose_best, heuristic_scorer, logprob_scorer, mean_pass_at_k


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values)


GREEDY_ROWS = (("greedy", "direct"), ("cot", "cot"), ("cot", "thinking"))
GREEDY_NAMES = {"direct": "greedy, direct prompt", "cot": "greedy, step-by-step prompt",
                "thinking": "greedy, thinking prompt"}


def greedy_row(model, tokenizer, problems, method: str, style: str, args) -> tuple[dict, list[dict]]:
    settings = RunSettings(method, prompt_style=style, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    records = scaling.run_benchmark(model, tokenizer, problems, settings)
    return {"method": GREEDY_NAMES[style], "n": 1, "accuracy": mean(r["correct"] for r in records),
            "tokens": mean(r["tokens"] for r in records)}, records


def vote_analysis(greedy_records, pools, n: int) -> dict:
    """Where the vote of ``n`` samples and greedy step-by-step decoding part, and through how many
    different solution texts the right and the wrong answers are reached (answers that got at
    least two votes; 1.0 means every vote came through its own text, 1/votes a single text)."""
    outcomes = {"both right": 0, "greedy only": 0, "vote only": 0, "both wrong": 0}
    never_sampled = 0  # both wrong, and no sample right: no way of choosing among the samples wins these
    groups = []
    for record, pool in zip(greedy_records, pools):
        answers = scaling.answer_paths(pool[:n])  # best first: answers[0] is the vote's choice
        vote_right = bool(answers and answers[0].correct)
        key = ("both right" if vote_right else "greedy only") if record["correct"] else (
            "vote only" if vote_right else "both wrong")
        outcomes[key] += 1
        never_sampled += key == "both wrong" and not any(s.correct for s in pool[:n])
        groups += [g for g in answers if g.samples >= 2]
    paths = {}
    for label, right in (("right", True), ("wrong", False)):
        chosen = [g for g in groups if bool(g.correct) == right]
        paths[label] = {"groups": len(chosen),
                        "texts_per_vote": mean(g.distinct_texts / g.samples for g in chosen) if chosen else None}
    return {"n": n, "outcomes": outcomes, "never_sampled": never_sampled, "paths": paths}


def vote_analysis_text(analysis: dict) -> str:
    o, p = analysis["outcomes"], analysis["paths"]
    return (f"Greedy step-by-step against the vote of {analysis['n']}, problem by problem: both right "
            f"{o['both right']}, greedy only {o['greedy only']}, vote only {o['vote only']}, both wrong "
            f"{o['both wrong']} (on {analysis['never_sampled']} of these, none of the {analysis['n']} samples is "
            f"right). Answers with at least two of the {analysis['n']} votes: the right ones came "
            f"through {p['right']['texts_per_vote']:.2f} different texts per vote ({p['right']['groups']} answers), "
            f"the wrong ones through {p['wrong']['texts_per_vote']:.2f} ({p['wrong']['groups']} answers).\n")


def draw_pool(model, tokenizer, problems, args) -> list[list[scaling.Sample]]:
    prompts = [build_prompt(tokenizer, p.question, "cot") for p in problems]
    pools = scaling.sample_responses(model, tokenizer, prompts, args.pool, args.temperature, args.top_p, 0,
                                     args.max_new_tokens, args.seed, args.batch_size, progress=True)
    for problem, pool in zip(problems, pools):
        scaling.grade_samples(pool, problem.answer)
    return pools


def pool_rows(pools, args) -> list[dict]:
    rows = []
    for n in args.ns:
        for early in (False, True):
            results = [scaling.self_consistency_from_samples(pool, n, early) for pool in pools]
            rows.append({"method": "self-consistency" + (" (early stop)" if early else ""), "n": n,
                         "accuracy": mean(bool(r.correct) for r in results), "tokens": mean(r.num_tokens for r in results)})
    for name, scorer in (("log-prob", logprob_scorer), ("heuristic", heuristic_scorer)):
        for n in args.best_of:
            chosen = [choose_best("", pool[:n], scorer) for pool in pools]
            rows.append({"method": f"best-of-n by {name}", "n": n, "accuracy": mean(bool(c.correct) for c in chosen),
                         "tokens": mean(c.num_tokens for c in chosen)})
    per_sample = mean(s.num_tokens for pool in pools for s in pool)
    counts = [(len(pool), sum(bool(s.correct) for s in pool)) for pool in pools]
    for k in args.ks:
        rows.append({"method": f"pass@k (unbiased, from {args.pool})", "n": k, "accuracy": mean_pass_at_k(counts, k),
                     "tokens": k * per_sample})
    return rows


def markdown(rows, meta) -> str:
    lines = [f"Model `{meta['model']}`, {meta['benchmark']} {meta['split']}, {meta['problems']} problems; "
             f"sampling T={meta['temperature']}, top-p={meta['top_p']}, pool of {meta['pool']} samples per problem; "
             f"commit {meta['commit']}, {meta['seconds']:.0f} s on {meta['machine']}.", "",
             "| method | N / k | accuracy | tokens per problem |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['n']} | {100 * r['accuracy']:.1f}% | {r['tokens']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped tiny model)")
    parser.add_argument("--benchmark", default="arith", choices=("arith", "gsm8k", "math500"))
    parser.add_argument("--split", default=None)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--pool", type=int, default=20, help="samples per problem")
    parser.add_argument("--ns", type=int, nargs="+", default=[3, 5, 10, 20], help="self-consistency sizes")
    parser.add_argument("--best-of", type=int, nargs="+", default=[10], help="best-of-n sizes")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 8, 16], help="pass@k values")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep-limit", type=int, default=100, help="problems in the temperature/top-p sweep")
    parser.add_argument("--sweep-temperatures", type=float, nargs="+", default=[0.2, 0.5, 0.7, 1.0, 1.3])
    parser.add_argument("--sweep-top-ps", type=float, nargs="+", default=[1.0, 0.9, 0.7])
    parser.add_argument("--sweep-n", type=int, default=8, help="samples per problem and setting in the sweep")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args(argv)
    if max(args.ns + args.best_of + args.ks) > args.pool:
        parser.error("every N and k must be at most --pool")

    torch.manual_seed(args.seed)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model, tokenizer = load_model(args.model, device="cpu")
    problems = load_problems(args.benchmark, split=args.split, limit=args.limit)
    timings = {}
    rows = []
    greedy_records = {}
    for method, style in GREEDY_ROWS:
        t = time.perf_counter()
        row, greedy_records[style] = greedy_row(model, tokenizer, problems, method, style, args)
        rows.append(row)
        timings[f"greedy {style}"] = time.perf_counter() - t
        print(rows[-1], flush=True)
    t = time.perf_counter()
    pools = draw_pool(model, tokenizer, problems, args)
    timings["pool"] = time.perf_counter() - t
    rows += pool_rows(pools, args)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = scaling.scaling_curves(pools, sorted(set([1] + args.ns)))
    greedy_points = {r["method"]: (r["tokens"], r["accuracy"]) for r in rows[:len(GREEDY_ROWS)]}
    ax = scaling.plot_scaling_curves(points, greedy_points)
    ax.set_title(f"{args.benchmark} {args.split or 'test'}, {len(problems)} problems: accuracy against compute")
    ax.figure.savefig(out / "scaling_curves.png", dpi=120, bbox_inches="tight")
    plt.close(ax.figure)
    sweep = []
    if not args.no_sweep:
        t = time.perf_counter()
        sweep = scaling.sampling_sweep(model, tokenizer, problems[:args.sweep_limit], args.sweep_temperatures,
                                       args.sweep_top_ps, n=args.sweep_n, max_new_tokens=args.max_new_tokens, seed=args.seed,
                                       batch_size=args.batch_size, progress=True)
        timings["sweep"] = time.perf_counter() - t
        axes = scaling.plot_sampling_sweep(sweep)
        axes[0].figure.savefig(out / "sampling_sweep.png", dpi=120, bbox_inches="tight")
        plt.close(axes[0].figure)

    meta = {"model": args.model or "data/tiny-reasoner", "benchmark": args.benchmark,
            "split": args.split or "test", "problems": len(problems), "temperature": args.temperature,
            "top_p": args.top_p, "pool": args.pool, "seed": args.seed, "max_new_tokens": args.max_new_tokens,
            "sweep_problems": len(problems[:args.sweep_limit]) if sweep else 0,
            "commit": git_commit(), "seconds": time.perf_counter() - started, "timings": timings,
            "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"}
    by = {(r["method"], r["n"]): r for r in rows}
    if ("self-consistency", 10) in by:
        greedy_cot = by[(GREEDY_NAMES["cot"], 1)]["accuracy"]
        meta["sc10_minus_greedy_cot_points"] = 100 * (by[("self-consistency", 10)]["accuracy"] - greedy_cot)
    analysis = vote_analysis(greedy_records["cot"], pools, min(10, args.pool))
    results = {"meta": meta, "rows": rows, "curves": [vars(p) for p in points], "sweep": sweep,
               "vote_analysis": analysis}
    (out / "scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(rows, meta) + "\n" + vote_analysis_text(analysis)
    (out / "scaling.md").write_text(table)
    print(table)
    if "sc10_minus_greedy_cot_points" in meta:
        print(f"self-consistency N=10 minus greedy step-by-step: {meta['sc10_minus_greedy_cot_points']:+.1f} points")
    return results


if __name__ == "__main__":
    main()
