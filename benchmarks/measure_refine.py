"""Measure self-refinement on a model and write the results (markdown + JSON + reliability plot).

1. Drafts: greedy, step-by-step prompt, one per test problem (shared by every setting below).
2. Calibration: AUROC and expected calibration error of each confidence score, as a predictor
   of whether the draft is right.
3. The loop as specified, for each scorer: up to ``--rounds`` review-and-revise rounds, a
   revision kept only if it scores better; plus the "always accept" baseline (no scorer).
   Accuracy after each round, answers changed right->wrong and wrong->right, tokens.
4. A setting chosen to help: revise only drafts whose confidence is below a threshold. The
   scorer, threshold (candidates: deciles of the validation confidences) and accept rule are
   chosen on the *validation* split, so the test numbers are not tuned on the test set, then
   run on the test split.
5. Drafts that skip the work: a bare ``\\boxed{N}`` answer (``direct`` prompt), then the same
   review rounds, always accepted and accepted if better. Here the review is where the problem
   gets worked out.

Greedy reviews are generated once and shared by every setting (``generation_cache``): the same
draft always gets the same review, so the settings differ only in their decisions.

    python benchmarks/measure_refine.py --model data/tiny-reasoner --limit 500
    python benchmarks/measure_refine.py --model data/tiny-reasoner --limit 40 --val-limit 40

Writes OUT_DIR/refine.md, refine.json and refine_reliability.png.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

from companion import refine
from companion.checkpoint import load_model
from companion.data import load_problems
from companion.generate import generate
from companion.prompts import build_prompt
from companion.prompts import build_revise_prompt
from companion.refine import SCORERS, auroc, confidence, expected_calibration_error, reliability
from companion.verifier import equivalent, extract_answer


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def is_right(text: str, gold: str) -> bool:
    answer = extract_answer(text)
    return answer is not None and equivalent(answer, gold)


def drafts_for(model, tokenizer, problems, args):
    """Greedy step-by-step drafts: texts, tokens generated and finish reasons."""
    prompts = [build_prompt(tokenizer, p.question, "cot") for p in problems]
    results = generate(model, tokenizer, prompts, args.max_new_tokens, batch_size=args.batch_size, progress=True)
    return {"drafts": [r.text for r in results], "draft_tokens": [r.num_tokens for r in results],
            "draft_finish_reasons": [r.finish_reason for r in results]}


def loop_row(model, tokenizer, problems, drafts, args, cache, label: str, **options) -> tuple[dict, list[dict]]:
    started = time.perf_counter()
    records = refine.run_problems(model, tokenizer, problems, **drafts, generation_cache=cache,
                                  max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, **options)
    summary = refine.summarize(records)
    row = {"setting": label, "rounds": options.get("rounds", 2),
           **{k: v for k, v in summary.items() if not k.startswith("auroc")}}
    print(f"{label}: {', '.join(f'{k} {v:.3f}' for k, v in row.items() if isinstance(v, float))} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    return row, records


def calibration_rows(records) -> list[dict]:
    right = [r["correct_by_round"][0] for r in records]
    rows = []
    for name in SCORERS:
        values = [refine.json_score(r["draft_scores"][name]) for r in records]
        confidences = [confidence(name, v) for v in values]
        rows.append({"scorer": name, "auroc": auroc(values, right),
                     "ece": expected_calibration_error(reliability(confidences, right))})
    return rows


def one_round_outcomes(model, tokenizer, problems, args) -> list[dict]:
    """For each validation problem: the draft, one greedy revision, every score of both, and
    whether each is right. Any (scorer, threshold, accept rule) of a one-round loop can then be
    evaluated without running the model again."""
    drafts = drafts_for(model, tokenizer, problems, args)
    prompts = [build_prompt(tokenizer, p.question, "cot") for p in problems]
    reviews = [build_revise_prompt(tokenizer, p.question, d) for p, d in zip(problems, drafts["drafts"])]
    revisions = generate(model, tokenizer, reviews, args.max_new_tokens, batch_size=args.batch_size, progress=True)
    draft_scores = refine.score_responses(model, tokenizer, prompts, drafts["drafts"], args.batch_size,
                                          drafts["draft_finish_reasons"])
    revision_scores = refine.score_responses(model, tokenizer, prompts, [r.text for r in revisions], args.batch_size,
                                             [r.finish_reason for r in revisions])
    outcomes = []
    for p, d, r, ds, rs in zip(problems, drafts["drafts"], revisions, draft_scores, revision_scores):
        outcomes.append({"draft": refine.all_scores(ds), "revision": refine.all_scores(rs),
                         "draft_right": is_right(d, p.answer), "revision_right": is_right(r.text, p.answer)})
    return outcomes


def candidate_thresholds(outcomes, scorer: str) -> list[float]:
    """Deciles of the drafts' confidence under ``scorer``, and 1.0 (revise nearly everything)."""
    values = sorted(confidence(scorer, o["draft"][scorer]) for o in outcomes)
    deciles = {round(values[min(len(values) - 1, len(values) * k // 10)], 4) for k in range(1, 10)}
    return sorted(deciles | {1.0})


def choose_gate(outcomes) -> dict:
    """The (scorer, threshold, accept rule) with the best one-round accuracy on these outcomes; on a
    tie, the one found first."""
    best = None
    for name in SCORERS:
        for threshold in candidate_thresholds(outcomes, name):
            for rule in refine.ACCEPT_RULES:
                right = 0
                for o in outcomes:
                    revise = confidence(name, o["draft"][name]) < threshold
                    take = revise and refine.revision_accepted(o["draft"][name], o["revision"][name], rule)
                    right += o["revision_right"] if take else o["draft_right"]
                candidate = {"scorer": name, "revise_below": threshold, "accept": rule,
                             "validation_accuracy": right / len(outcomes),
                             "validation_revised": sum(confidence(name, o["draft"][name]) < threshold
                                                       for o in outcomes) / len(outcomes)}
                if best is None or candidate["validation_accuracy"] > best["validation_accuracy"]:
                    best = candidate
    best["validation_draft_accuracy"] = sum(o["draft_right"] for o in outcomes) / len(outcomes)
    return best


def markdown(meta, calibration, rows, gate) -> str:
    lines = [f"Model `{meta['model']}`, {meta['benchmark']} {meta['split']}, {meta['problems']} problems, greedy "
             f"drafts and revisions; commit {meta['commit']}, {meta['seconds']:.0f} s on {meta['machine']}.", "",
             "Calibration of the draft's confidence (does it predict a right draft?):", "",
             "| scorer | AUROC | ECE |", "|---|---:|---:|"]
    lines += [f"| {c['scorer']} | {c['auroc']:.3f} | {c['ece']:.3f} |" for c in calibration]
    rounds = meta["rounds"]
    head = " | ".join(f"after {r}" for r in range(1, rounds + 1))
    lines += ["", f"| setting | draft | {head} | right→wrong | wrong→right | revised | kept a revision | tokens |",
              "|---|---:|" + "---:|" * rounds + "---:|---:|---:|---:|---:|"]
    for r in rows:
        after = " | ".join(f"{100 * r[f'accuracy_round_{i}']:.1f}%" if f"accuracy_round_{i}" in r else "–"
                           for i in range(1, rounds + 1))
        lines.append(f"| {r['setting']} | {100 * r['accuracy_round_0']:.1f}% | {after} | {100 * r['right_to_wrong']:.1f}% "
                     f"| {100 * r['wrong_to_right']:.1f}% | {100 * r['revised_fraction']:.0f}% "
                     f"| {100 * r['kept_revision_fraction']:.0f}% | {r['tokens_per_problem']:.0f} |")
    lines += ["", "Right→wrong and wrong→right compare the draft with the answer kept at the end; tokens are all "
              "tokens generated per problem (draft and reviews).", "",
              f"Gate chosen on {meta['val_problems']} {meta['val_split']} problems (one round): scorer {gate['scorer']}, "
              f"revise below confidence {gate['revise_below']}, accept {gate['accept']} (validation: "
              f"{100 * gate['validation_draft_accuracy']:.1f}% → {100 * gate['validation_accuracy']:.1f}%, "
              f"{100 * gate['validation_revised']:.0f}% of drafts revised)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped tiny model)")
    parser.add_argument("--benchmark", default="arith", choices=("arith", "gsm8k", "math500"))
    parser.add_argument("--split", default=None)
    parser.add_argument("--val-split", default="validation", help="split to choose the gate on")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--val-limit", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args()

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model, tokenizer = load_model(args.model, device="cpu")
    problems = load_problems(args.benchmark, split=args.split, limit=args.limit)
    drafts = drafts_for(model, tokenizer, problems, args)
    cache: dict = {}

    rows, first_records = [], None
    for name in SCORERS:
        row, records = loop_row(model, tokenizer, problems, drafts, args, cache, f"{name}, accept if better",
                                rounds=args.rounds, scorer=name)
        rows.append(row)
        first_records = first_records or records  # every run scores the same drafts
    calibration = calibration_rows(first_records)
    row, _ = loop_row(model, tokenizer, problems, drafts, args, cache, "no scorer, always accept",
                      rounds=args.rounds, accept="always")
    rows.append(row)

    val_problems = load_problems(args.benchmark, split=args.val_split, limit=args.val_limit)
    gate = choose_gate(one_round_outcomes(model, tokenizer, val_problems, args))
    print(f"gate chosen on {args.val_split}: {gate}", flush=True)
    for rounds in range(1, args.rounds + 1):
        row, _ = loop_row(model, tokenizer, problems, drafts, args, cache,
                          f"gated: {gate['scorer']} < {gate['revise_below']}, accept {gate['accept']}, {rounds} round(s)",
                          rounds=rounds, scorer=gate["scorer"], accept=gate["accept"], revise_below=gate["revise_below"])
        rows.append(row)
    for label, options in (("direct drafts, no scorer, always accept", dict(accept="always")),
                           ("direct drafts, min-logprob, accept if better", dict(scorer="min-logprob"))):
        row, _ = loop_row(model, tokenizer, problems, {}, args, cache, label, rounds=args.rounds,
                          prompt_style="direct", **options)
        rows.append(row)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = first_records
    right = [r["correct_by_round"][0] for r in records]
    fig, axes = plt.subplots(1, len(SCORERS), figsize=(4 * len(SCORERS), 4))
    for ax, name in zip(axes, SCORERS):
        refine.plot_reliability([confidence(name, refine.json_score(r["draft_scores"][name])) for r in records], right,
                                ax=ax, label=name)
        ax.set_title(name)
    fig.savefig(out / "refine_reliability.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    meta = {"model": args.model or "data/tiny-reasoner", "benchmark": args.benchmark, "split": args.split or "test",
            "problems": len(problems), "val_split": args.val_split, "val_problems": len(val_problems),
            "rounds": args.rounds,
            "max_new_tokens": args.max_new_tokens, "commit": git_commit(), "seconds": time.perf_counter() - started,
            "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"}
    # each test draft's confidence under every scorer and whether it was right: enough to redraw the
    # reliability diagrams and recompute AUROC without the model
    per_draft = [{"id": r["id"], "right": r["correct_by_round"][0],
                  "confidence": {name: round(confidence(name, refine.json_score(r["draft_scores"][name])), 6)
                                 for name in SCORERS}} for r in first_records]
    (out / "refine.json").write_text(json.dumps({"meta": meta, "calibration": calibration, "rows": rows, "gate": gate,
                                                 "drafts": per_draft}, indent=1) + "\n")
    table = markdown(meta, calibration, rows, gate)
    (out / "refine.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
