"""Inference-time scaling: spend more compute at answer time to get better answers.

The methods, from cheapest to most expensive:

- greedy decoding with a ``direct`` prompt (answer at once) or a chain-of-thought prompt
  (``cot``: step by step; ``thinking``: Qwen3 thinking mode), see ``companion.prompts``;
- self-consistency: sample N answers and take a vote. Answers vote together when the verifier
  finds them equal (``1/2`` and ``0.5`` are one answer), ties go to the answer whose samples
  have the higher mean token log-prob, and sampling stops as soon as no other answer can
  overtake the leader;
- best-of-n: sample N answers and keep the one a scorer likes best (mean log-prob, a heuristic,
  or the verifier against the gold answer, which is the oracle upper bound);
- pass@k: the chance that at least one of k samples is right, estimated without bias from
  n >= k samples.

Each method reports the tokens it generated, so methods can be compared at equal compute.
All N samples of a prompt in one round share a single prefill (``generate(num_samples=N)``).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from companion.generate import GenerationResult, SamplingParams, filter_logits, generate
from companion.prompts import PROMPT_STYLES, build_prompt
from companion.refine import heuristic_score
from companion.verifier import equivalent, extract_answer

Same = Callable[[str, str], bool]  # are two extracted answers the same answer?


# ---------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One sampled response, with what the vote and the scorers need from it."""

    text: str
    answer: str | None  # extracted final answer; None when the response has none
    num_tokens: int
    mean_logprob: float  # mean token log-prob under the sampling distribution
    finish_reason: str = "stop"
    correct: bool | None = None  # filled in when the gold answer is known

    @classmethod
    def from_generation(cls, result: GenerationResult) -> "Sample":
        return cls(result.text, extract_answer(result.text), result.num_tokens, result.mean_logprob,
                   result.finish_reason)


def grade_samples(samples: Iterable[Sample], gold: str, same: Same = equivalent) -> None:
    """Set ``correct`` on each sample (a sample without an answer is wrong)."""
    for sample in samples:
        sample.correct = sample.answer is not None and same(sample.answer, gold)


def sample_responses(model, tokenizer, prompts: Sequence[str], n: int, temperature: float = 0.7,
                     top_p: float = 1.0, top_k: int = 0, max_new_tokens: int = 256, seed: int | None = 0,
                     batch_size: int | None = None, progress: bool = False) -> list[list[Sample]]:
    """``n`` samples of each prompt; the samples of one prompt share one prefill."""
    results = generate(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens, temperature=temperature,
                       top_k=top_k, top_p=top_p, seed=seed, num_samples=n, batch_size=batch_size,
                       progress=progress)
    samples = [Sample.from_generation(r) for r in results]
    return [samples[i * n:(i + 1) * n] for i in range(len(prompts))]


# ---------------------------------------------------------------------------------------------
# Voting
# ---------------------------------------------------------------------------------------------
@dataclass
class AnswerGroup:
    """Samples whose answers the verifier finds equal; ``answer`` is the first spelling seen."""

    answer: str
    members: list[int]  # indices of the samples in this group
    mean_logprob: float = float("-inf")  # mean over members of their mean token log-prob

    @property
    def count(self) -> int:
        return len(self.members)


def group_answers(answers: Sequence[str | None], same: Same = equivalent) -> list[tuple[str, list[int]]]:
    """Cluster answers by equivalence: [(representative, indices)], in order of first appearance.

    Each new spelling is compared with one representative per group (not with every member), and
    each distinct spelling only once, so N samples with G distinct answers cost at most N * G
    comparisons. ``None`` (no answer found) joins no group: it cannot win a vote.
    """
    groups: list[tuple[str, list[int]]] = []
    group_of: dict[str, int] = {}
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        if answer not in group_of:
            group_of[answer] = next((g for g, (rep, _) in enumerate(groups) if same(answer, rep)), len(groups))
            if group_of[answer] == len(groups):
                groups.append((answer, []))
        groups[group_of[answer]][1].append(index)
    return groups


@dataclass
class Vote:
    answer: str | None  # the winner's representative spelling; None when no sample had an answer
    groups: list[AnswerGroup]  # best first: most votes, then higher mean log-prob

    @property
    def winner(self) -> AnswerGroup | None:
        return self.groups[0] if self.groups else None

    @property
    def margin(self) -> int:
        """Votes of the leader minus votes of the runner-up (all of the leader's if alone)."""
        if not self.groups:
            return 0
        runner_up = self.groups[1].count if len(self.groups) > 1 else 0
        return self.groups[0].count - runner_up


def vote(samples: Sequence[Sample], same: Same = equivalent) -> Vote:
    """Majority vote over equivalent answers; a tie goes to the group with the higher mean log-prob.

    Mean log-prob breaks ties because, among answers that got equally many votes, the one the
    model wrote with more confidence is the better bet (and it needs no extra model call).
    """
    groups = []
    for answer, members in group_answers([s.answer for s in samples], same):
        mean = sum(samples[i].mean_logprob for i in members) / len(members)
        groups.append(AnswerGroup(answer, members, mean))
    groups.sort(key=lambda g: (-g.count, -g.mean_logprob))
    return Vote(groups[0].answer if groups else None, groups)


@dataclass(frozen=True)
class AnswerPaths:
    """One answer of a vote: how many samples gave it and through how many different texts."""

    answer: str | None
    correct: bool | None
    samples: int
    distinct_texts: int


def answer_paths(samples: Sequence[Sample], same: Same = equivalent) -> list[AnswerPaths]:
    """The vote's answer groups with the number of different solution texts behind each.

    Self-consistency adds up the probability of every path that reaches an answer, so it can
    overturn greedy decoding only when the right answer is reached by more paths than a wrong
    one. A group whose samples are all the same text is a single path, voted for several times.
    """
    return [AnswerPaths(g.answer, samples[g.members[0]].correct, g.count, len({samples[i].text for i in g.members}))
            for g in vote(samples, same).groups]


def next_round_size(margin: int, remaining: int) -> int:
    """How many more samples to draw before the vote can be decided; 0 when it already is.

    The vote is decided once the leader's margin exceeds the samples left: even if every one of
    them went to the runner-up, the runner-up would still trail. (A margin equal to what is left
    is not enough: the runner-up could tie, and the log-prob tie-break could then flip the vote.)
    Each further sample raises the margin by at most one and lowers what is left by one, so no
    stop is possible before ``(remaining - margin) // 2 + 1`` more samples. Drawing exactly that
    many as one batch uses as few samples as checking after every single sample would, in fewer,
    larger batches.
    """
    if remaining <= 0 or margin > remaining:
        return 0
    return min(remaining, (remaining - margin) // 2 + 1)


@dataclass
class SelfConsistencyResult:
    answer: str | None
    samples: list[Sample]
    groups: list[AnswerGroup]
    rounds: int  # sampling rounds, i.e. prefills of the prompt
    stopped_early: bool

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.samples)

    @property
    def correct(self) -> bool | None:
        """Whether the chosen answer is right (needs graded samples)."""
        if not self.groups:
            return False if self.samples and self.samples[0].correct is not None else None
        return self.samples[self.groups[0].members[0]].correct


def _round_sizes(n: int, early_stop: bool):
    """A generator of round sizes; send it each round's vote margin (driven by ``_rounds``)."""
    drawn = 0
    margin = 0
    while drawn < n:
        size = next_round_size(margin, n - drawn) if early_stop else n - drawn
        if size == 0:
            return
        margin = yield size
        drawn += size


def self_consistency_from_samples(samples: Sequence[Sample], n: int | None = None, early_stop: bool = True,
                                  same: Same = equivalent) -> SelfConsistencyResult:
    """Replay self-consistency on samples already drawn (the first ``n`` of them, in order).

    The rounds and the early stop are exactly those of ``self_consistency``, so a pool of 20
    samples per problem gives the result for every N <= 20 without sampling again.
    """
    n = len(samples) if n is None else n
    if n > len(samples):
        raise ValueError(f"asked for {n} samples, have {len(samples)}")
    used: list[Sample] = []
    rounds = 0
    sizes = _round_sizes(n, early_stop)
    size = next(sizes, 0)
    while size:
        used += samples[len(used):len(used) + size]
        rounds += 1
        size = _send(sizes, vote(used, same).margin)
    result = vote(used, same)
    return SelfConsistencyResult(result.answer, list(used), result.groups, rounds, len(used) < n)


def _send(generator, value) -> int:
    try:
        return generator.send(value)
    except StopIteration:
        return 0


def self_consistency_batch(model, tokenizer, prompts: Sequence[str], n: int = 10, temperature: float = 0.7,
                           top_p: float = 0.9, top_k: int = 0, max_new_tokens: int = 256, seed: int | None = 0,
                           early_stop: bool = True, batch_size: int | None = None, same: Same = equivalent,
                           progress: bool = False) -> list[SelfConsistencyResult]:
    """Self-consistency for many prompts at once.

    Every prompt samples in rounds (see ``next_round_size``); the prompts that need the same round
    size are generated together, each prompt's samples sharing one prefill. With
    ``early_stop=False`` there is a single round of ``n`` samples per prompt.
    """
    schedules = [_round_sizes(n, early_stop) for _ in prompts]
    pending = {i: next(schedules[i], 0) for i in range(len(prompts))}
    samples: list[list[Sample]] = [[] for _ in prompts]
    rounds = [0] * len(prompts)
    call = 0
    while pending:
        by_size: dict[int, list[int]] = {}
        for i, size in pending.items():
            by_size.setdefault(size, []).append(i)
        pending = {}
        for size, indices in sorted(by_size.items()):
            drawn = sample_responses(model, tokenizer, [prompts[i] for i in indices], size, temperature, top_p, top_k,
                                     max_new_tokens, _call_seed(seed, call), batch_size, progress)
            call += 1
            for i, new in zip(indices, drawn):
                samples[i] += new
                rounds[i] += 1
                size_next = _send(schedules[i], vote(samples[i], same).margin)
                if size_next:
                    pending[i] = size_next
    results = []
    for i in range(len(prompts)):
        decided = vote(samples[i], same)
        results.append(SelfConsistencyResult(decided.answer, samples[i], decided.groups, rounds[i], len(samples[i]) < n))
    return results


def self_consistency(model, tokenizer, prompt: str, n: int = 10, **options) -> SelfConsistencyResult:
    """Self-consistency for one prompt (options as in ``self_consistency_batch``)."""
    return self_consistency_batch(model, tokenizer, [prompt], n, **options)[0]


def _call_seed(seed: int | None, call: int) -> int | None:
    """A distinct seed per generate call: reusing one seed would repeat the first round's samples."""
    return None if seed is None else seed * 1_000_003 + call


# ---------------------------------------------------------------------------------------------
# Best-of-n
# ---------------------------------------------------------------------------------------------
Scorer = Callable[[str, Sequence[Sample]], list[float]]  # (prompt, samples) -> one score per sample


def logprob_scorer(prompt: str, samples: Sequence[Sample]) -> list[float]:
    """Mean token log-prob: the model's own confidence, free from the sampling pass."""
    return [s.mean_logprob for s in samples]


def heuristic_scorer(prompt: str, samples: Sequence[Sample]) -> list[float]:
    """Rule-based: a boxed answer, a finished response, brevity (``refine.heuristic_score``)."""
    return [heuristic_score(s.text, s.finish_reason) for s in samples]


def oracle_scorer(gold: str, same: Same = equivalent) -> Scorer:
    """1 for a right answer, 0 otherwise: best-of-n with this scorer is pass@n, the upper bound."""
    def score(prompt: str, samples: Sequence[Sample]) -> list[float]:
        return [float(s.answer is not None and same(s.answer, gold)) for s in samples]
    return score


BEST_OF_N_SCORERS = ("logprob", "heuristic", "oracle")


def make_scorer(name: str, gold: str | None = None) -> Scorer:
    if name == "logprob":
        return logprob_scorer
    if name == "heuristic":
        return heuristic_scorer
    if name == "oracle":
        if gold is None:
            raise ValueError("the oracle scorer needs the gold answer")
        return oracle_scorer(gold)
    raise ValueError(f"unknown scorer {name!r}; choose one of {', '.join(BEST_OF_N_SCORERS)}")


@dataclass
class BestOfNResult:
    answer: str | None
    chosen: int  # index of the chosen sample
    samples: list[Sample]
    scores: list[float]

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.samples)

    @property
    def correct(self) -> bool | None:
        return self.samples[self.chosen].correct


def choose_best(prompt: str, samples: Sequence[Sample], scorer: Scorer) -> BestOfNResult:
    """The sample with the highest score (the first one on a tie)."""
    scores = scorer(prompt, samples)
    chosen = max(range(len(samples)), key=lambda i: (scores[i], -i))
    return BestOfNResult(samples[chosen].answer, chosen, list(samples), scores)


def best_of_n(model, tokenizer, prompts: Sequence[str], n: int = 10, scorer: Scorer | Sequence[Scorer] = logprob_scorer,
              temperature: float = 0.7, top_p: float = 0.9, top_k: int = 0, max_new_tokens: int = 256,
              seed: int | None = 0, batch_size: int | None = None, progress: bool = False) -> list[BestOfNResult]:
    """Sample ``n`` responses per prompt and keep the best by ``scorer`` (one, or one per prompt)."""
    scorers = list(scorer) if isinstance(scorer, (list, tuple)) else [scorer] * len(prompts)
    pools = sample_responses(model, tokenizer, prompts, n, temperature, top_p, top_k, max_new_tokens, seed,
                             batch_size, progress)
    return [choose_best(p, pool, s) for p, pool, s in zip(prompts, pools, scorers)]


# ---------------------------------------------------------------------------------------------
# pass@k
# ---------------------------------------------------------------------------------------------
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are right: 1 - C(n-c, k) / C(n, k).

    The binomials overflow floats for large n, so the ratio is taken as a product:
    C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)   (Chen et al., 2021).
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    ratio = 1.0
    for i in range(n - c + 1, n + 1):
        ratio *= 1.0 - k / i
    return 1.0 - ratio


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """pass@k over problems, from (samples, right samples) per problem."""
    values = [pass_at_k(n, c, k) for n, c in counts]
    return sum(values) / len(values) if values else float("nan")


# ---------------------------------------------------------------------------------------------
# Diversity of answers, and the temperature / top-p sweep
# ---------------------------------------------------------------------------------------------
NO_ANSWER = "<no answer>"


def answer_distribution(answers: Sequence[str | None], same: Same = equivalent) -> dict[str, int]:
    """Votes per distinct answer (equivalent spellings merged); no-answer responses are one category."""
    counts = {rep: len(members) for rep, members in group_answers(answers, same)}
    missing = sum(a is None for a in answers)
    if missing:
        counts[NO_ANSWER] = missing
    return counts


def entropy_bits(counts: Iterable[int]) -> float:
    """Shannon entropy (bits) of the distribution given by counts: 0 when all samples agree."""
    counts = [c for c in counts if c > 0]
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts) if total else 0.0


def sampling_sweep(model, tokenizer, problems, temperatures: Sequence[float], top_ps: Sequence[float] = (1.0,),
                   n: int = 8, prompt_style: str = "cot", max_new_tokens: int = 256, seed: int = 0,
                   batch_size: int | None = None, same: Same = equivalent, progress: bool = False) -> list[dict]:
    """Accuracy and answer diversity for each (temperature, top_p), from ``n`` samples per problem.

    ``accuracy`` is the mean fraction of right samples (pass@1); ``distinct`` the mean number of
    different answers per problem; ``entropy`` the mean entropy of the answer distribution;
    ``majority`` the self-consistency accuracy of the ``n`` samples; ``tokens`` the mean tokens
    per sample. Higher temperature buys diversity (which voting needs) at the price of accuracy.
    """
    prompts = [build_prompt(tokenizer, p.question, prompt_style) for p in problems]
    rows = []
    settings = [(t, p) for t in temperatures for p in top_ps]
    for t, p in tqdm(settings, desc="sweep", disable=not progress):
        pools = sample_responses(model, tokenizer, prompts, n, t, p, 0, max_new_tokens, seed, batch_size)
        for problem, pool in zip(problems, pools):
            grade_samples(pool, problem.answer, same)
        distributions = [answer_distribution([s.answer for s in pool], same) for pool in pools]
        rows.append({
            "temperature": t, "top_p": p, "n": n,
            "accuracy": _mean(s.correct for pool in pools for s in pool),
            "majority": _mean(self_consistency_from_samples(pool, early_stop=False, same=same).correct for pool in pools),
            "distinct": _mean(len(d) for d in distributions),
            "entropy": _mean(entropy_bits(d.values()) for d in distributions),
            "tokens": _mean(s.num_tokens for pool in pools for s in pool),
        })
    return rows


def plot_sampling_sweep(rows: Sequence[dict], axes=None):
    """Accuracy, majority-vote accuracy and answer entropy against temperature, one line per top-p."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for index, top_p in enumerate(sorted({r["top_p"] for r in rows})):
        line = sorted((r for r in rows if r["top_p"] == top_p), key=lambda r: r["temperature"])
        t, color = [r["temperature"] for r in line], f"C{index}"
        axes[0].plot(t, [r["accuracy"] for r in line], marker="o", color=color, label=f"one sample, top-p {top_p}")
        axes[0].plot(t, [r["majority"] for r in line], marker="s", linestyle="--", color=color,
                     label=f"vote of {line[0]['n']}, top-p {top_p}")
        axes[1].plot(t, [r["entropy"] for r in line], marker="o", color=color, label=f"top-p {top_p}")
    axes[0].set(xlabel="temperature", ylabel="accuracy", title="accuracy")
    axes[1].set(xlabel="temperature", ylabel="bits", title="entropy of the answers")
    for ax in axes:
        ax.legend(fontsize=8)
    return axes


@dataclass
class NextToken:
    token: str
    probability: float  # after temperature, before top-k/top-p
    kept_probability: float  # renormalized over the kept tokens; 0 if dropped
    kept: bool


@torch.inference_mode()
def next_token_distribution(model, tokenizer, prompt: str, temperature: float = 1.0, top_p: float = 1.0,
                            top_k: int = 0, show: int = 10) -> list[NextToken]:
    """The ``show`` most likely next tokens, and which of them temperature / top-k / top-p keep.

    The same ``filter_logits`` as generation, so this is exactly the distribution ``generate``
    samples from. ``temperature=0`` keeps only the most likely token (greedy).
    """
    ids = torch.tensor([tokenizer.encode(prompt)], device=model.device)
    logits = model(ids, last_only=True)[0, -1].float()
    if temperature == 0:
        probs = torch.softmax(logits, dim=-1)
        kept_probs = torch.zeros_like(probs)
        kept_probs[logits.argmax()] = 1.0
    else:
        scaled = logits / temperature
        probs = torch.softmax(scaled, dim=-1)
        kept_probs = torch.softmax(filter_logits(scaled[None], top_k, top_p)[0], dim=-1)
    top = torch.topk(probs, show).indices.tolist()
    return [NextToken(tokenizer.decode([i]), float(probs[i]), float(kept_probs[i]), bool(kept_probs[i] > 0)) for i in top]


def plot_next_tokens(tokens: Sequence[NextToken], ax=None, title: str = ""):
    """Bars of the next-token probabilities; the kept nucleus in colour, dropped tokens grey."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    labels = [repr(t.token)[1:-1] or "∅" for t in tokens]
    x = range(len(tokens))
    ax.bar(x, [t.probability for t in tokens], color=["tab:blue" if t.kept else "lightgrey" for t in tokens],
           label="after temperature")
    ax.plot(x, [t.kept_probability for t in tokens], "o", color="tab:red", label="sampled from (renormalized)")
    ax.set_xticks(list(x), labels, rotation=45, ha="right")
    ax.set(ylim=(0, 1.05), ylabel="probability", title=title)
    ax.legend(fontsize=8)
    return ax


# ---------------------------------------------------------------------------------------------
# Accuracy against compute, from pools of samples
# ---------------------------------------------------------------------------------------------
def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")


@dataclass
class CurvePoint:
    method: str
    n: int
    accuracy: float
    tokens: float  # mean generated tokens per problem


def scaling_curves(pools: Sequence[Sequence[Sample]], ns: Sequence[int], same: Same = equivalent) -> list[CurvePoint]:
    """Accuracy against tokens for self-consistency (with and without early stopping), best-of-n
    by log-prob, and pass@k, all from one pool of graded samples per problem.

    Using one pool for every method and every N keeps the comparison fair (same samples) and
    cheap (no extra sampling). The first N samples of the pool stand for a run with N samples.
    """
    points = []
    for n in ns:
        for early, name in ((False, "self-consistency"), (True, "self-consistency (early stop)")):
            results = [self_consistency_from_samples(pool, n, early, same) for pool in pools]
            points.append(CurvePoint(name, n, _mean(bool(r.correct) for r in results), _mean(r.num_tokens for r in results)))
        chosen = [choose_best("", pool[:n], logprob_scorer) for pool in pools]
        points.append(CurvePoint("best-of-n (log-prob)", n, _mean(bool(r.correct) for r in chosen),
                                 _mean(r.num_tokens for r in chosen)))
        points.append(CurvePoint("pass@k (oracle)", n, mean_pass_at_k(_counts(pools), n),
                                 _mean(n * _mean(s.num_tokens for s in pool) for pool in pools)))
    return points


def _counts(pools) -> list[tuple[int, int]]:
    return [(len(pool), sum(bool(s.correct) for s in pool)) for pool in pools]


def plot_scaling_curves(points: Sequence[CurvePoint], baselines: dict[str, tuple[float, float]] | None = None, ax=None):
    """Accuracy against mean tokens per problem, one line per method; ``baselines`` maps a name to
    (tokens, accuracy) for single points such as greedy decoding."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for method in dict.fromkeys(p.method for p in points):
        line = [p for p in points if p.method == method]
        ax.plot([p.tokens for p in line], [p.accuracy for p in line], marker="o", label=method)
        for p in line:
            ax.annotate(str(p.n), (p.tokens, p.accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for name, (tokens, accuracy) in (baselines or {}).items():
        ax.plot([tokens], [accuracy], marker="*", markersize=12, linestyle="none", label=name)
    ax.set(xscale="log", xlabel="generated tokens per problem (log scale)", ylabel="accuracy")
    ax.legend(fontsize=8)
    return ax


# ---------------------------------------------------------------------------------------------
# Benchmark runs (the command line and the measurement script)
# ---------------------------------------------------------------------------------------------
METHODS = ("greedy", "cot", "self-consistency", "best-of-n")
SAMPLING_METHODS = ("self-consistency", "best-of-n")
DEFAULT_STYLE = {"greedy": "direct", "cot": "cot", "self-consistency": "cot", "best-of-n": "cot"}


@dataclass
class RunSettings:
    method: str = "self-consistency"
    n: int = 10
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0
    prompt_style: str | None = None  # None: the method's default (DEFAULT_STYLE)
    max_new_tokens: int = 256
    batch_size: int = 64
    seed: int = 0
    early_stop: bool = True
    scorer: str = "logprob"  # best-of-n only

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        self.prompt_style = self.prompt_style or DEFAULT_STYLE[self.method]
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt style {self.prompt_style!r}")
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        SamplingParams(self.temperature, self.top_k, self.top_p)  # the engine's own checks of these three
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError(f"max-new-tokens and batch-size must be at least 1, got {self.max_new_tokens} "
                             f"and {self.batch_size}")
        if self.method in SAMPLING_METHODS and self.temperature == 0:
            # at temperature 0 every sample is the greedy one: n copies of a single answer
            raise ValueError(f"{self.method} samples its answers: it needs a temperature above 0")
        if self.scorer not in BEST_OF_N_SCORERS:
            raise ValueError(f"unknown scorer {self.scorer!r}; choose one of {', '.join(BEST_OF_N_SCORERS)}")


def run_problems(model, tokenizer, problems, settings: RunSettings, same: Same = equivalent) -> list[dict]:
    """Run one method on a list of problems; one record per problem (see ``_record``)."""
    prompts = [build_prompt(tokenizer, p.question, settings.prompt_style) for p in problems]
    s = settings
    if s.method in ("greedy", "cot"):
        pools = sample_responses(model, tokenizer, prompts, 1, 0.0, 1.0, 0, s.max_new_tokens, None, s.batch_size)
        outcomes = [self_consistency_from_samples(pool, 1, False, same) for pool in pools]
    elif s.method == "self-consistency":
        outcomes = self_consistency_batch(model, tokenizer, prompts, s.n, s.temperature, s.top_p, s.top_k,
                                          s.max_new_tokens, s.seed, s.early_stop, s.batch_size, same)
    else:
        scorers = [make_scorer(s.scorer, p.answer) for p in problems]
        outcomes = best_of_n(model, tokenizer, prompts, s.n, scorers, s.temperature, s.top_p, s.top_k,
                             s.max_new_tokens, s.seed, s.batch_size)
    records = []
    for problem, prompt, outcome in zip(problems, prompts, outcomes):
        grade_samples(outcome.samples, problem.answer, same)
        records.append(_record(problem, settings, outcome, len(tokenizer.encode(prompt))))
    return records


def _record(problem, settings: RunSettings, outcome, prompt_tokens: int) -> dict:
    """Everything needed to re-check a problem's result without rerunning the model."""
    if isinstance(outcome, BestOfNResult):
        chosen, correct, rounds, extra = outcome.answer, bool(outcome.correct), 1, {
            "scores": outcome.scores, "chosen_sample": outcome.chosen}
    else:
        chosen, correct, rounds = outcome.answer, bool(outcome.correct), outcome.rounds
        extra = {"votes": [{"answer": g.answer, "count": g.count, "mean_logprob": g.mean_logprob} for g in outcome.groups],
                 "stopped_early": outcome.stopped_early}
    return {
        "id": problem.id, "question": problem.question, "gold": problem.answer,
        "method": settings.method, "prompt_style": settings.prompt_style,
        "chosen": chosen, "correct": correct,
        "samples": [{"text": x.text, "answer": x.answer, "tokens": x.num_tokens, "mean_logprob": x.mean_logprob,
                     "finish_reason": x.finish_reason, "correct": x.correct} for x in outcome.samples],
        "num_samples": len(outcome.samples), "num_correct": sum(bool(x.correct) for x in outcome.samples),
        "tokens": outcome.num_tokens, "prefill_tokens": rounds * prompt_tokens, "rounds": rounds,
        **extra,
    }


def summarize(records: Sequence[dict]) -> dict:
    """Accuracy, mean tokens per problem, and pass@k (powers of two up to the samples drawn)."""
    summary = {"problems": len(records), "accuracy": _mean(r["correct"] for r in records),
               "tokens_per_problem": _mean(r["tokens"] for r in records),
               "samples_per_problem": _mean(r["num_samples"] for r in records)}
    if _equal_pools(records):
        n = min(r["num_samples"] for r in records)
        k = 1
        while k <= n:
            summary[f"pass@{k}"] = mean_pass_at_k([(r["num_samples"], r["num_correct"]) for r in records], k)
            k *= 2
    return summary


def _equal_pools(records: Sequence[dict]) -> bool:
    """pass@k needs samples drawn regardless of their outcome: early stopping draws fewer samples
    exactly when they agree, which would bias the estimate."""
    return bool(records) and records[0]["method"] in ("self-consistency", "best-of-n") and not any(
        r.get("stopped_early") for r in records)


def _chunks(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def run_benchmark(model, tokenizer, problems, settings: RunSettings, out=None, progress: bool = True,
                  chunk: int | None = None) -> list[dict]:
    """``run_problems`` in chunks, with a progress bar and each record written to ``out`` as soon
    as its chunk is done (so an interrupted run keeps what it finished)."""
    chunk = chunk or max(1, settings.batch_size // (1 if settings.method in ("greedy", "cot") else settings.n))
    records: list[dict] = []
    bar = tqdm(total=len(problems), desc=settings.method, unit="problem", disable=not progress, file=sys.stderr)
    for part in _chunks(problems, chunk):
        new = run_problems(model, tokenizer, part, settings)
        records += new
        if out is not None:
            for record in new:
                out.write(json.dumps(record) + "\n")
            out.flush()
        bar.update(len(part))
        bar.set_postfix(accuracy=f"{_mean(r['correct'] for r in records):.3f}")
    bar.close()
    return records


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("scale", help="inference-time scaling: greedy, CoT, self-consistency, best-of-n",
                              description="Run an inference-time scaling method on a benchmark. Writes one JSON "
                                          "record per problem (all samples, votes, chosen answer, tokens) and ends "
                                          "with 'accuracy: 0.xxx'.")
    p.add_argument("--model", default=None, help="model folder or hub repo id (default: the shipped tiny model)")
    p.add_argument("--benchmark", default="arith", choices=("arith", "gsm8k", "math500"))
    p.add_argument("--split", default=None, help="dataset split (default: the benchmark's test split)")
    p.add_argument("--method", default="self-consistency", choices=METHODS)
    p.add_argument("--n", type=int, default=10, help="samples per problem (self-consistency, best-of-n)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--scorer", default="logprob", choices=BEST_OF_N_SCORERS, help="best-of-n scorer")
    p.add_argument("--no-early-stop", action="store_true", help="self-consistency: always draw all n samples")
    p.add_argument("--prompt-style", default=None, choices=PROMPT_STYLES,
                   help="default: direct for greedy, cot otherwise")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems")
    p.add_argument("--batch-size", type=int, default=64, help="sequences generated together")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
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

    settings = RunSettings(args.method, args.n, args.temperature, args.top_p, args.top_k, args.prompt_style,
                           args.max_new_tokens, args.batch_size, args.seed, not args.no_early_stop, args.scorer)
    problems = load_benchmark(args.benchmark, args.split, args.limit)
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    started = time.perf_counter()
    out = open(args.out, "w") if args.out else None
    try:
        records = run_benchmark(model, tokenizer, problems, settings, out, progress=not args.no_progress)
    finally:
        if out is not None:
            out.close()
    summary = summarize(records)
    print(f"{args.benchmark}: {len(records)} problems, {settings.method} ({settings.prompt_style} prompt"
          + (f", n={settings.n}, T={settings.temperature}, top-p={settings.top_p}" if settings.method not in ("greedy", "cot") else "")
          + f") in {time.perf_counter() - started:.1f} s")
    for key, value in summary.items():
        if key not in ("accuracy", "problems"):
            print(f"{key}: {value:.3f}")
    print(f"accuracy: {summary['accuracy']:.3f}")
    return 0
