"""The GRPO family, measured: each preset, and each single switch added to plain GRPO, trained from
the same tiny model, on the same prompts in the same order, for the same number of prompts.

Every run starts from ``--model`` (the shipped tiny model by default) and trains on the arithmetic
training split; the prompt order depends only on the seed, so runs with the same seed see the same
prompts. The budget is the number of prompts drawn (``--prompts``): dynamic sampling, which draws
extra prompts to replace groups without signal, makes fewer updates within it. All runs use one
constant learning rate, two optimizer updates per batch of rollouts (so half of the updates are
off-policy and the clip ranges matter) and a reference model loaded only to log the KL to the start
model (``log_kl``), so the KL, entropy and length curves of every run are measured the same way.

Recorded over training (per step): reward, training accuracy, response length, entropy, KL to the
start model, clipped fractions, groups drawn and dropped. Greedy accuracy on the first
``--eval-problems`` problems of the test split at the start, halfway and at the end.

Writes ``ablation.json`` (everything), ``ablation.md`` (a table with the mean and the spread over
seeds) and ``ablation.png`` (curves) to ``--out``; an interrupted run continues where it stopped.

    python benchmarks/ablate_grpo.py                                  # the full ablation (about 17 min, 2 CPU cores)
    python benchmarks/ablate_grpo.py --sweep-lr 3e-5,1e-4 --prompts 64 --eval-problems 100   # choose the lr

The default learning rate, 3e-5, is the one of ``--sweep-lr 3e-5,1e-4 --prompts 64 --eval-problems 100``
with the best validation accuracy at the end (``results/ablation_lr_sweep.json``); larger rates
moved the model more but lowered its validation accuracy within such short runs.
    python benchmarks/ablate_grpo.py --only grpo,dapo --seeds 0 --prompts 16 --eval-problems 16 --out /tmp/abl
    python benchmarks/ablate_grpo.py --report                         # redraw table and plot from the JSON
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from companion.checkpoint import load_model
from companion.data import load_problems
from companion.evaluate import evaluate_problems
from companion.rl import GRPOConfig, GRPOTrainer

RESULTS = Path(__file__).resolve().parent / "results"

# Shared by every run: what fits the tiny model on a CPU in a couple of minutes per run.
COMMON = dict(prompts_per_step=8, group_size=8, max_new_tokens=160, micro_batch=32, minibatches=2, warmup_steps=0,
              min_lr_ratio=1.0, temperature=1.0, log_kl=True)

# name -> (preset, fields changed on top of it, what it is in words). The presets run with every
# seed; each single switch is added to plain GRPO and runs with the first seed.
PRESET_RUNS = {
    "grpo": ("grpo", {}, "GRPO: sequence mean, group std, clip 0.2, KL 0.04"),
    "dr_grpo": ("dr_grpo", {}, "Dr. GRPO: token sum / L, no std, no KL"),
    "dapo": ("dapo", {}, "DAPO: token mean, clip-higher, dynamic sampling, overlong shaping and masking, no KL"),
    "gspo": ("gspo", {}, "GSPO: sequence ratio clipped to [1-3e-4, 1+4e-4], no KL"),
}
SWITCH_RUNS = {
    "grpo+token_mean": ("grpo", dict(loss_type="dapo"), "loss: token mean over the step (DAPO)"),
    "grpo+constant_norm": ("grpo", dict(loss_type="dr_grpo"), "loss: token sum / max_new_tokens (Dr. GRPO)"),
    "grpo+no_std": ("grpo", dict(scale_rewards="none"), "advantages not divided by a std (Dr. GRPO)"),
    "grpo+batch_std": ("grpo", dict(scale_rewards="batch"), "advantages divided by the batch std"),
    "grpo+clip_higher": ("grpo", dict(clip_eps_high=0.28), "clip-higher: eps_high 0.28"),
    "grpo+dynamic_sampling": ("grpo", dict(dynamic_sampling=True), "drop zero-spread groups, draw more"),
    "grpo+overlong_penalty": ("grpo", dict(overlong_cache=-1), "soft overlong punishment (last quarter of the tokens)"),
    "grpo+mask_truncated": ("grpo", dict(mask_truncated=True), "truncated completions leave the loss"),
    "grpo-kl": ("grpo", dict(beta=0.0), "no KL term (beta 0)"),
    "grpo+sequence_ratio": ("grpo", dict(importance_level="sequence", clip_eps_low=3e-4, clip_eps_high=4e-4),
                            "GSPO's sequence ratio and clip range"),
}
CURVES = (("reward", "reward"), ("completions/mean_length", "length"), ("entropy", "entropy"), ("kl", "kl"),
          ("accuracy", "train_accuracy"), ("clip_ratio/region_mean", "clipped"),
          ("completions/clipped_ratio", "truncated"), ("frac_reward_zero_std", "zero_spread"),
          ("dynamic_sampling/groups_drawn", "groups_drawn"), ("dynamic_sampling/groups_dropped", "groups_dropped"),
          ("skipped_update", "skipped_update"), ("step_time", "step_time"))


def greedy_accuracy(model, tokenizer, problems, max_new_tokens: int) -> float:
    report = evaluate_problems(model, tokenizer, problems, batch_size=50, max_new_tokens=max_new_tokens,
                               progress=False, temperature=0.0)
    return report.accuracy


def train_run(name: str, seed: int, lr: float, budget: int, train, evaluation, model_path, max_new_tokens: int,
              variants: dict, start_accuracy: float | None) -> dict:
    """One run: ``budget`` prompts drawn, greedy evaluations at the start (given), halfway and at the end."""
    algo, changes, _ = variants[name]
    torch.manual_seed(seed)
    model, tokenizer = load_model(model_path, device="cpu", dtype="fp32")
    config = GRPOConfig.from_algo(algo, **{**COMMON, "max_new_tokens": max_new_tokens, **changes, "lr": lr,
                                           "seed": seed, "steps": math.ceil(budget / COMMON["prompts_per_step"])})
    trainer = GRPOTrainer(model, tokenizer, train, config, verbose=False)
    started = time.perf_counter()
    evals = [] if start_accuracy is None else [{"prompts_seen": 0, "accuracy": start_accuracy}]
    if not evals:
        evals.append({"prompts_seen": 0, "accuracy": greedy_accuracy(model, tokenizer, evaluation, max_new_tokens)})
    history, seen, halfway_done = [], 0, False
    while seen < budget:
        # dynamic sampling draws whole rounds of prompts: never more rounds than the budget has left
        config.max_draws = max(1, min(GRPOConfig.max_draws, (budget - seen) // config.prompts_per_step))
        metrics = trainer.train_step()
        drawn = int(metrics.get("dynamic_sampling/groups_drawn", config.prompts_per_step))
        seen += drawn
        row = {"step": trainer.step, "prompts_seen": seen}
        row.update({short: metrics[key] for key, short in CURVES if key in metrics})
        history.append(row)
        print(f"  {name} seed {seed} step {trainer.step}: prompts {seen}/{budget} reward {metrics['reward']:.3f} "
              f"acc {metrics.get('accuracy', float('nan')):.2f} len {metrics['completions/mean_length']:.0f} "
              f"ent {metrics.get('entropy', float('nan')):.3f} kl {metrics.get('kl', float('nan')):.4f} "
              f"({metrics['step_time']:.1f} s)", flush=True)
        if not halfway_done and seen >= budget / 2 and seen < budget:
            halfway_done = True
            evals.append({"prompts_seen": seen, "accuracy": greedy_accuracy(model, tokenizer, evaluation, max_new_tokens)})
    evals.append({"prompts_seen": seen, "accuracy": greedy_accuracy(model, tokenizer, evaluation, max_new_tokens)})
    return {"name": name, "seed": seed, "algo": algo, "changes": changes, "lr": lr, "history": history, "evals": evals,
            "updates": sum(0 if row.get("skipped_update") else config.inner_epochs * config.minibatches
                           for row in history), "seconds": time.perf_counter() - started}


# ---- summaries -----------------------------------------------------------------------------------------

def tail_mean(history: list[dict], key: str, fraction: float = 1 / 3) -> float | None:
    """Mean of ``key`` over the last ``fraction`` of the steps (short runs are noisy step to step)."""
    values = [row[key] for row in history if key in row and not (isinstance(row[key], float) and math.isnan(row[key]))]
    if not values:
        return None
    count = max(1, round(len(values) * fraction))
    return sum(values[-count:]) / count


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "values": values,
            "std": statistics.stdev(values) if len(values) > 1 else None}


def summarize(runs: list[dict], variants: dict) -> list[dict]:
    rows = []
    for name, (_, changes, label) in variants.items():
        mine = sorted((r for r in runs if r["name"] == name), key=lambda r: r["seed"])
        if not mine:
            continue
        row = {"name": name, "label": label, "kind": "preset" if name in PRESET_RUNS else "switch",
               "seeds": [r["seed"] for r in mine], "start_accuracy": mine[0]["evals"][0]["accuracy"],
               "test_accuracy": spread([r["evals"][-1]["accuracy"] for r in mine]),
               "updates": spread([r["updates"] for r in mine])}
        for key in ("reward", "length", "entropy", "kl", "train_accuracy", "clipped", "truncated"):
            values = [v for v in (tail_mean(r["history"], key) for r in mine) if v is not None]
            if values:
                row[key] = spread(values)
        dropped = [sum(h.get("groups_dropped", 0) for h in r["history"]) for r in mine]
        drawn = [sum(h.get("groups_drawn", 0) for h in r["history"]) for r in mine]
        if any(drawn):
            row["groups_dropped_fraction"] = spread([d / n for d, n in zip(dropped, drawn)])
        rows.append(row)
    return rows


def _cell(stats: dict | None, fmt: str) -> str:
    if stats is None:
        return "-"
    if len(stats["values"]) == 1:
        return format(stats["mean"], fmt)
    return f"{stats['mean']:{fmt}} ({stats['min']:{fmt}}–{stats['max']:{fmt}})"


def markdown(result: dict) -> str:
    settings, rows = result["settings"], result["summary"]
    n = settings["eval_problems"]
    start = result["start_accuracy"]
    standard_error = math.sqrt(max(start * (1 - start), 1e-9) / n)
    grpo = next((r for r in rows if r["name"] == "grpo"), None)
    lines = [
        f"Tiny model `{settings['model']}`, {settings['prompts']} training prompts per run "
        f"({settings['prompts_per_step']} prompts x {settings['group_size']} completions per step, "
        f"<= {settings['max_new_tokens']} tokens, 2 updates per step, lr {settings['lr']:g} constant). "
        f"Test accuracy: greedy, first {n} problems of the arith test split "
        f"(start {start:.3f}, one standard error of a {n}-problem accuracy about {standard_error:.3f}). "
        "Presets: mean over seeds with (min–max); single switches added to plain GRPO: one seed. "
        "Reward, length, entropy and KL: mean over the last third of the steps. Groups dropped: the share "
        "of drawn groups that dynamic sampling discarded.",
        "",
        "| run | what it changes | seeds | test acc end | Δ vs start | train reward | length | entropy | KL | updates "
        "| groups dropped |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = {k: (v - r["start_accuracy"] if k in ("mean", "min", "max") else v) for k, v in r["test_accuracy"].items()}
        delta["values"] = [v - r["start_accuracy"] for v in r["test_accuracy"]["values"]]
        lines.append(f"| {r['name']} | {r['label']} | {len(r['seeds'])} | {_cell(r['test_accuracy'], '.3f')} | "
                     f"{_cell(delta, '+.3f')} | {_cell(r.get('reward'), '.3f')} | {_cell(r.get('length'), '.0f')} | "
                     f"{_cell(r.get('entropy'), '.3f')} | {_cell(r.get('kl'), '.4f')} | {_cell(r['updates'], '.0f')} | "
                     f"{_cell(r.get('groups_dropped_fraction'), '.2f')} |")
    lines.append("")
    if grpo is not None and len(grpo["seeds"]) > 1:
        gap = grpo["test_accuracy"]["max"] - grpo["test_accuracy"]["min"]
        lines.append(f"Plain GRPO's end accuracy spans {gap:.3f} across its {len(grpo['seeds'])} seeds. "
                     "A difference smaller than the seed spread (or than two standard errors) is not a win: "
                     "it is what another seed would give.")
    else:
        lines.append("A difference smaller than the spread across seeds (or than two standard errors) is not a win.")
    return "\n".join(lines) + "\n"


# ---- plot ----------------------------------------------------------------------------------------------

def _moving_average(values: list[float], window: int = 3) -> list[float]:
    return [statistics.fmean(values[max(0, i - window + 1):i + 1]) for i in range(len(values))]


def plot(result: dict, path: Path) -> None:
    import matplotlib
    import numpy

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("test accuracy (greedy)", None), ("reward", "reward"), ("response length", "length"),
              ("entropy", "entropy"), ("KL to the start model", "kl"))
    fig, axes = plt.subplots(2, len(panels), figsize=(4 * len(panels), 7.5), sharex=True)
    colors = plt.get_cmap("tab10").colors
    for row, names in enumerate((list(PRESET_RUNS), ["grpo", *SWITCH_RUNS])):
        for index, name in enumerate(names):
            runs = [r for r in result["runs"] if r["name"] == name]
            if row == 1:
                runs = [r for r in runs if r["seed"] == result["settings"]["seeds"][0]]
            if not runs:
                continue
            color = "black" if row == 1 and name == "grpo" else colors[index % len(colors)]
            for ax, (title, key) in zip(axes[row], panels):
                if key is None:
                    points = [([e["prompts_seen"] for e in r["evals"]], [e["accuracy"] for e in r["evals"]])
                              for r in runs]
                else:
                    points = [([h["prompts_seen"] for h in r["history"]],
                               _moving_average([h.get(key, float("nan")) for h in r["history"]])) for r in runs]
                # seeds of a dynamic-sampling run step at different prompt counts: compare them on one grid
                xs = sorted({x for run_xs, _ in points for x in run_xs})
                ys = [list(numpy.interp(xs, run_xs, run_ys)) for run_xs, run_ys in points]
                mean = [statistics.fmean(col) for col in zip(*ys)]
                ax.plot(xs, mean, color=color, lw=2.2 if color == "black" else 1.4,
                        marker="o" if key is None else None, label=name)
                if len(ys) > 1:
                    ax.fill_between(xs, [min(c) for c in zip(*ys)], [max(c) for c in zip(*ys)], color=color, alpha=0.15)
                ax.set_title(title + ("" if key is None else " (3-step mean)"), fontsize=10)
    axes[0][0].set_ylabel("presets: mean over seeds,\nband = min–max")
    axes[1][0].set_ylabel("single switches on GRPO\n(first seed; black = GRPO)")
    for ax in axes[1]:
        ax.set_xlabel("prompts seen")
    axes[0][-1].legend(fontsize=8)
    axes[1][-1].legend(fontsize=7, ncol=1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main ----------------------------------------------------------------------------------------------

def plan_runs(only: list[str] | None, seeds: list[int]) -> list[tuple[str, int]]:
    plan = [(name, seed) for name in PRESET_RUNS for seed in seeds]
    plan += [(name, seeds[0]) for name in SWITCH_RUNS]
    if only:
        unknown = set(only) - set(PRESET_RUNS) - set(SWITCH_RUNS)
        if unknown:
            raise SystemExit(f"unknown runs {sorted(unknown)}; choose from {', '.join([*PRESET_RUNS, *SWITCH_RUNS])}")
        plan = [(n, s) for n, s in plan if n in only]
    return plan


def sweep_lr(args) -> None:
    """Plain GRPO at each learning rate, scored on the validation split: the rate that moves the model."""
    rates = [float(x) for x in args.sweep_lr.split(",")]
    train = load_problems("arith", "train")
    evaluation = load_problems("arith", "validation", limit=args.eval_problems)
    model, tokenizer = load_model(args.model, device="cpu", dtype="fp32")
    start = greedy_accuracy(model, tokenizer, evaluation, args.max_new_tokens)
    del model
    rows = []
    for lr in rates:
        run = train_run("grpo", args.seeds[0], lr, args.prompts, train, evaluation, args.model, args.max_new_tokens,
                        PRESET_RUNS, start)
        rows.append({"lr": lr, "validation_accuracy": [e["accuracy"] for e in run["evals"]],
                     "reward_first": run["history"][0]["reward"], "reward_last": tail_mean(run["history"], "reward"),
                     "kl_last": tail_mean(run["history"], "kl"), "entropy_last": tail_mean(run["history"], "entropy"),
                     "seconds": run["seconds"]})
        print(f"lr {lr:g}: validation accuracy {' -> '.join(f'{a:.3f}' for a in rows[-1]['validation_accuracy'])}, "
              f"reward {rows[-1]['reward_first']:.3f} -> {rows[-1]['reward_last']:.3f}, KL {rows[-1]['kl_last']:.4f} "
              f"({run['seconds']:.0f} s)", flush=True)
    out = Path(args.out) / "ablation_lr_sweep.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model or "data/tiny-reasoner", "prompts": args.prompts,
                               "eval_problems": args.eval_problems, "split": "validation", "runs": rows}, indent=1))
    print(f"wrote {out}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="start model (default: the shipped tiny model)")
    p.add_argument("--prompts", type=int, default=96, help="training prompts drawn per run (the compute budget)")
    p.add_argument("--seeds", default="0,1", help="comma-separated; presets run with each, switches with the first")
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--max-new-tokens", type=int, default=COMMON["max_new_tokens"])
    p.add_argument("--eval-problems", type=int, default=200, help="first N problems of the test split")
    p.add_argument("--only", default=None, help="comma-separated run names (default: all)")
    p.add_argument("--sweep-lr", default=None, help="comma-separated learning rates: sweep on validation instead")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--report", action="store_true", help="only rewrite the table and the plot from the JSON")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if args.prompts < COMMON["prompts_per_step"]:
        raise SystemExit(f"--prompts must be at least one step ({COMMON['prompts_per_step']})")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sweep_lr:
        sweep_lr(args)
        return 0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        result = json.loads((out / "ablation.json").read_text())
        (out / "ablation.md").write_text(markdown(result))
        plot(result, out / "ablation.png")
        print(markdown(result))
        return 0
    settings = {"model": args.model or "data/tiny-reasoner", "prompts": args.prompts, "seeds": args.seeds, "lr": args.lr,
                "max_new_tokens": args.max_new_tokens, "eval_problems": args.eval_problems,
                "prompts_per_step": COMMON["prompts_per_step"], "group_size": COMMON["group_size"], "common": COMMON}
    path = out / "ablation.json"
    previous = json.loads(path.read_text()) if path.is_file() else None
    resumable = previous is not None and previous.get("settings") == settings
    runs = previous["runs"] if resumable else []
    train = load_problems("arith", "train")
    evaluation = load_problems("arith", "test", limit=args.eval_problems)
    if resumable:
        start_accuracy = previous["start_accuracy"]
    else:
        model, tokenizer = load_model(args.model, device="cpu", dtype="fp32")
        start_accuracy = greedy_accuracy(model, tokenizer, evaluation, args.max_new_tokens)
        del model
    print(f"start model: greedy accuracy {start_accuracy:.3f} on {len(evaluation)} test problems", flush=True)
    variants = {**PRESET_RUNS, **SWITCH_RUNS}
    plan = plan_runs(args.only.split(",") if args.only else None, args.seeds)
    from tqdm.auto import tqdm

    for name, seed in tqdm(plan, desc="ablation", unit="run", file=sys.stdout):
        if any(r["name"] == name and r["seed"] == seed for r in runs):
            continue
        run = train_run(name, seed, args.lr, args.prompts, train, evaluation, args.model, args.max_new_tokens,
                        variants, start_accuracy)
        runs.append(run)
        accuracies = " -> ".join(format(e["accuracy"], ".3f") for e in run["evals"])
        print(f"{name} seed {seed}: test accuracy {accuracies} in {run['seconds']:.0f} s", flush=True)
        result = {"settings": settings, "start_accuracy": start_accuracy, "runs": runs,
                  "summary": summarize(runs, variants), "command": "python benchmarks/ablate_grpo.py " + " ".join(
                      sys.argv[1:] if argv is None else argv)}
        path.write_text(json.dumps(result, indent=1))  # after every run: an interruption loses one run at most
    result = {"settings": settings, "start_accuracy": start_accuracy, "runs": runs, "summary": summarize(runs, variants),
              "command": "python benchmarks/ablate_grpo.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    path.write_text(json.dumps(result, indent=1))
    (out / "ablation.md").write_text(markdown(result))
    plot(result, out / "ablation.png")
    print(markdown(result))
    print(f"wrote {path}, {out / 'ablation.md'}, {out / 'ablation.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
