"""Self-refinement: log-probs of a given response, confidence scores, AUROC and reliability,
the draft-review-revise loop and the ``refine`` command."""
from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import pytest
import torch

from companion import refine
from companion.config import ModelConfig
from companion.generate import generate
from companion.model import Qwen3Model
from companion.prompts import build_prompt
from companion.refine import (ResponseLogprobs, answer_logprob, answer_token_indices, auroc, boxed_span,
                              heuristic_score, mean_logprob, min_logprob, score_response, score_responses)
from companion.prompts import build_revise_prompt
from companion.tokenizer import load_tokenizer
from test_scaling import run_cli, scripted_model

RANDOM_CONFIG = ModelConfig(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=2048)
QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


@pytest.fixture(scope="module")
def tokenizer(shared_data):
    return load_tokenizer(shared_data / "qwen3-0.6b")


@pytest.fixture(scope="module")
def random_model():
    return Qwen3Model(RANDOM_CONFIG).init_weights(seed=1, std=0.2).eval()


@pytest.fixture(scope="module")
def prompt(tokenizer):
    return build_prompt(tokenizer, QUESTION, "cot")


# ---- log-probs of a given response ---------------------------------------------------------------

def reference_logprobs(model, tokenizer, prompt_text, response_text):
    """The definition, written out: one forward over prompt+response, log_softmax, pick each token."""
    p, r = tokenizer.encode(prompt_text), tokenizer.encode(response_text)
    with torch.no_grad():
        logits = model(torch.tensor([p + r]))[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [float(logprobs[len(p) - 1 + i, token]) for i, token in enumerate(r)]


def test_score_response_matches_the_definition(random_model, tokenizer, prompt):
    response = "Tom has 3 + 4 = 7 apples.\nThe answer is \\boxed{7}."
    scored = score_response(random_model, tokenizer, prompt, response)
    assert scored.token_ids == tokenizer.encode(response)
    assert scored.logprobs == pytest.approx(reference_logprobs(random_model, tokenizer, prompt, response), abs=1e-4)
    assert "".join(response[a:b] for a, b in scored.offsets) == response


def test_batched_scoring_equals_one_at_a_time(random_model, tokenizer):
    prompts = [build_prompt(tokenizer, q, "cot") for q in ("What is 2 + 2?", QUESTION, "Compute 12 / 4 - 1, please.")]
    responses = ["\\boxed{4}", "3 + 4 = 7, so he has \\boxed{7} apples now.", ""]
    batched = score_responses(random_model, tokenizer, prompts, responses, batch_size=3)
    for p, r, b in zip(prompts, responses, batched):
        single = score_response(random_model, tokenizer, p, r)
        assert b.logprobs == pytest.approx(single.logprobs, abs=1e-4) and b.token_ids == single.token_ids
    assert batched[2].logprobs == [] and mean_logprob(batched[2]) == -math.inf
    with pytest.raises(ValueError):
        score_responses(random_model, tokenizer, prompts, responses[:2])


def test_scores_on_a_model_with_known_probabilities(tokenizer, prompt):
    model = scripted_model({"7": 0.8, "8": 0.2})
    for answer, p in (("7", 0.8), ("8", 0.2)):
        scored = score_response(model, tokenizer, prompt, f"\\boxed{{{answer}}}")
        assert scored.logprobs == pytest.approx([0, 0, 0, math.log(p), 0], abs=1e-4)
        assert answer_logprob(scored) == pytest.approx(math.log(p), abs=1e-4)
        assert min_logprob(scored) == pytest.approx(math.log(p), abs=1e-4)
        assert mean_logprob(scored) == pytest.approx(math.log(p) / 5, abs=1e-4)
        assert refine.confidence("answer-logprob", answer_logprob(scored)) == pytest.approx(p, abs=1e-4)


# ---- confidence scores ---------------------------------------------------------------------------

def test_boxed_span_matches_braces_and_takes_the_last_box():
    text = "first \\boxed{3}, then \\boxed{\\frac{1}{2}} done"
    start, end = boxed_span(text)
    assert text[start:end] == "\\frac{1}{2}"
    assert boxed_span("no box here") is None and boxed_span("\\boxed{12") is None


def test_answer_tokens_are_those_of_the_boxed_content_only(tokenizer):
    text = "So x is \\boxed{12}."
    ids = tokenizer.encode(text)
    offsets = refine._encode_with_offsets(tokenizer, text)[1]
    scored = ResponseLogprobs(text, ids, [-float(i) for i in range(len(ids))], offsets)
    picked = answer_token_indices(scored)
    assert [tokenizer.decode([ids[i]]) for i in picked] == ["1", "2"]
    assert answer_logprob(scored) == pytest.approx(-sum(picked) / 2)
    no_box = ResponseLogprobs("twelve", [1], [-0.1], [(0, 6)])
    assert answer_logprob(no_box) == -math.inf and refine.confidence("answer-logprob", -math.inf) == 0.0


def test_heuristic_prefers_boxed_finished_short_answers():
    boxed, unboxed = "so \\boxed{7}", "so it is 7"
    assert heuristic_score(boxed) > heuristic_score(unboxed) > heuristic_score("no idea")
    assert heuristic_score(boxed) > heuristic_score(boxed, finish_reason="length")
    assert heuristic_score(boxed) > heuristic_score("blah " * 200 + boxed)
    assert all(0 <= heuristic_score(t) <= 1 for t in (boxed, unboxed, "", "x" * 10000))
    with pytest.raises(ValueError):
        refine.confidence("vibes", 0.5)


# ---- calibration ---------------------------------------------------------------------------------

def pairwise_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auroc_equals_the_pairwise_definition_with_ties():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(2, 30)
        scores = [rng.randint(0, 5) for _ in range(n)]  # many ties
        labels = [rng.random() < 0.5 for _ in range(n)]
        if 0 < sum(labels) < n:
            assert auroc(scores, labels) == pytest.approx(pairwise_auroc(scores, labels))
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert auroc([0.5] * 4, [True, False, True, False]) == 0.5
    assert auroc([-math.inf, -1.0, -0.5], [False, True, True]) == 1.0
    assert math.isnan(auroc([0.1, 0.2], [True, True]))


def test_reliability_bins_and_calibration_error():
    confidences = [0.05, 0.15, 0.12, 0.95, 0.91, 0.99, 1.0]
    labels = [False, False, True, True, True, True, False]
    bins = refine.reliability(confidences, labels, bins=10)
    assert [(b.low, b.count) for b in bins] == [(0.0, 1), (0.1, 2), (0.9, 4)]
    assert bins[1].accuracy == 0.5 and bins[1].mean_confidence == pytest.approx(0.135)
    assert bins[2].accuracy == 0.75 and bins[2].mean_confidence == pytest.approx(0.9625)
    expected = (1 * 0.05 + 2 * abs(0.5 - 0.135) + 4 * abs(0.75 - 0.9625)) / 7
    assert refine.expected_calibration_error(bins) == pytest.approx(expected)


# ---- the loop ------------------------------------------------------------------------------------

def test_revision_accepted_only_when_strictly_better():
    assert refine.revision_accepted(-1.0, -0.5)
    assert not refine.revision_accepted(-0.5, -0.5) and not refine.revision_accepted(-0.5, -1.0)
    assert refine.revision_accepted(-math.inf, -3.0) and not refine.revision_accepted(-math.inf, -math.inf)
    assert refine.revision_accepted(-0.1, -5.0, rule="always")
    with pytest.raises(ValueError):
        refine.revision_accepted(-1.0, -0.5, rule="sometimes")
    for bad in (dict(scorer="vibes"), dict(accept="sometimes"), dict(prompt_style="shouting"), dict(rounds=-1)):
        with pytest.raises(ValueError):
            refine.RefineSettings(**bad)


def test_the_accept_rule_decides_on_the_scores(random_model, tokenizer, prompt):
    # the model's own greedy reply is as likely as replies get; a review of it tends to score lower
    [own] = generate(random_model, tokenizer, prompt, max_new_tokens=6)
    decisions = {}
    for rule in ("if-better", "always"):
        results = refine.self_refine_batch(random_model, tokenizer, [QUESTION] * 2, rounds=1, scorer="min-logprob",
                                           accept=rule, drafts=[own.text, "7"], draft_tokens=[6, 1],
                                           max_new_tokens=6)
        for result, tokens in zip(results, [6, 1]):
            draft, revision = result.history
            assert revision.accepted == (rule == "always" or revision.score > draft.score)
            assert result.final is (revision if revision.accepted else draft)
            assert result.num_tokens == tokens + revision.tokens
        decisions[rule] = [r.history[1].accepted for r in results]
    assert decisions == {"if-better": [False, True], "always": [True, True]}


def test_a_better_revision_replaces_a_wrong_draft_then_the_loop_settles(tokenizer):
    model = scripted_model({"7": 0.8, "8": 0.2})  # greedy revision: \boxed{7}
    result = refine.self_refine(model, tokenizer, QUESTION, rounds=3, scorer="answer-logprob", drafts=["\\boxed{8}"],
                                max_new_tokens=12)
    assert [(d.round, d.text, d.accepted) for d in result.history] == [
        (0, "\\boxed{8}", True), (1, "\\boxed{7}", True), (2, "\\boxed{7}", False)]  # round 2 repeats: stop
    assert result.answers_by_round == ["8", "7", "7", "7"] and result.final.answer == "7"
    assert result.history[1].score == pytest.approx(math.log(0.8), abs=1e-4)
    assert refine.grade_result(result, "7") == [False, True, True, True]
    assert result.num_tokens == 2 * 6  # two revisions of 5 tokens + end of turn; the draft was given


def test_revisions_are_scored_under_the_original_question_prompt(random_model, tokenizer, prompt):
    draft = "He has 3 + 4 = 7 apples. The answer is \\boxed{7}."
    result = refine.self_refine(random_model, tokenizer, QUESTION, rounds=1, scorer="mean-logprob", drafts=[draft],
                                max_new_tokens=8)
    revision = result.history[1]
    under_question = mean_logprob(score_response(random_model, tokenizer, prompt, revision.text))
    under_review = mean_logprob(score_response(random_model, tokenizer,
                                               build_revise_prompt(tokenizer, QUESTION, draft), revision.text))
    assert revision.score == pytest.approx(under_question, abs=1e-4)
    assert abs(under_question - under_review) > 1e-3  # the two conditionings really differ
    assert result.history[0].score == pytest.approx(result.draft_scores["mean-logprob"])
    assert set(result.draft_scores) == set(refine.SCORERS)


def test_only_drafts_below_the_confidence_threshold_are_revised(tokenizer):
    model = scripted_model({"7": 0.8, "8": 0.2})
    drafts = ["\\boxed{8}", "\\boxed{7}"]  # answer confidence 0.2 and 0.8
    results = refine.self_refine_batch(model, tokenizer, [QUESTION] * 2, rounds=1, scorer="answer-logprob",
                                       drafts=drafts, revise_below=0.5, max_new_tokens=12)
    assert [len(r.history) for r in results] == [2, 1]
    assert [r.final.answer for r in results] == ["7", "7"]


def test_refine_command_writes_records_and_summary(tmp_path, monkeypatch, capsys, tokenizer):
    from companion.checkpoint import save_model

    folder = save_model(scripted_model({"7": 0.6, "8": 0.4}), tokenizer, tmp_path / "scripted")
    problems = [SimpleNamespace(id=f"p{i}", question=f"What is {i} + 7 - {i}?", answer=a)
                for i, a in enumerate(["7", "8", "7"])]
    monkeypatch.setattr(refine, "load_benchmark", lambda name, split=None, limit=None: problems[:limit])
    out = tmp_path / "refine.jsonl"
    assert run_cli(refine, ["refine", "--model", str(folder), "--rounds", "2", "--scorer", "heuristic",
                            "--out", str(out), "--max-new-tokens", "12", "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["correct_by_round"] for r in records] == [[True] * 3, [False] * 3, [True] * 3]
    assert lines[-1] == "accuracy: 0.667"
    values = dict(line.split(": ") for line in lines[1:])
    assert float(values["accuracy_round_0"]) == pytest.approx(2 / 3, abs=1e-3)
    assert float(values["right_to_wrong"]) == 0.0 and float(values["auroc_heuristic"]) == 0.5
    assert float(values["kept_revision_fraction"]) == 0.0  # every revision repeated its draft: a tie, rejected
    assert all(r["history"][0]["text"] == "\\boxed{7}" and r["tokens"] == 12 for r in records)


def test_the_heuristic_in_the_loop_knows_when_a_response_was_cut_off(tokenizer):
    model = scripted_model({"7": 1.0})  # replies \boxed{7} and stops after 5 tokens
    full, cut = (refine.self_refine(model, tokenizer, QUESTION, rounds=0, scorer="heuristic", max_new_tokens=n)
                 for n in (12, 3))
    assert (full.history[0].finish_reason, cut.history[0].finish_reason) == ("stop", "length")
    assert full.history[0].score == pytest.approx(heuristic_score(full.history[0].text, "stop"))
    assert cut.history[0].score == pytest.approx(heuristic_score(cut.history[0].text, "length"))
    given = refine.self_refine_batch(model, tokenizer, [QUESTION] * 2, rounds=0, scorer="heuristic",
                                     drafts=["so \\boxed{7}"] * 2, draft_finish_reasons=["stop", "length"])
    assert given[0].history[0].score - given[1].history[0].score == pytest.approx(0.2)
    with pytest.raises(ValueError, match="finish reasons"):
        score_responses(model, tokenizer, ["a"], ["b"], finish_reasons=["stop", "stop"])
    with pytest.raises(ValueError, match="drafts"):
        refine.self_refine_batch(model, tokenizer, [QUESTION] * 2, rounds=1, drafts=["\\boxed{7}"])


def test_a_shared_cache_generates_each_greedy_review_once(tokenizer, monkeypatch):
    model = scripted_model({"7": 0.8, "8": 0.2})
    calls = []
    real_generate = refine.generate
    monkeypatch.setattr(refine, "generate", lambda m, t, prompts, *a, **k: calls.append(len(prompts))
                        or real_generate(m, t, prompts, *a, **k))
    options = dict(rounds=2, drafts=["\\boxed{8}", "\\boxed{8}", "\\boxed{7}"], max_new_tokens=12)
    uncached = refine.self_refine_batch(model, tokenizer, [QUESTION] * 3, scorer="min-logprob", **options)
    assert calls == [3, 2]  # round 2 revises only the accepted revisions of round 1
    cache, calls[:] = {}, []
    for scorer in ("min-logprob", "answer-logprob"):
        cached = refine.self_refine_batch(model, tokenizer, [QUESTION] * 3, scorer=scorer, generation_cache=cache,
                                          **options)
    assert calls == [2]  # three review prompts, two of them the same, and nothing new the second time
    assert [[(d.text, d.accepted, d.tokens) for d in r.history] for r in cached] == \
        [[(d.text, d.accepted, d.tokens) for d in r.history] for r in uncached]
    calls[:] = []
    refine.self_refine_batch(model, tokenizer, [QUESTION], rounds=1, drafts=["\\boxed{8}"], temperature=1.0,
                             max_new_tokens=12, generation_cache=cache)
    assert calls == [1]  # sampled revisions are never taken from the cache


def test_summary_counts_changed_answers_kept_revisions_and_tokens(tokenizer):
    model = scripted_model({"7": 0.8, "8": 0.2})
    problems = [SimpleNamespace(id=f"p{i}", question=QUESTION, answer="7") for i in range(2)]
    records = refine.run_problems(model, tokenizer, problems, rounds=1, scorer="answer-logprob",
                                  drafts=["\\boxed{8}", "\\boxed{7}"], draft_tokens=[6, 6], max_new_tokens=12)
    summary = refine.summarize(records)
    assert [r["correct_by_round"] for r in records] == [[False, True], [True, True]]
    assert summary["accuracy_round_0"] == 0.5 and summary["accuracy"] == summary["accuracy_round_1"] == 1.0
    assert (summary["wrong_to_right"], summary["right_to_wrong"]) == (0.5, 0.0)
    assert (summary["revised_fraction"], summary["kept_revision_fraction"]) == (1.0, 0.5)
    assert summary["tokens_per_problem"] == 12  # a 6-token draft and a 6-token revision each
    assert summary["auroc_answer-logprob"] == 1.0  # the right draft is the more confident one
    assert json.loads(json.dumps(records)) == records
