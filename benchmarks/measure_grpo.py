"""Train the tiny model with GRPO, measure the gain, and ship the result as data/tiny-reasoner-grpo.

The start model is ``data/tiny-reasoner-habits`` in thinking mode (see ``START_MODEL``).

1. Train: ``python -m companion train-grpo`` with the settings in ``TRAIN_ARGS`` (the exact
   command is printed and written into the model card), timed by the wall clock from start to
   exit, model loading and the final save included.
2. Measure: ``python -m companion evaluate`` (greedy, with the prompt style the run trained with,
   ``cot`` unless ``--prompt-style`` says otherwise) on the first 500 problems of the validation
   and test splits, for the start model and the trained one.
3. Ship (``--ship``): the trained weights, tokenizer and generation config, the metrics log and
   its plot, ``report.json`` and a model card with the numbers, in ``data/tiny-reasoner-grpo``.

    python benchmarks/measure_grpo.py                        # train + measure into runs/grpo-tiny
    python benchmarks/measure_grpo.py --ship                 # ... and write data/tiny-reasoner-grpo
    python benchmarks/measure_grpo.py --run-dir runs/grpo-b --extra="--lr 5e-5"   # a variant

Settings were chosen on the validation split; the test split is measured once per finished run.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

# The tiny model with the habit that RL can change: its thinking mode mostly skips the thinking
# (data/tiny-reasoner-habits, chapter 1). The plain data/tiny-reasoner has no such habit, and GRPO in
# step-by-step mode left its greedy accuracy where it was (README).
START_MODEL = "data/tiny-reasoner-habits"
SHIP_DIR = Path("data/tiny-reasoner-grpo")
EVAL_PROBLEMS = 500
CHECK_PROBLEMS = 200  # tests/test_rl_shipped.py re-measures the first 200 test problems
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json")

# The recipe of the shipped run (chosen on the validation split).
TRAIN_ARGS = ["--model", START_MODEL, "--dataset", "arith", "--split", "train", "--algo", "grpo", "--beta", "0",
              "--steps", "200", "--prompts-per-step", "8", "--group-size", "8", "--max-new-tokens", "160",
              "--micro-batch", "64", "--lr", "5e-5", "--warmup-steps", "10", "--temperature", "1.0",
              "--prompt-style", "thinking", "--reward-weights", "correctness=1", "--log-kl", "--seed", "0",
              "--no-progress"]


def companion(*args: str) -> list[str]:
    return [sys.executable, "-m", "companion", *args]


def with_overrides(args: list[str], extra: list[str]) -> list[str]:
    """``args`` with the value of each ``--flag value`` pair in ``extra`` replaced (or appended).
    (Switches without a value, such as ``--log-kl``, cannot be overridden this way.)"""
    args = list(args)
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args


def flag_value(args: list[str], flag: str, default: str) -> str:
    return args[args.index(flag) + 1] if flag in args else default


def train(run_dir: Path, extra: list[str]) -> dict:
    train_args = with_overrides(TRAIN_ARGS, extra)
    command = ["python", "-m", "companion", "train-grpo", *train_args, "--out-dir", str(run_dir)]
    print("$", shlex.join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(companion(*command[3:]), check=True)
    seconds = time.perf_counter() - started
    record = {"command": shlex.join(command), "seconds": round(seconds, 1),
              "start_model": flag_value(train_args, "--model", START_MODEL),
              "prompt_style": flag_value(train_args, "--prompt-style", "cot")}
    (run_dir / "train.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"training took {seconds / 60:.1f} minutes", flush=True)
    return record


def accuracy_of(records_path: Path) -> dict:
    records = sorted((json.loads(line) for line in records_path.read_text().splitlines() if line.strip()),
                     key=lambda r: r["id"])  # the split's order, whatever order a resumed run wrote them in
    correct = [bool(r["correct"]) for r in records]
    return {"problems": len(records), "accuracy": sum(correct) / len(correct),
            f"first_{CHECK_PROBLEMS}": sum(correct[:CHECK_PROBLEMS]) / min(CHECK_PROBLEMS, len(correct)),
            "tokens_per_problem": sum(r["tokens"] for r in records) / len(records)}


def evaluate(model: str, split: str, out: Path, prompt_style: str) -> tuple[dict, str]:
    command = ["python", "-m", "companion", "evaluate", "--model", model, "--benchmark", "arith", "--split", split,
               "--prompt-style", prompt_style, "--limit", str(EVAL_PROBLEMS), "--out", str(out), "--fresh",
               "--no-progress"]
    print("$", shlex.join(command), flush=True)
    subprocess.run(companion(*command[3:]), check=True, stdout=subprocess.DEVNULL)
    result = accuracy_of(out)
    print(f"  {model} {split}: accuracy {result['accuracy']:.3f}", flush=True)
    return result, shlex.join(command)


def start_model_records(start_model: str, split: str, prompt_style: str) -> Path:
    """Where the start model's records go: one folder per version of its weights and prompt style,
    so that every run measured against the same start model shares them."""
    weights = Path(start_model) / "model.safetensors"
    stamp = f"{weights.stat().st_size}-{int(weights.stat().st_mtime)}"
    return Path("runs") / "grpo-start-model" / stamp / f"{split}-{prompt_style}.jsonl"


def measure(run_dir: Path, splits: tuple[str, ...], start_model: str, prompt_style: str) -> dict:
    folder = run_dir / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    results: dict = {"before": {}, "after": {}, "commands": {}}
    for split in splits:
        cached = start_model_records(start_model, split, prompt_style)
        if cached.exists() and accuracy_of(cached)["problems"] == EVAL_PROBLEMS:
            results["before"][split] = accuracy_of(cached)
            results["commands"][f"before/{split}"] = json.loads(cached.with_suffix(".command").read_text())
            print(f"  {start_model} {split}: accuracy {results['before'][split]['accuracy']:.3f} (measured before)")
        else:
            cached.parent.mkdir(parents=True, exist_ok=True)
            results["before"][split], command = evaluate(start_model, split, cached, prompt_style)
            cached.with_suffix(".command").write_text(json.dumps(command))
            results["commands"][f"before/{split}"] = command
        results["after"][split], results["commands"][f"after/{split}"] = evaluate(
            str(run_dir / "model"), split, folder / f"after_{split}.jsonl", prompt_style)
    (run_dir / "measured.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def training_summary(run_dir: Path) -> dict:
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    tail = log[-20:]
    median = sorted(r["step_time"] for r in log)[len(log) // 2]
    return {"steps": len(log), "first_20_steps_accuracy": sum(r["accuracy"] for r in log[:20]) / min(20, len(log)),
            "last_20_steps_accuracy": sum(r["accuracy"] for r in tail) / len(tail),
            "mean_step_seconds": sum(r["step_time"] for r in log) / len(log),
            "median_step_seconds": median, "slow_steps": sum(r["step_time"] > 3 * median for r in log)}


def reward_sentence(command: str) -> str:
    from companion.rl import GRPOConfig
    from companion.rl.cli import parse_weights

    given = flag_value(shlex.split(command), "--reward-weights", "")
    weights = parse_weights(given) if given else GRPOConfig().reward_weights
    others = [f"{weight:g} x {name}" for name, weight in weights.items() if name != "correctness"]
    return ("The reward is verifiable: 1 when the final `\\boxed{}` answer equals the gold answer, else 0"
            + (f", plus {' and '.join(others)}." if others else " (no format reward)."))


def card(report: dict) -> str:
    before, after = report["before"]["test"], report["after"]["test"]
    rows = [f"| {split} ({report['before'][split]['problems']} problems) | {report['before'][split]['accuracy']:.1%} "
            f"| {report['after'][split]['accuracy']:.1%} | {100 * (report['after'][split]['accuracy'] - report['before'][split]['accuracy']):+.1f} |"
            for split in ("validation", "test") if split in report["before"]]
    training = report["training"]
    return "\n".join([
        "---", "license: apache-2.0", "library_name: transformers", "pipeline_tag: text-generation",
        f"base_model: {report['start_model']}", "---", "",
        "# tiny-reasoner-grpo", "",
        f"`{report['start_model']}` after {training['steps']} steps of GRPO on the `arith` train split (chapter 6). "
        f"Prompts in the `{report['prompt_style']}` style. {reward_sentence(report['command'])} "
        + ("No KL penalty (beta 0); the start model is loaded only to log the KL to it (`--log-kl`)."
           if "--log-kl" in report["command"].split() else "No reference model (beta 0)."), "",
        "## Reproduce", "",
        "```", report["command"], "```", "",
        f"or `python benchmarks/measure_grpo.py --run-dir {report['command'].split('--out-dir ')[1].split()[0]} "
        "--ship` with the same settings, which runs that command, measures both models and writes this folder.", "",
        f"Training time: **{report['seconds'] / 60:.1f} minutes** of wall clock on a {report['machine']} "
        f"(start to exit, loading and saving included; {training['mean_step_seconds']:.2f} s per step on average, "
        f"median {training['median_step_seconds']:.2f} s; {training['slow_steps']} steps took over three times the "
        "median, when other jobs shared the machine).", "",
        f"## Greedy accuracy (`python -m companion evaluate`, `{report['prompt_style']}` prompt)", "",
        "| split | before | after | gain (points) |", "|---|---:|---:|---:|", *rows, "",
        f"First {CHECK_PROBLEMS} test problems (what `tests/test_rl_shipped.py` re-measures): "
        f"{report['after']['test'][f'first_{CHECK_PROBLEMS}']:.1%} after, "
        f"{report['before']['test'][f'first_{CHECK_PROBLEMS}']:.1%} before.", "",
        f"Sampled accuracy during training (temperature 1): {training['first_20_steps_accuracy']:.1%} over the first "
        f"20 steps, {training['last_20_steps_accuracy']:.1%} over the last 20.", "",
        *([] if after["accuracy"] - before["accuracy"] >= 0.10 else [
            f"This run does not reach chapter 6's target (at least +10 points of greedy test accuracy within 15 "
            f"minutes): test accuracy went from {before['accuracy']:.1%} to {after['accuracy']:.1%}.", ""]),
        "## Curves", "", "![GRPO metrics](metrics.png)", "",
        "`metrics.jsonl` holds every step's metrics (`python -m companion plot-log` draws them).", ""])


def ship(run_dir: Path, report: dict) -> Path:
    staging = SHIP_DIR.with_name(SHIP_DIR.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copy2(run_dir / "model" / name, staging / name)
    shutil.copy2(run_dir / "metrics.jsonl", staging / "metrics.jsonl")
    from companion.rl.metrics import plot_log

    plot_log(staging / "metrics.jsonl", staging / "metrics.png", smooth=0.9)
    (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (staging / "README.md").write_text(card(report))
    for path in staging.iterdir():
        path.chmod(0o644)
    staging.chmod(0o755)
    if SHIP_DIR.exists():
        shutil.rmtree(SHIP_DIR)
    staging.rename(SHIP_DIR)
    return SHIP_DIR


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/grpo-tiny")
    parser.add_argument("--extra", default="", help="train-grpo flags with values, replacing those of TRAIN_ARGS ('--lr 1e-4 --steps 50')")
    parser.add_argument("--skip-train", action="store_true", help="measure the finished run in --run-dir")
    parser.add_argument("--splits", default="validation,test", help="splits to measure")
    parser.add_argument("--ship", action="store_true", help=f"write {SHIP_DIR}")
    args = parser.parse_args()
    run_dir = Path(args.run_dir)
    if args.skip_train:
        record = json.loads((run_dir / "train.json").read_text())
    else:
        if run_dir.exists():
            raise SystemExit(f"{run_dir} exists; pass --skip-train to measure it, or pick another --run-dir")
        record = train(run_dir, shlex.split(args.extra))
    record.setdefault("start_model", START_MODEL)
    record.setdefault("prompt_style", "cot")
    measured = measure(run_dir, tuple(s for s in args.splits.split(",") if s), record["start_model"],
                       record["prompt_style"])
    report = {**record, **measured, "training": training_summary(run_dir),
              "machine": f"{platform.machine()} CPU with {__import__('os').cpu_count()} cores"}
    (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    for split in measured["before"]:
        b, a = measured["before"][split]["accuracy"], measured["after"][split]["accuracy"]
        print(f"{split}: {b:.3f} -> {a:.3f} ({100 * (a - b):+.1f} points)")
    print(f"training: {record['seconds'] / 60:.1f} minutes")
    if args.ship:
        print(f"shipped in {ship(run_dir, report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
