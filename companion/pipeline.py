"""The main job: every technique of the chapters applied to one model and measured on the same
held-out problems, ending with a table and a report.

    python -m companion pipeline                                            # tiny model with habits, arith, CPU
    python -m companion pipeline --model Qwen/Qwen3-0.6B --benchmark gsm8k  # the real thing, on a GPU

Stages, each on the same test problems:

1. the base model answering at once (``direct`` prompt, greedy);
2. chain of thought (``cot`` prompt, greedy);
3. thinking mode (the Qwen3 chat template with thinking on, greedy);
4. self-consistency (N chain-of-thought samples, majority vote);
5. self-refinement (draft, review, keep a revision only when it scores better);
6. GRPO training of the model on the benchmark's training split (verifier rewards), with the
   prompt style of the profile (``thinking`` for the tiny model, whose thinking mode often skips
   the work: that habit is what a short RL run can change);
7. the GRPO-trained model, chain of thought and thinking mode, greedy.

The output folder gets one JSONL file of records per stage, the GRPO run (metrics, checkpoints,
final model), ``summary.json``, ``accuracy.png`` and ``report.md``. With ``--resume`` a stopped
pipeline continues: finished stages are read back, evaluations resume where they stopped and
GRPO continues from its last checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from companion.hub import HABITS_MODEL

# Per-benchmark defaults: what fits the tiny model on a CPU in minutes (arith), or a 0.6B model on
# one GPU in about an hour (gsm8k, math500). Every value can be overridden on the command line.
# arith: the tiny model with habits (its thinking mode mostly skips the thinking; chapter 1), 200 test
# problems per stage; GRPO with the settings of benchmarks/measure_grpo.py (the shipped run: thinking
# prompts, correctness reward only), so that the whole pipeline takes a few minutes on a 2-core CPU
# (README has the measured table).
PROFILES = {
    "arith": dict(model=HABITS_MODEL, limit=200, max_new_tokens=192, batch_size=64, sc_n=8, refine_rounds=1,
                  train_dataset="arith",
                  grpo=dict(steps=200, prompts_per_step=8, group_size=8, max_new_tokens=160, micro_batch=64,
                            lr=5e-5, beta=0.0, warmup_steps=10, temperature=1.0, prompt_style="thinking",
                            reward_weights={"correctness": 1.0})),
    "gsm8k": dict(limit=None, max_new_tokens=768, batch_size=64, sc_n=8, refine_rounds=1, train_dataset="gsm8k",
                  grpo=dict(steps=200, prompts_per_step=16, group_size=8, max_new_tokens=512, micro_batch=16,
                            lr=1e-6, beta=0.04, warmup_steps=10, temperature=1.0)),
    "math500": dict(limit=None, max_new_tokens=1024, batch_size=64, sc_n=8, refine_rounds=1, train_dataset="math",
                    grpo=dict(steps=200, prompts_per_step=16, group_size=8, max_new_tokens=768, micro_batch=16,
                              lr=1e-6, beta=0.04, warmup_steps=10, temperature=1.0)),
}
STAGES = ("direct", "cot", "thinking", "self-consistency", "refine", "grpo", "grpo-cot", "grpo-thinking")


@dataclass
class StageResult:
    name: str
    label: str
    accuracy: float
    problems: int
    tokens_per_problem: float
    seconds: float
    strict_accuracy: float | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class PipelineSettings:
    model: str | None = None
    benchmark: str = "arith"
    split: str = "test"
    limit: int | None = 200
    max_new_tokens: int = 192
    batch_size: int = 64
    sc_n: int = 8
    sc_temperature: float = 0.7
    refine_rounds: int = 1
    train_dataset: str = "arith"
    train_limit: int | None = None
    grpo: dict = field(default_factory=dict)  # GRPOConfig fields
    stages: tuple = STAGES
    out_dir: str = "runs/pipeline"
    device: str | None = None
    seed: int = 0
    progress: bool = True

    @classmethod
    def for_benchmark(cls, benchmark: str, **overrides) -> PipelineSettings:
        profile = dict(PROFILES[benchmark])
        grpo = {**profile.pop("grpo"), **overrides.pop("grpo", {})}
        return cls(benchmark=benchmark, grpo=grpo, **{**profile, **overrides})


# ---- stages ----------------------------------------------------------------------------------------------

def _evaluate(model, tokenizer, problems, style: str, settings: PipelineSettings, path: Path):
    from companion.evaluate import evaluate_problems

    report = evaluate_problems(model, tokenizer, problems, prompt_style=style, batch_size=settings.batch_size,
                               max_new_tokens=settings.max_new_tokens, out_path=path, progress=settings.progress)
    tokens = sum(r["tokens"] for r in report.records) / max(1, len(report.records))
    return report.accuracy, report.strict_accuracy, tokens


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _self_consistency(model, tokenizer, problems, settings: PipelineSettings, path: Path):
    from companion.scaling import RunSettings, run_benchmark, summarize

    records = _read_jsonl(path)
    if len(records) != len(problems):  # not finished: run it again from the start
        run = RunSettings(method="self-consistency", n=settings.sc_n, temperature=settings.sc_temperature,
                          prompt_style="cot", max_new_tokens=settings.max_new_tokens,
                          batch_size=settings.batch_size, seed=settings.seed)
        with path.open("w") as out:
            records = run_benchmark(model, tokenizer, problems, run, out, progress=settings.progress)
    summary = summarize(records)
    return summary["accuracy"], summary["tokens_per_problem"], summary


def _refine(model, tokenizer, problems, settings: PipelineSettings, path: Path):
    from companion.refine import run_problems, summarize

    records = _read_jsonl(path)
    if len(records) != len(problems):
        records = []
        with path.open("w") as out:
            for start in range(0, len(problems), settings.batch_size):
                new = run_problems(model, tokenizer, problems[start:start + settings.batch_size],
                                   settings.refine_rounds, max_new_tokens=settings.max_new_tokens,
                                   batch_size=settings.batch_size, seed=settings.seed)
                out.writelines(json.dumps(r) + "\n" for r in new)
                records += new
    summary = summarize(records)
    return summary["accuracy"], summary["tokens_per_problem"], summary


def _grpo(model, tokenizer, settings: PipelineSettings, folder: Path):
    """Train in place (or resume, or read back a finished run); returns the trained model."""
    from companion.checkpoint import load_model, save_model
    from companion.rl import GRPOConfig, GRPOTrainer, checkpointing
    from companion.rl.cli import load_problems as load_train

    final = folder / "model"
    if (final / "model.safetensors").exists() or (final / "model.safetensors.index.json").exists():
        return load_model(final, device=settings.device, dtype="fp32")[0], None
    problems = load_train(settings.train_dataset, "train", settings.train_limit)
    if checkpointing.latest_checkpoint(folder) is not None:
        trainer = GRPOTrainer.resume(folder, problems, device=settings.device, dtype="fp32")
    else:
        config = GRPOConfig.from_algo(settings.grpo.get("algo", "grpo"), seed=settings.seed,
                                      **{k: v for k, v in settings.grpo.items() if k != "algo"})
        trainer = GRPOTrainer(model, tokenizer, problems, config, out_dir=folder)
    print(trainer.config.describe())
    history = trainer.train(progress=settings.progress)
    trainer.save_checkpoint()
    save_model(trainer.model, trainer.tokenizer, final)
    return trainer.model, history


# ---- the pipeline --------------------------------------------------------------------------------------------

def run_pipeline(settings: PipelineSettings) -> list[StageResult]:
    from companion.checkpoint import load_model
    from companion.data import load_problems

    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(dataclasses.asdict(settings), indent=2) + "\n")
    problems = load_problems(settings.benchmark, settings.split, limit=settings.limit)
    model, tokenizer = load_model(settings.model, device=settings.device, dtype="fp32")
    print(f"pipeline: {model_label(settings)} on {settings.benchmark}/{settings.split} "
          f"({len(problems)} problems); writing to {out}")
    results: list[StageResult] = []

    def stage(name: str, label: str, run):
        if name not in settings.stages:
            return
        print(f"\n== {label}", flush=True)
        started = time.perf_counter()
        accuracy, strict, tokens, extra = run()
        result = StageResult(name, label, accuracy, len(problems), tokens, time.perf_counter() - started, strict, extra)
        results.append(result)
        print(f"{label}: accuracy {accuracy:.3f} ({tokens:.0f} tokens per problem, {result.seconds:.0f} s)", flush=True)

    stage("direct", "base model, direct answer", lambda: (*_evaluate(
        model, tokenizer, problems, "direct", settings, out / "direct.jsonl"), {}))
    stage("cot", "chain of thought", lambda: (*_evaluate(
        model, tokenizer, problems, "cot", settings, out / "cot.jsonl"), {}))
    stage("thinking", "thinking mode", lambda: (*_evaluate(
        model, tokenizer, problems, "thinking", settings, out / "thinking.jsonl"), {}))

    def self_consistency():
        accuracy, tokens, summary = _self_consistency(model, tokenizer, problems, settings, out / "self_consistency.jsonl")
        return accuracy, None, tokens, summary

    stage("self-consistency", f"self-consistency (n={settings.sc_n})", self_consistency)

    def refine():
        accuracy, tokens, summary = _refine(model, tokenizer, problems, settings, out / "refine.jsonl")
        return accuracy, None, tokens, summary

    stage("refine", f"self-refinement ({settings.refine_rounds} round(s))", refine)

    trained = model
    if "grpo" in settings.stages:
        print("\n== GRPO training", flush=True)
        started = time.perf_counter()
        trained, _ = _grpo(model, tokenizer, settings, out / "grpo")
        print(f"GRPO training: {time.perf_counter() - started:.0f} s")
        from companion.rl.metrics import plot_log

        if (out / "grpo" / "metrics.jsonl").exists():
            plot_log(out / "grpo", smooth=0.8)
    stage("grpo-cot", "GRPO model, chain of thought", lambda: (*_evaluate(
        trained, tokenizer, problems, "cot", settings, out / "grpo_cot.jsonl"), {}))
    stage("grpo-thinking", "GRPO model, thinking mode", lambda: (*_evaluate(
        trained, tokenizer, problems, "thinking", settings, out / "grpo_thinking.jsonl"), {}))
    write_report(results, settings, out)
    return results


# ---- report ----------------------------------------------------------------------------------------------------

def model_label(settings: PipelineSettings) -> str:
    """The model as a reader knows it: a hub id as given, a local folder by its name."""
    if settings.model is None:
        return "tiny-reasoner"
    return Path(settings.model).name if Path(settings.model).is_dir() else settings.model


def format_table(results: list[StageResult]) -> str:
    lines = ["| stage | accuracy | strict (boxed) | tokens / problem | seconds |", "|---|---:|---:|---:|---:|"]
    for r in results:
        strict = "" if r.strict_accuracy is None else f"{r.strict_accuracy:.3f}"
        lines.append(f"| {r.label} | {r.accuracy:.3f} | {strict} | {r.tokens_per_problem:.0f} | {r.seconds:.0f} |")
    return "\n".join(lines)


def plot_accuracy(results: list[StageResult], png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 3.5))
    bars = axis.barh([r.label for r in results][::-1], [r.accuracy for r in results][::-1], color="C0")
    for bar, r in zip(bars, results[::-1]):
        axis.text(bar.get_width() + 0.005, bar.get_y() + bar.get_height() / 2, f"{r.accuracy:.3f}", va="center")
    axis.set(xlabel="accuracy", xlim=(0, min(1.0, max(r.accuracy for r in results) * 1.25 + 0.05)))
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png


def write_report(results: list[StageResult], settings: PipelineSettings, out: Path) -> Path:
    summary = [dataclasses.asdict(r) for r in results]
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    lines = [f"# Reasoning pipeline: {model_label(settings)} on {settings.benchmark}/{settings.split}", "",
             f"{results[0].problems if results else 0} held-out problems, the same for every stage. Accuracy: the "
             "final answer equals the gold answer (verifier); strict: it is in a final `\\boxed{}`.", "",
             format_table(results), ""]
    if results:
        lines += ["![accuracy by stage](accuracy.png)", ""]
        plot_accuracy(results, out / "accuracy.png")
    if (out / "grpo" / "metrics.png").exists():
        lines += ["## GRPO training", "", "![GRPO metrics](grpo/metrics.png)", ""]
    lines += ["## Settings", "", "```", json.dumps(dataclasses.asdict(settings), indent=2), "```", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    print("\n" + format_table(results))
    print(f"\nreport: {path}")
    return path


# ---- command line -------------------------------------------------------------------------------------------------

def register_cli(subparsers) -> None:
    p = subparsers.add_parser("pipeline", help="evaluate, scale, refine, GRPO-train and re-evaluate one model",
                              description="The main job: every technique measured on the same problems, with a "
                                          "table and a report (markdown + plots) in --out-dir.")
    p.add_argument("--model", default=None, help="model folder or hub id (default for arith: the shipped tiny model "
                                                  "with habits, data/tiny-reasoner-habits)")
    p.add_argument("--benchmark", default="arith", choices=tuple(PROFILES))
    p.add_argument("--split", default=None, help="evaluation split (default: test)")
    p.add_argument("--limit", type=int, default=None, help="evaluation problems (default: the profile's)")
    p.add_argument("--all", action="store_true", help="evaluate on the whole split")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--sc-n", type=int, default=None, help="self-consistency samples")
    p.add_argument("--refine-rounds", type=int, default=None)
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--grpo-steps", type=int, default=None)
    p.add_argument("--grpo-lr", type=float, default=None)
    p.add_argument("--grpo-algo", default=None, choices=("grpo", "dr_grpo", "dapo", "gspo"))
    p.add_argument("--train-limit", type=int, default=None, help="GRPO training problems (default: all)")
    p.add_argument("--out-dir", default="runs/pipeline")
    p.add_argument("--resume", action="store_true", help="continue a stopped pipeline in --out-dir")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    out = Path(args.out_dir)
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise SystemExit(f"{out} is not empty; pass --resume to continue that pipeline, or choose another --out-dir")
    overrides = {"out_dir": str(out), "device": args.device, "seed": args.seed,
                 "progress": not args.no_progress, "train_limit": args.train_limit,
                 "stages": tuple(s.strip() for s in args.stages.split(",") if s.strip())}
    unknown = set(overrides["stages"]) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")
    for name, value in (("split", args.split), ("max_new_tokens", args.max_new_tokens), ("batch_size", args.batch_size),
                        ("sc_n", args.sc_n), ("refine_rounds", args.refine_rounds), ("limit", args.limit)):
        if value is not None:
            overrides[name] = value
    if args.model is not None:
        overrides["model"] = args.model
    if args.all:
        overrides["limit"] = None
    grpo = {name: value for name, value in (("steps", args.grpo_steps), ("lr", args.grpo_lr), ("algo", args.grpo_algo))
            if value is not None}
    settings = PipelineSettings.for_benchmark(args.benchmark, grpo=grpo, **overrides)
    started = time.perf_counter()
    run_pipeline(settings)
    print(f"pipeline done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    from companion.cli import main

    sys.exit(main(["pipeline", *sys.argv[1:]]))
