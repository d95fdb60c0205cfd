"""Benchmark evaluation: generate an answer for each problem, grade it, keep one JSONL record per
problem, and summarize.

    report = evaluate_problems(model, tokenizer, load_problems("gsm8k", limit=50), out_path="gsm8k.jsonl")
    print(report.table())

Each response is graded twice: leniently (any clear final answer) and strictly (a final
``\\boxed{}``, the RL reward's rule). Records are appended as each batch finishes, so an interrupted
run resumes where it stopped: problems whose records are already in ``out_path`` are not
generated again. ``regrade`` re-grades a saved file with the current verifier.

Command line::

    python -m companion evaluate --model data/tiny-reasoner --benchmark arith --limit 200
    python -m companion regrade runs/evaluate/tiny-reasoner_arith_test_cot.jsonl
"""
from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from companion.prompts import DEFAULT_PROMPT_STYLE, PROMPT_STYLES, build_prompt
from companion.verifier import grade_detailed

BENCHMARKS = ("gsm8k", "math500", "arith")
GROUP_KEYS = ("subject", "level", "steps")
DEFAULT_OUT_DIR = Path("runs") / "evaluate"


class RecordsError(ValueError):
    """An output file cannot be resumed or re-graded (malformed, or from another run)."""


@dataclass
class EvalReport:
    """Accuracy over all records, and by subject / level / steps where the problems have them."""

    records: list[dict]
    accuracy: float
    strict_accuracy: float
    summary: dict[str, dict[str, dict[str, float]]]
    resumed: int = 0
    generated: int = 0
    seconds: float = 0.0
    out_path: Path | None = None

    def table(self) -> str:
        return format_summary(self.summary)


# --------------------------------------------------------------------------- records
def make_record(problem, prompt: str, result, seconds: float) -> dict:
    """Grade one generation and describe it as a JSON-ready dict."""
    lenient = grade_detailed(result.text, problem.answer)
    strict = grade_detailed(result.text, problem.answer, strict=True)
    return {
        "id": problem.id, "prompt": prompt, "response": result.text, "extracted": lenient.extracted,
        "gold": problem.answer, "correct": lenient.correct, "correct_strict": strict.correct,
        "reason": lenient.reason, "tokens": len(result.token_ids), "finish_reason": result.finish_reason,
        "seconds": round(seconds, 4), "subject": getattr(problem, "subject", None),
        "level": getattr(problem, "level", None), "steps": getattr(problem, "steps", None),
    }


def read_records(path: Path) -> tuple[list[dict], bool]:
    """Records in a JSONL file, and whether its last line was cut off (an interrupted write).

    A malformed line anywhere else is an error naming the file and line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    records: list[dict] = []
    truncated = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                truncated = True
                break
            raise RecordsError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict) or "id" not in record:
            raise RecordsError(f"{path}:{number}: expected a record with an 'id'")
        records.append(record)
    return records, truncated


def write_records(path: Path, records: list[dict]) -> None:
    """Replace ``path`` atomically with ``records``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    os.replace(temporary, path)


def _resume(path: Path | None, problems: list) -> dict[str, dict]:
    """Finished records from an earlier run, checked against the problems; the file is rewritten
    without a cut-off last line."""
    if path is None or not path.exists():
        return {}
    records, truncated = read_records(path)
    golds = {p.id: p.answer for p in problems}
    done: dict[str, dict] = {}
    for record in records:
        if record["id"] in golds and str(record.get("gold")) != str(golds[record["id"]]):
            raise RecordsError(f"{path}: record {record['id']!r} has gold {record.get('gold')!r} but the problem's "
                               f"is {golds[record['id']]!r}; this file is from another benchmark; use another --out")
        done[record["id"]] = record
    if truncated:
        write_records(path, records)
    return done


# --------------------------------------------------------------------------- summaries
def _group(records: list[dict]) -> dict[str, float]:
    n = len(records)
    return {"n": n, "accuracy": sum(r["correct"] for r in records) / n if n else 0.0,
            "strict": sum(r["correct_strict"] for r in records) / n if n else 0.0,
            "tokens": sum(r.get("tokens", 0) for r in records) / n if n else 0.0,
            "truncated": sum(r.get("finish_reason") == "length" for r in records)}


def summarize(records: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """``{"all": {"all": stats}, "subject": {"Algebra": stats, ...}, "level": ..., "steps": ...}``."""
    summary: dict[str, dict[str, dict[str, float]]] = {"all": {"all": _group(records)}}
    for key in GROUP_KEYS:
        groups: dict[str, list[dict]] = defaultdict(list)
        for record in records:
            if record.get(key) is not None:
                groups[str(record[key])].append(record)
        if groups:
            summary[key] = {g: _group(groups[g]) for g in sorted(groups, key=_group_order)}
    return summary


def _group_order(name: str) -> tuple:
    """Numbers in numeric order (level 2 before level 10), then names alphabetically."""
    numeric = name.lstrip("-").isdigit()
    return (not numeric, int(name) if numeric else 0, name)


def format_summary(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [f"{'group':<32} {'n':>6} {'accuracy':>9} {'strict':>7} {'tokens':>7} {'cut':>5}"]
    for key, groups in summary.items():
        for name, stats in groups.items():
            label = "all" if key == "all" else f"{key}={name}"
            lines.append(f"{label:<32} {stats['n']:>6} {stats['accuracy']:>9.3f} {stats['strict']:>7.3f} "
                         f"{stats['tokens']:>7.1f} {stats['truncated']:>5}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the loop
def _default_generate():
    from companion.generate import generate  # imported here: torch only when generating

    return generate


def evaluate_problems(model, tokenizer, problems: list, prompt_style: str = DEFAULT_PROMPT_STYLE,
                      batch_size: int = 16, max_new_tokens: int = 512, out_path: str | os.PathLike | None = None,
                      progress: bool = True, generate_fn: Callable | None = None,
                      temperature: float = 0.0) -> EvalReport:
    """Generate, grade and record every problem (resuming from ``out_path`` when it holds records).

    ``generate_fn(model, tokenizer, prompts, max_new_tokens=, temperature=, batch_size=)`` must return
    one result per prompt with ``.text``, ``.token_ids`` and ``.finish_reason``; it defaults to
    ``companion.generate.generate``."""
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {prompt_style!r}; choose one of {', '.join(PROMPT_STYLES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ids = [p.id for p in problems]
    duplicates = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if duplicates:
        raise ValueError(f"problem ids must be unique; repeated: {duplicates[:5]}")
    path = Path(out_path) if out_path is not None else None
    done = _resume(path, problems)
    pending = [p for p in problems if p.id not in done]
    generate_fn = generate_fn or _default_generate()
    started = time.perf_counter()
    _run_batches(model, tokenizer, pending, prompt_style, batch_size, max_new_tokens, temperature,
                 generate_fn, path, done, progress, total=len(problems))
    records = [done[p.id] for p in problems]
    summary = summarize(records)
    overall = summary["all"]["all"]
    return EvalReport(records, overall["accuracy"], overall["strict"], summary, resumed=len(problems) - len(pending),
                      generated=len(pending), seconds=time.perf_counter() - started, out_path=path)


def _run_batches(model, tokenizer, pending: list, prompt_style: str, batch_size: int, max_new_tokens: int,
                 temperature: float, generate_fn: Callable, path: Path | None, done: dict, progress: bool,
                 total: int) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=total - len(pending), desc="evaluate", unit="problem", disable=not progress)
    out = None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        out = open(path, "a", encoding="utf-8")
    try:
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            prompts = [build_prompt(tokenizer, p.question, prompt_style) for p in batch]
            began = time.perf_counter()
            results = generate_fn(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                  temperature=temperature, batch_size=batch_size)
            if len(results) != len(batch):
                raise RuntimeError(f"generate returned {len(results)} results for {len(batch)} prompts")
            seconds = (time.perf_counter() - began) / len(batch)
            for problem, prompt, result in zip(batch, prompts, results):
                record = make_record(problem, prompt, result, seconds)
                done[problem.id] = record
                if out is not None:
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
            if out is not None:
                out.flush()
            correct = sum(done[p.id]["correct"] for p in batch)
            bar.update(len(batch))
            bar.set_postfix(batch_accuracy=f"{correct / len(batch):.2f}")
    finally:
        bar.close()
        if out is not None:
            out.close()


# --------------------------------------------------------------------------- re-grading
def regrade_records(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """Grade saved responses again; returns (updated records, the changes)."""
    updated, changes = [], []
    for record in records:
        if "response" not in record or "gold" not in record:
            raise RecordsError(f"record {record.get('id')!r} has no 'response' or 'gold' to re-grade")
        lenient = grade_detailed(record["response"], str(record["gold"]))
        strict = grade_detailed(record["response"], str(record["gold"]), strict=True)
        new = dict(record, extracted=lenient.extracted, correct=lenient.correct, correct_strict=strict.correct,
                   reason=lenient.reason)
        if (new["correct"], new["correct_strict"], new["extracted"]) != (
                record.get("correct"), record.get("correct_strict"), record.get("extracted")):
            changes.append({"id": record["id"], "extracted": (record.get("extracted"), new["extracted"]),
                            "correct": (record.get("correct"), new["correct"]),
                            "correct_strict": (record.get("correct_strict"), new["correct_strict"])})
        updated.append(new)
    return updated, changes


# --------------------------------------------------------------------------- command line
def default_out_path(model: str | None, benchmark: str, split: str | None, style: str) -> Path:
    from companion.hub import DEFAULT_MODEL

    name = Path(str(model or DEFAULT_MODEL).rstrip("/")).name or "model"
    return DEFAULT_OUT_DIR / f"{name}_{benchmark}_{split or 'default'}_{style}.jsonl"


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a model on a benchmark (resumable JSONL records)",
                              description="Generate and grade answers for GSM8K, MATH-500 or the synthetic "
                                          "arith set; prints a summary table and ends with 'accuracy: x'.")
    p.add_argument("--model", default=None, help="model folder or hub repo id (default: the shipped tiny model)")
    p.add_argument("--benchmark", default="arith", choices=BENCHMARKS)
    p.add_argument("--split", default=None, help="dataset split (default: test)")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems")
    p.add_argument("--batch-size", type=int, default=16, help="prompts generated together")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--prompt-style", default=DEFAULT_PROMPT_STYLE, choices=PROMPT_STYLES)
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16"], help="default: fp32 on CPU, bf16 elsewhere")
    p.add_argument("--data-dir", default=None, help="folder with the data files (default: $REASONING_DATA_DIR)")
    p.add_argument("--out", default=None, help="JSONL records; an existing file is resumed "
                                               "(default: runs/evaluate/<model>_<benchmark>_<split>_<style>.jsonl)")
    p.add_argument("--fresh", action="store_true", help="discard an existing --out file instead of resuming it")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_evaluate)
    r = subparsers.add_parser("regrade", help="re-grade saved evaluation records with the current verifier",
                              description="Re-grade the responses in an evaluation JSONL file and report what changed.")
    r.add_argument("file", help="a JSONL file written by 'evaluate'")
    r.add_argument("--write", action="store_true", help="save the new grades into the file")
    r.set_defaults(func=_run_regrade)


def _run_evaluate(args) -> int:
    from companion.checkpoint import load_model
    from companion.data import load_problems

    problems = load_problems(args.benchmark, args.split, data_dir=args.data_dir, limit=args.limit)
    out = Path(args.out) if args.out else default_out_path(args.model, args.benchmark, args.split, args.prompt_style)
    if args.fresh and out.exists():
        out.unlink()
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    report = evaluate_problems(model, tokenizer, problems, prompt_style=args.prompt_style, batch_size=args.batch_size,
                               max_new_tokens=args.max_new_tokens, out_path=out, progress=not args.no_progress)
    print(f"{args.benchmark} ({args.split or 'test'}): {len(problems)} problems, {args.prompt_style} prompt; "
          f"{report.generated} generated in {report.seconds:.1f} s, {report.resumed} resumed from {out}")
    print(report.table())
    print(f"strict accuracy: {report.strict_accuracy:.3f}")
    print(f"accuracy: {report.accuracy:.3f}")
    return 0


def _run_regrade(args) -> int:
    path = Path(args.file)
    if not path.exists():
        raise SystemExit(f"no such file: {path}")
    records, truncated = read_records(path)
    if not records:
        raise SystemExit(f"{path} holds no records")
    updated, changes = regrade_records(records)
    for change in changes:
        (old_x, new_x), (old_c, new_c) = change["extracted"], change["correct"]
        print(f"{change['id']}: correct {old_c} -> {new_c}, strict {change['correct_strict'][0]} -> "
              f"{change['correct_strict'][1]}, extracted {old_x!r} -> {new_x!r}")
    before = summarize(records)["all"]["all"]["accuracy"] if all("correct" in r for r in records) else float("nan")
    summary = summarize(updated)
    print(format_summary(summary))
    note = " (a cut-off last line was skipped)" if truncated else ""
    print(f"{len(changes)} of {len(records)} records changed{note}")
    if args.write:
        write_records(path, updated)
        print(f"wrote {path}")
    print(f"accuracy before: {before:.3f}")
    print(f"accuracy: {summary['all']['all']['accuracy']:.3f}")
    return 0
