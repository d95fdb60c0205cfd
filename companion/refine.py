"""Self-refinement: score a response by how confident the model is in it, ask the model to review
its own answer, and keep a revision only if it scores better.

Confidence comes from token log-probs, so it needs no gold answer:

- ``mean-logprob``: the mean log-prob of every token of the response;
- ``answer-logprob``: the mean log-prob of the tokens of the final answer (the ``\\boxed{}``
  content) only, where a wrong answer is most likely to show hesitation;
- ``min-logprob``: the least likely token, the weakest link of the chain;
- ``heuristic``: rules, no model: a boxed answer, and brevity.

To compare drafts, each is scored under the same conditioning: the original question prompt.
A revision is written in answer to a review prompt, but it is scored as if it were an answer to
the question, so its score means the same thing as the draft's.

Calibration (how well a score predicts correctness) is measured by AUROC and a reliability
diagram.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from companion.generate import generate
from companion.prompts import PROMPT_STYLES, build_prompt
from companion.prompts import build_revise_prompt
from companion.verifier import equivalent, extract_answer


# ---------------------------------------------------------------------------------------------
# Log-probs of a given response
# ---------------------------------------------------------------------------------------------
@dataclass
class ResponseLogprobs:
    """Each token of a response, its log-prob given the prompt and the tokens before it, and the
    characters of the response it covers."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    offsets: list[tuple[int, int]]  # (start, end) character span of each token in ``text``
    finish_reason: str = "stop"  # how the response ended when it was generated: "stop" or "length"


def _encode_with_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character spans. The companion tokenizer exposes the ``tokenizers`` backend,
    which reports spans; otherwise they are rebuilt by decoding growing prefixes."""
    backend = getattr(tokenizer, "backend", None)
    if backend is not None:
        encoding = backend.encode(text, add_special_tokens=False)
        return list(encoding.ids), [tuple(o) for o in encoding.offsets]
    ids = tokenizer.encode(text)
    offsets, previous = [], 0
    for i in range(len(ids)):
        end = len(tokenizer.decode(ids[:i + 1]))
        offsets.append((previous, end))
        previous = end
    return ids, offsets


@torch.inference_mode()
def score_responses(model, tokenizer, prompts: Sequence[str], responses: Sequence[str],
                    batch_size: int = 16, finish_reasons: Sequence[str] | None = None) -> list[ResponseLogprobs]:
    """Per-token log-probs of each response given its prompt: one forward pass per batch.

    Prompt and response are tokenized separately, as generation produced them. Rows are padded on
    the right, so no mask is needed: under the causal mask a real token never sees the padding
    that follows it. Only the response positions go through the LM head, which keeps memory at
    (response tokens x vocabulary) even for Qwen3's 152k-token vocabulary. ``finish_reasons``
    (from generation; "stop" if not given) only travel along, for the heuristic score.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    finish_reasons = list(finish_reasons) if finish_reasons is not None else ["stop"] * len(responses)
    if len(finish_reasons) != len(responses):
        raise ValueError(f"{len(finish_reasons)} finish reasons but {len(responses)} responses")
    encoded = [(tokenizer.encode(p), *_encode_with_offsets(tokenizer, r)) for p, r in zip(prompts, responses)]
    if any(not prompt_ids for prompt_ids, _, _ in encoded):
        raise ValueError("every prompt needs at least one token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results = []
    for start in range(0, len(encoded), batch_size):
        part = encoded[start:start + batch_size]
        rows = [p + r for p, r, _ in part]
        ids = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row)
        hidden = model.hidden_states(ids.to(model.device))
        for i, (prompt_ids, response_ids, offsets) in enumerate(part):
            first = len(prompt_ids) - 1  # the position whose output predicts the first response token
            logits = model.lm_head(hidden[i, first:first + len(response_ids)]).float()
            logprobs = torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(response_ids, device=logits.device)[:, None])
            results.append(ResponseLogprobs(responses[start + i], response_ids, logprobs[:, 0].tolist(), offsets,
                                            finish_reasons[start + i]))
    return results


def score_response(model, tokenizer, prompt_text: str, response_text: str) -> ResponseLogprobs:
    """Per-token log-probs of ``response_text`` as an answer to ``prompt_text``."""
    return score_responses(model, tokenizer, [prompt_text], [response_text])[0]


# ---------------------------------------------------------------------------------------------
# Confidence scores
# ---------------------------------------------------------------------------------------------
def boxed_span(text: str) -> tuple[int, int] | None:
    """Character span of the content of the last ``\\boxed{...}`` (braces matched), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    begin = start + len("\\boxed{")
    depth = 1
    for i in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return begin, i
    return None


def answer_token_indices(scored: ResponseLogprobs) -> list[int]:
    """Indices of the tokens that overlap the boxed answer's characters."""
    span = boxed_span(scored.text)
    if span is None or span[0] == span[1]:
        return []
    return [i for i, (a, b) in enumerate(scored.offsets) if a < span[1] and b > span[0]]


def mean_logprob(scored: ResponseLogprobs) -> float:
    return sum(scored.logprobs) / len(scored.logprobs) if scored.logprobs else float("-inf")


def answer_logprob(scored: ResponseLogprobs) -> float:
    """Mean log-prob of the boxed answer's tokens; -inf without a boxed answer."""
    values = [scored.logprobs[i] for i in answer_token_indices(scored)]
    return sum(values) / len(values) if values else float("-inf")


def min_logprob(scored: ResponseLogprobs) -> float:
    return min(scored.logprobs, default=float("-inf"))


def heuristic_score(text: str, finish_reason: str = "stop", brevity_chars: float = 1000.0) -> float:
    """A score in [0, 1] from rules alone: a boxed answer (0.5), else any extractable answer
    (0.25); a response that ended on its own rather than at the token limit (0.2); brevity
    (up to 0.3, halving every ~700 characters), since rambling often means the model is lost."""
    score = 0.5 if boxed_span(text) is not None else 0.25 if extract_answer(text) is not None else 0.0
    score += 0.2 if finish_reason == "stop" else 0.0
    return score + 0.3 * math.exp(-len(text) / brevity_chars)


SCORERS: dict[str, Callable[[ResponseLogprobs], float]] = {
    "mean-logprob": mean_logprob,
    "answer-logprob": answer_logprob,
    "min-logprob": min_logprob,
    "heuristic": lambda scored: heuristic_score(scored.text, scored.finish_reason),
}


def confidence(scorer: str, value: float) -> float:
    """A score as a probability-like number in [0, 1]: exp of a log-prob score (the geometric-mean
    token probability for the mean scores), the heuristic as it is."""
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; choose one of {', '.join(SCORERS)}")
    return value if scorer == "heuristic" else math.exp(value)


def all_scores(scored: ResponseLogprobs) -> dict[str, float]:
    return {name: fn(scored) for name, fn in SCORERS.items()}


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------
def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance that a random right response scores higher than a
    random wrong one, ties counting half (the Mann-Whitney U statistic over its maximum).
    0.5 is no better than chance; NaN when either class is missing."""
    if len(scores) != len(labels):
        raise ValueError("scores and labels differ in length")
    positives = sum(bool(y) for y in labels)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = average_ranks(scores)
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


@dataclass
class ReliabilityBin:
    low: float
    high: float
    count: int
    mean_confidence: float
    accuracy: float


def reliability(confidences: Sequence[float], labels: Sequence[bool], bins: int = 10) -> list[ReliabilityBin]:
    """Group responses by confidence into equal-width bins and compare each bin's mean confidence
    with its accuracy: a calibrated score lies on the diagonal. Empty bins are left out."""
    grouped: list[list[int]] = [[] for _ in range(bins)]
    for i, c in enumerate(confidences):
        grouped[min(bins - 1, max(0, int(c * bins)))].append(i)
    result = []
    for b, members in enumerate(grouped):
        if members:
            result.append(ReliabilityBin(b / bins, (b + 1) / bins, len(members),
                                         sum(confidences[i] for i in members) / len(members),
                                         sum(bool(labels[i]) for i in members) / len(members)))
    return result


def expected_calibration_error(bins: Sequence[ReliabilityBin]) -> float:
    """Mean |accuracy - confidence| over bins, weighted by how many responses each holds."""
    total = sum(b.count for b in bins)
    return sum(b.count * abs(b.accuracy - b.mean_confidence) for b in bins) / total if total else float("nan")


def plot_reliability(confidences: Sequence[float], labels: Sequence[bool], bins: int = 10, ax=None, label: str = ""):
    """Reliability diagram: accuracy against mean confidence per bin, with the diagonal."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    table = reliability(confidences, labels, bins)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.plot([b.mean_confidence for b in table], [b.accuracy for b in table], marker="o",
            label=f"{label} (ECE {expected_calibration_error(table):.2f}, AUROC {auroc(confidences, labels):.2f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    ax.legend(fontsize=8)
    return ax


# ---------------------------------------------------------------------------------------------
# The self-refinement loop
# ---------------------------------------------------------------------------------------------
@dataclass
class Draft:
    """One entry of the history: the draft (round 0) or a revision (round >= 1)."""

    round: int
    text: str
    answer: str | None
    score: float  # under the scorer, conditioned on the original question prompt
    accepted: bool
    tokens: int  # generated for this draft or revision
    correct: bool | None = None
    finish_reason: str = "stop"  # "length" when generation hit max_new_tokens


@dataclass
class RefineResult:
    question: str
    history: list[Draft]
    answers_by_round: list[str | None]  # the kept answer after round 0 (draft), 1, 2, ...
    draft_scores: dict[str, float] = field(default_factory=dict)  # every scorer on the draft

    @property
    def final(self) -> Draft:
        return [d for d in self.history if d.accepted][-1]

    @property
    def num_tokens(self) -> int:
        return sum(d.tokens for d in self.history)


ACCEPT_RULES = ("if-better", "always")


def revision_accepted(current_score: float, new_score: float, rule: str = "if-better") -> bool:
    """Keep a revision only if it scores strictly better: on a tie the kept answer stays, so a
    review that changes nothing the scorer can see cannot swap in a different answer. ``always``
    (no scorer at all) is the baseline that shows what the scorer is worth."""
    if rule == "always":
        return True
    if rule != "if-better":
        raise ValueError(f"unknown accept rule {rule!r}; choose one of {', '.join(ACCEPT_RULES)}")
    return new_score > current_score


@dataclass
class RefineSettings:
    rounds: int = 2
    scorer: str = "mean-logprob"
    accept: str = "if-better"
    revise_below: float | None = None  # revise only drafts whose confidence is below this
    prompt_style: str = "cot"
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    batch_size: int = 32

    def __post_init__(self):
        if self.rounds < 0:
            raise ValueError(f"rounds must be 0 or more, got {self.rounds}")
        if self.scorer not in SCORERS:
            raise ValueError(f"unknown scorer {self.scorer!r}; choose one of {', '.join(SCORERS)}")
        if self.accept not in ACCEPT_RULES:
            raise ValueError(f"unknown accept rule {self.accept!r}; choose one of {', '.join(ACCEPT_RULES)}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt style {self.prompt_style!r}")


def self_refine_batch(model, tokenizer, questions: Sequence[str], rounds: int = 2, scorer: str = "mean-logprob",
                      drafts: Sequence[str] | None = None, draft_tokens: Sequence[int] | None = None,
                      draft_finish_reasons: Sequence[str] | None = None, generation_cache: dict | None = None,
                      **options) -> list[RefineResult]:
    """Draft, then up to ``rounds`` rounds of review-and-revise, for many questions at once.

    Options are the fields of ``RefineSettings``. A revision replaces the kept answer only if it
    scores better (``revision_accepted``); every score is taken under the original question
    prompt. With ``revise_below`` (a confidence in [0, 1], see ``confidence``) only drafts less
    confident than that are revised at all. A question drops out when its revision is rejected
    under greedy decoding (the same prompt would give the same revision again) or when the
    revision repeats the kept text. ``drafts`` (with their ``draft_tokens``, for the token count,
    and ``draft_finish_reasons``) skips drafting, e.g. to compare scorers on the same drafts.

    ``generation_cache`` (a dict kept by the caller) remembers greedy generations by prompt, so
    runs that share drafts (say, one per scorer) generate each review only once: under greedy
    decoding the same review prompt gives the same revision. Sampled generations are not cached.
    """
    settings = RefineSettings(rounds, scorer, **options)
    prompts = [build_prompt(tokenizer, q, settings.prompt_style) for q in questions]
    if drafts is None:
        generated = _generate(model, tokenizer, prompts, settings, settings.seed, generation_cache)
        drafts, draft_tokens = [g.text for g in generated], [g.num_tokens for g in generated]
        draft_finish_reasons = [g.finish_reason for g in generated]
    if len(drafts) != len(questions):
        raise ValueError(f"{len(questions)} questions but {len(drafts)} drafts")
    draft_tokens = draft_tokens or [0] * len(drafts)
    draft_finish_reasons = draft_finish_reasons or ["stop"] * len(drafts)
    scored_drafts = score_responses(model, tokenizer, prompts, drafts, settings.batch_size, draft_finish_reasons)
    results = []
    for q, text, tokens, s in zip(questions, drafts, draft_tokens, scored_drafts):
        scores = all_scores(s)
        draft = Draft(0, text, extract_answer(text), scores[settings.scorer], True, tokens,
                      finish_reason=s.finish_reason)
        results.append(RefineResult(q, [draft], [draft.answer], scores))
    active = [i for i, r in enumerate(results) if settings.revise_below is None
              or confidence(settings.scorer, r.history[0].score) < settings.revise_below]
    for round_index in range(1, settings.rounds + 1):
        active = _revise_round(model, tokenizer, questions, prompts, results, active, round_index, settings,
                               generation_cache)
        for result in results:
            result.answers_by_round.append(result.final.answer)
    return results


def _generate(model, tokenizer, prompts, settings: RefineSettings, seed, cache: dict | None = None):
    if cache is None or settings.temperature > 0:
        return generate(model, tokenizer, prompts, settings.max_new_tokens, settings.temperature,
                        top_p=settings.top_p, seed=seed, batch_size=settings.batch_size)
    keys = [(p, settings.max_new_tokens) for p in prompts]
    missing = list(dict.fromkeys(k for k in keys if k not in cache))
    if missing:
        fresh = generate(model, tokenizer, [p for p, _ in missing], settings.max_new_tokens,
                         batch_size=settings.batch_size)
        cache.update(zip(missing, fresh))
    return [cache[k] for k in keys]


def _round_seed(seed: int | None, round_index: int) -> int | None:
    return None if seed is None else seed * 1_000_003 + round_index


def _revise_round(model, tokenizer, questions, prompts, results, active, round_index,
                  settings: RefineSettings, cache: dict | None = None) -> list[int]:
    """One review-and-revise round for the ``active`` questions; returns those still active."""
    if not active:
        return []
    kept = {i: results[i].final for i in active}
    review_prompts = [build_revise_prompt(tokenizer, questions[i], kept[i].text) for i in active]
    revisions = _generate(model, tokenizer, review_prompts, settings, _round_seed(settings.seed, round_index), cache)
    # scored as answers to the question itself, like the draft, so the two scores can be compared
    scored = score_responses(model, tokenizer, [prompts[i] for i in active], [r.text for r in revisions],
                             settings.batch_size, [r.finish_reason for r in revisions])
    still_active = []
    for i, revision, s in zip(active, revisions, scored):
        score = SCORERS[settings.scorer](s)
        accepted = revision_accepted(kept[i].score, score, settings.accept)
        results[i].history.append(Draft(round_index, revision.text, extract_answer(revision.text), score, accepted,
                                        revision.num_tokens, finish_reason=revision.finish_reason))
        if revision.text != kept[i].text and (accepted or settings.temperature > 0):
            still_active.append(i)
    return still_active


def self_refine(model, tokenizer, question: str, rounds: int = 2, scorer: str = "mean-logprob", **options) -> RefineResult:
    """The loop for one question (options as in ``self_refine_batch``)."""
    return self_refine_batch(model, tokenizer, [question], rounds, scorer, **options)[0]


def grade_result(result: RefineResult, gold: str, same=equivalent) -> list[bool]:
    """Set ``correct`` on every entry of the history; returns correctness of the kept answer by round."""
    for draft in result.history:
        draft.correct = draft.answer is not None and same(draft.answer, gold)
    verdicts: dict[str | None, bool] = {}
    for answer in result.answers_by_round:
        if answer not in verdicts:
            verdicts[answer] = answer is not None and same(answer, gold)
    return [verdicts[a] for a in result.answers_by_round]


# ---------------------------------------------------------------------------------------------
# Benchmark runs and the command line
# ---------------------------------------------------------------------------------------------
def run_problems(model, tokenizer, problems, rounds: int = 2, scorer: str = "mean-logprob", **options) -> list[dict]:
    """Refine each problem's answer; one record per problem (history, per-round correctness, tokens)."""
    results = self_refine_batch(model, tokenizer, [p.question for p in problems], rounds, scorer, **options)
    records = []
    for problem, result in zip(problems, results):
        correct_by_round = grade_result(result, problem.answer)
        records.append({
            "id": problem.id, "question": problem.question, "gold": problem.answer, "scorer": scorer,
            "history": [_json_safe(asdict(d)) for d in result.history],
            "answers_by_round": result.answers_by_round, "correct_by_round": correct_by_round,
            "correct": correct_by_round[-1], "draft_scores": _json_safe(result.draft_scores), "tokens": result.num_tokens,
        })
    return records


def _json_safe(values: dict) -> dict:
    """-inf (no boxed answer, empty response) becomes null: strict JSON has no infinities."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}


def json_score(value: float | None) -> float:
    """A score read back from a record: null stands for -inf."""
    return float("-inf") if value is None else value


def summarize(records: Sequence[dict]) -> dict:
    """Accuracy after each round, how answers changed from the draft, tokens, and how well each
    scorer's draft confidence predicts draft correctness (AUROC)."""
    if not records:
        return {"problems": 0, "accuracy": float("nan")}
    rounds = len(records[0]["correct_by_round"]) - 1
    n = len(records)
    summary: dict = {"problems": n}
    for r in range(rounds + 1):
        summary[f"accuracy_round_{r}"] = sum(rec["correct_by_round"][r] for rec in records) / n
    draft = [rec["correct_by_round"][0] for rec in records]
    final = [rec["correct_by_round"][-1] for rec in records]
    summary["right_to_wrong"] = sum(a and not b for a, b in zip(draft, final)) / n
    summary["wrong_to_right"] = sum(b and not a for a, b in zip(draft, final)) / n
    summary["revised_fraction"] = sum(len(rec["history"]) > 1 for rec in records) / n
    summary["kept_revision_fraction"] = sum(any(d["accepted"] for d in rec["history"][1:]) for rec in records) / n
    summary["tokens_per_problem"] = sum(rec["tokens"] for rec in records) / n
    for name in SCORERS:
        summary[f"auroc_{name}"] = auroc([json_score(rec["draft_scores"][name]) for rec in records], draft)
    summary["accuracy"] = summary[f"accuracy_round_{rounds}"]
    return summary


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("refine", help="self-refinement: draft, review, keep a revision only if it scores better",
                              description="Run the self-refinement loop on a benchmark. Writes one JSON record per "
                                          "problem (drafts, scores, decisions, tokens) and ends with 'accuracy: 0.xxx'.")
    p.add_argument("--model", default=None, help="model folder or hub repo id (default: the shipped tiny model)")
    p.add_argument("--benchmark", default="arith", choices=("arith", "gsm8k", "math500"))
    p.add_argument("--split", default=None, help="dataset split (default: the benchmark's test split)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--scorer", default="mean-logprob", choices=tuple(SCORERS))
    p.add_argument("--accept", default="if-better", choices=ACCEPT_RULES,
                   help="keep a revision only if it scores better (default), or always")
    p.add_argument("--revise-below", type=float, default=None,
                   help="revise only drafts whose confidence (0-1) is below this")
    p.add_argument("--prompt-style", default="cot", choices=PROMPT_STYLES)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="only the first N problems")
    p.add_argument("--out", default=None, help="write per-problem records to this JSONL file")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16"])
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_cli)


def load_benchmark(name: str, split: str | None = None, limit: int | None = None):
    from companion.data import load_problems  # imported here: only the command line reads data sets

    return load_problems(name, split=split, limit=limit)


def _run_cli(args) -> int:
    from companion.checkpoint import load_model

    problems = load_benchmark(args.benchmark, args.split, args.limit)
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    options = dict(prompt_style=args.prompt_style, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                   top_p=args.top_p, seed=args.seed, revise_below=args.revise_below, batch_size=args.batch_size,
                   accept=args.accept)
    started = time.perf_counter()
    records = []
    out = open(args.out, "w") if args.out else None
    bar = tqdm(total=len(problems), desc="refine", unit="problem", disable=args.no_progress, file=sys.stderr)
    try:
        for start in range(0, len(problems), args.batch_size):
            new = run_problems(model, tokenizer, problems[start:start + args.batch_size], args.rounds, args.scorer, **options)
            records += new
            if out is not None:
                out.writelines(json.dumps(r) + "\n" for r in new)
                out.flush()
            bar.update(len(new))
    finally:
        bar.close()
        if out is not None:
            out.close()
    summary = summarize(records)
    print(f"{args.benchmark}: {len(records)} problems, {args.rounds} rounds, scorer {args.scorer}, "
          f"accept {args.accept}" + (f", revise below {args.revise_below}" if args.revise_below is not None else "") +
          f" in {time.perf_counter() - started:.1f} s")
    for key, value in summary.items():
        if key not in ("accuracy", "problems"):
            print(f"{key}: {value:.3f}")
    print(f"accuracy: {summary['accuracy']:.3f}")
    return 0
