"""Inference-time scaling: pass@k, voting over equivalent answers, early stopping, shared prefill,
best-of-n, the temperature/top-p sweep and the ``scale`` command.

Most integration tests use a *scripted* model: a real ``Qwen3Model`` whose blocks are switched off
(zero output projections) so that the next token depends only on the current one, with weights
set so that it writes ``\\boxed{...}`` answers with chosen probabilities. That gives a model whose
answer distribution is known, which random weights cannot.
"""
from __future__ import annotations

import argparse
import json
import math
import random
from fractions import Fraction
from math import comb
from types import SimpleNamespace

import pytest
import torch

from companion import scaling
from companion.checkpoint import save_model
from companion.config import ModelConfig
from companion.model import Qwen3Model
from companion.prompts import build_prompt
from companion.scaling import (Sample, choose_best, entropy_bits, group_answers, logprob_scorer, mean_pass_at_k,
                               next_round_size, oracle_scorer, pass_at_k, self_consistency,
                               self_consistency_from_samples, vote)
from companion.tokenizer import load_tokenizer

HIDDEN = 64
SCRIPTED_CONFIG = ModelConfig(vocab_size=151936, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                              max_position_embeddings=4096, tie_word_embeddings=False)
# Qwen3 token ids: "\n\n" ends every chat prompt but the thinking one, which ends with "\n"; then "\",
# "boxed", "{", answer tokens, "}".
NEWLINE, NEWLINES, BACKSLASH, BOXED, OPEN, CLOSE, IM_END = 198, 271, 59, 79075, 90, 92, 151645
DIGIT = {str(d): 15 + d for d in range(10)}
SLASH, DOT = 14, 13
ANSWER_TOKENS = {"7": [DIGIT["7"]], "8": [DIGIT["8"]], "3": [DIGIT["3"]],
                 "1/2": [DIGIT["1"], SLASH, DIGIT["2"]], "0.5": [DIGIT["0"], DOT, DIGIT["5"]]}


def scripted_model(answers: dict[str, float], strength: float = 40.0) -> Qwen3Model:
    """A model that replies ``\\boxed{a}`` with probability ``answers[a]`` (at temperature 1).

    With the blocks' output projections at zero, each position's hidden state is its own token's
    embedding, so the model is a bigram table: embedding row = one-hot state, LM-head rows = the
    logits of the successors. Answers must not share a token position with different successors.
    """
    transitions: dict[int, dict[int, float]] = {NEWLINES: {BACKSLASH: 1.0}, NEWLINE: {BACKSLASH: 1.0},
                                                BACKSLASH: {BOXED: 1.0},
                                                BOXED: {OPEN: 1.0}, OPEN: {}}
    for answer, p in answers.items():
        tokens = ANSWER_TOKENS[answer] + [CLOSE]
        transitions[OPEN][tokens[0]] = p
        for token, nxt in zip(tokens, tokens[1:]):
            transitions[token] = {nxt: 1.0}
    transitions[CLOSE] = {IM_END: 1.0}
    model = Qwen3Model(SCRIPTED_CONFIG).init_weights(seed=0)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        model.embed.weight.zero_()
        model.lm_head.weight.zero_()
        scale = math.sqrt(HIDDEN)  # RMSNorm turns a one-hot vector into sqrt(hidden) * one-hot
        for state, (token, successors) in enumerate(transitions.items()):
            model.embed.weight[token, state] = 1.0
            for nxt, p in successors.items():
                model.lm_head.weight[nxt, state] = (strength + math.log(p)) / scale
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer(shared_data):
    return load_tokenizer(shared_data / "qwen3-0.6b")


@pytest.fixture(scope="module")
def prompt(tokenizer):
    return build_prompt(tokenizer, "Tom has 3 apples and buys 4 more. How many apples does he have?", "cot")


def make_samples(answers, logprobs=None, correct=None):
    logprobs = logprobs or [-1.0] * len(answers)
    return [Sample(f"\\boxed{{{a}}}" if a else "no idea", a, 5, lp, "stop", None if correct is None else correct[i])
            for i, (a, lp) in enumerate(zip(answers, logprobs))]


# ---- pass@k --------------------------------------------------------------------------------------

def test_pass_at_k_equals_the_binomial_formula_exactly():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - Fraction(comb(n - c, k), comb(n, k))
                assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_where_binomials_overflow_floats():
    n, c, k = 5000, 3, 1000  # C(5000, 1000) has about 1000 digits
    exact = 1 - Fraction(comb(n - c, k), comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-9)
    assert pass_at_k(n, 0, k) == 0.0 and pass_at_k(n, n - k + 1, k) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)


def test_pass_at_k_rejects_impossible_counts():
    for n, c, k in [(4, 5, 1), (4, 2, 5), (4, 2, 0), (4, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)
    assert mean_pass_at_k([(4, 0), (4, 4)], 2) == pytest.approx(0.5)


# ---- voting --------------------------------------------------------------------------------------

def test_equivalent_spellings_vote_together_and_no_answer_never_votes():
    groups = group_answers(["1/2", "3", "0.5", None, "\\frac{1}{2}", "3", "1/2"])
    assert groups == [("1/2", [0, 2, 4, 6]), ("3", [1, 5])]
    result = vote(make_samples(["1/2", "3", "0.5", "3", "\\frac{1}{2}", None, None, None]))
    assert result.answer == "1/2" and [g.count for g in result.groups] == [3, 2]
    assert vote(make_samples([None, None])).answer is None


def test_a_tie_goes_to_the_answer_with_the_higher_mean_logprob_whatever_the_order():
    for first, second in [("4", "5"), ("5", "4")]:
        samples = make_samples([first, second, first, second], logprobs=[-0.9, -0.2, -0.7, -0.4])
        result = vote(samples)
        assert result.answer == second  # mean -0.3 beats mean -0.8
        assert result.groups[0].mean_logprob == pytest.approx(-0.3)
    # without a tie the count decides, however confident the minority
    assert vote(make_samples(["4", "4", "5"], logprobs=[-3.0, -3.0, -0.01])).answer == "4"


def test_round_size_is_the_fewest_samples_after_which_a_stop_is_possible():
    for remaining in range(0, 25):
        for margin in range(0, remaining + 3):
            size = next_round_size(margin, remaining)
            if margin > remaining or remaining == 0:
                assert size == 0
                continue
            assert margin + size > remaining - size  # all to the leader: decided after `size`
            assert not margin + (size - 1) > remaining - (size - 1)  # but not one sample earlier


def sequential_stop(answers, n):
    """Reference early stopping: look at the vote after every single sample."""
    for t in range(1, n + 1):
        result = vote(make_samples(answers[:t]))
        if result.margin > n - t:
            return t
    return n


def test_early_stopping_in_rounds_uses_exactly_the_samples_of_checking_after_each_one():
    rng = random.Random(0)
    for trial in range(300):
        n = rng.choice([1, 2, 3, 5, 10, 20])
        answers = rng.choices(["4", "5", "6", None], weights=[rng.random() * 3, 1, rng.random(), 0.3], k=n)
        result = self_consistency_from_samples(make_samples(answers), n, early_stop=True)
        assert len(result.samples) == sequential_stop(answers, n), answers
        assert result.answer == vote(make_samples(answers)[:len(result.samples)]).answer
        full = self_consistency_from_samples(make_samples(answers), n, early_stop=False)
        assert len(full.samples) == n and full.rounds == 1
        if result.stopped_early:  # stopping early never changes the winner
            assert full.answer == result.answer


def test_unanimous_samples_stop_after_a_bare_majority():
    result = self_consistency_from_samples(make_samples(["9"] * 10), 10)
    assert len(result.samples) == 6 and result.rounds == 1 and result.stopped_early
    result = self_consistency_from_samples(make_samples(["9", "8", "9", "9", "9", "9", "9", "9", "9", "9"]), 10)
    assert len(result.samples) == 7 and result.rounds == 2  # 5-1 after six: one more sample decides


# ---- self-consistency with a model ---------------------------------------------------------------

class PrefillCounter:
    """Counts forward calls that process more than one position (prefills) and their batch rows."""

    def __init__(self, model):
        self.calls: list[tuple[int, int]] = []
        self.handle = model.register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        ids = args[0]
        if ids.shape[1] > 1:
            self.calls.append(tuple(ids.shape))


def test_all_samples_of_a_round_share_one_prefill_of_one_row(tokenizer, prompt):
    model = scripted_model({"7": 0.5, "8": 0.5})
    counter = PrefillCounter(model)
    result = self_consistency(model, tokenizer, prompt, n=10, temperature=1.0, top_p=1.0, early_stop=False,
                              max_new_tokens=12, same=str.__eq__)
    counter.handle.remove()
    assert len(result.samples) == 10 and result.rounds == 1
    assert counter.calls == [(1, len(tokenizer.encode(prompt)))]
    assert {s.answer for s in result.samples} == {"7", "8"}
    assert all(s.text in ("\\boxed{7}", "\\boxed{8}") and s.num_tokens == 6 for s in result.samples)


def test_a_sure_model_stops_after_six_of_ten_samples(tokenizer, prompt):
    model = scripted_model({"7": 1.0})
    counter = PrefillCounter(model)
    result = self_consistency(model, tokenizer, prompt, n=10, temperature=1.0, top_p=1.0, max_new_tokens=12)
    counter.handle.remove()
    assert result.answer == "7" and result.stopped_early and len(result.samples) == 6
    assert result.num_tokens == 6 * 6 and len(counter.calls) == 1
    replay = self_consistency_from_samples(result.samples + result.samples, 10)
    assert len(replay.samples) == 6  # the live run and the replay apply the same rule


def test_votes_are_grouped_by_equivalence_in_a_real_run(tokenizer, prompt):
    model = scripted_model({"1/2": 0.35, "0.5": 0.35, "3": 0.3})
    result = self_consistency(model, tokenizer, prompt, n=20, temperature=1.0, top_p=1.0, early_stop=False,
                              max_new_tokens=12,
                              seed=1)
    spelled = [s.answer for s in result.samples]
    assert set(spelled) == {"1/2", "0.5", "3"}
    half = result.groups[0] if result.groups[0].answer in ("1/2", "0.5") else result.groups[1]
    assert half.count == spelled.count("1/2") + spelled.count("0.5")
    assert len(result.groups) == 2 and result.answer in ("1/2", "0.5")


def test_seeded_runs_repeat_and_every_round_gets_its_own_seed(tokenizer, prompt, monkeypatch):
    model = scripted_model({"7": 0.5, "8": 0.5})
    runs = [self_consistency(model, tokenizer, prompt, n=5, temperature=1.0, top_p=1.0, max_new_tokens=12, seed=3)
            for _ in range(2)]
    assert [s.answer for s in runs[0].samples] == [s.answer for s in runs[1].samples]
    seeds = []
    real_generate = scaling.generate

    def spy(*args, **kwargs):
        seeds.append(kwargs["seed"])
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(scaling, "generate", spy)
    batch = scaling.self_consistency_batch(model, tokenizer, [prompt] * 3, n=3, temperature=1.0, top_p=1.0,
                                           max_new_tokens=12)
    assert any(r.rounds > 1 for r in batch) and len(seeds) > 1
    assert len(set(seeds)) == len(seeds)  # reusing a seed would replay the first round's samples
    for r in batch:  # 2 samples first; a third only if they disagree
        assert len(r.samples) == (2 if r.samples[0].answer == r.samples[1].answer else 3)
        assert r.stopped_early == (len(r.samples) < 3)


# ---- best-of-n -----------------------------------------------------------------------------------

def test_choose_best_by_logprob_and_by_oracle():
    samples = make_samples(["4", "5", "6"], logprobs=[-0.5, -0.1, -0.9])
    assert choose_best("", samples, logprob_scorer).answer == "5"
    assert choose_best("", samples, oracle_scorer("6.0")).answer == "6"
    assert choose_best("", samples, oracle_scorer("7")).chosen == 0  # no right one: the first
    with pytest.raises(ValueError):
        scaling.make_scorer("oracle")


def test_best_of_n_by_logprob_prefers_the_likelier_answer(tokenizer, prompt):
    model = scripted_model({"7": 0.8, "8": 0.2})
    results = scaling.best_of_n(model, tokenizer, [prompt] * 4, n=6, temperature=1.0, top_p=1.0,
                                  max_new_tokens=12, seed=5)
    for result in results:
        answers = {s.answer for s in result.samples}
        assert result.answer == ("7" if "7" in answers else "8")
        assert result.scores == [s.mean_logprob for s in result.samples]
    assert any({s.answer for s in r.samples} == {"7", "8"} for r in results)


# ---- diversity and the sweep --------------------------------------------------------------------

def test_entropy_of_answer_distributions():
    assert entropy_bits([5]) == 0.0 and entropy_bits([]) == 0.0
    assert entropy_bits([2, 2]) == pytest.approx(1.0)
    assert entropy_bits([1, 1, 1, 1]) == pytest.approx(2.0)
    assert scaling.answer_distribution(["1/2", "0.5", None, "2"]) == {"1/2": 2, "2": 1, scaling.NO_ANSWER: 1}


def test_sweep_temperature_adds_diversity_and_top_p_removes_it(tokenizer):
    model = scripted_model({"7": 0.8, "8": 0.2})
    problems = [SimpleNamespace(question=q, answer="7") for q in ("What is 3 + 4?", "What is 14 / 2?")]
    rows = scaling.sampling_sweep(model, tokenizer, problems, temperatures=[0.0, 1.5], top_ps=[1.0, 0.5], n=6,
                                  max_new_tokens=12)
    by = {(r["temperature"], r["top_p"]): r for r in rows}
    assert by[(0.0, 1.0)]["entropy"] == 0.0 and by[(0.0, 1.0)]["accuracy"] == 1.0
    assert by[(1.5, 1.0)]["entropy"] > 0.3 and by[(1.5, 1.0)]["distinct"] > 1.0
    assert by[(1.5, 1.0)]["accuracy"] < 1.0
    # p("7") at T=1.5 is about 0.72 > 0.5: the nucleus holds "7" alone, so no diversity is left
    assert by[(1.5, 0.5)]["entropy"] == 0.0 and by[(1.5, 0.5)]["accuracy"] == 1.0
    assert all(r["tokens"] == 6 for r in rows)


def test_next_token_distribution_shows_the_kept_nucleus(tokenizer, prompt):
    model = scripted_model({"7": 0.8, "8": 0.2})
    text = prompt + "\\boxed{"
    full = scaling.next_token_distribution(model, tokenizer, text, temperature=1.0, top_p=1.0, show=3)
    assert [t.token for t in full[:2]] == ["7", "8"]
    assert full[0].probability == pytest.approx(0.8, abs=1e-4) and full[1].kept
    nucleus = scaling.next_token_distribution(model, tokenizer, text, temperature=1.0, top_p=0.5, show=3)
    assert nucleus[0].kept and nucleus[0].kept_probability == pytest.approx(1.0) and not nucleus[1].kept
    hot = scaling.next_token_distribution(model, tokenizer, text, temperature=2.0, show=3)
    assert hot[0].probability == pytest.approx(math.sqrt(0.8) / (math.sqrt(0.8) + math.sqrt(0.2)), abs=1e-3)
    greedy = scaling.next_token_distribution(model, tokenizer, text, temperature=0.0, show=3)
    assert [t.kept for t in greedy] == [True, False, False]


def test_scaling_curves_from_a_pool():
    pools = [make_samples(["1", "1", "1", "2"], correct=[True, True, True, False]),
             make_samples(["2", "3", "3", "2"], correct=[False, False, False, False]),
             make_samples(["3", "4", "4", "4"], correct=[False, True, True, True])]
    points = {(p.method, p.n): p for p in scaling.scaling_curves(pools, [1, 4], same=str.__eq__)}
    assert points[("self-consistency", 1)].accuracy == pytest.approx(1 / 3)
    assert points[("self-consistency", 4)].accuracy == pytest.approx(2 / 3)
    assert points[("self-consistency", 4)].tokens == 20
    assert points[("pass@k (oracle)", 1)].accuracy == pytest.approx((3 / 4 + 0 + 3 / 4) / 3)
    assert points[("pass@k (oracle)", 4)].accuracy == pytest.approx(2 / 3)
    assert points[("self-consistency (early stop)", 4)].tokens < 20


# ---- the command line ----------------------------------------------------------------------------

def run_cli(module, argv):
    parser = argparse.ArgumentParser()
    module.register_cli(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def scripted_folder(tmp_path_factory, tokenizer):
    return save_model(scripted_model({"7": 0.7, "8": 0.3}), tokenizer, tmp_path_factory.mktemp("m") / "scripted")


def fake_problems(n=3):
    return [SimpleNamespace(id=f"p{i}", question=f"What is {i} + 7 - {i}?", answer="7") for i in range(n)]


def test_scale_command_writes_records_and_ends_with_accuracy(scripted_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(scaling, "load_benchmark", lambda name, split=None, limit=None: fake_problems()[:limit])
    out = tmp_path / "sc.jsonl"
    assert run_cli(scaling, ["scale", "--model", str(scripted_folder), "--method", "self-consistency", "--n", "5",
                             "--temperature", "1.0", "--top-p", "1.0", "--limit", "3", "--out", str(out),
                             "--max-new-tokens", "12", "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and lines[-1] == f"accuracy: {sum(r['correct'] for r in records) / 3:.3f}"
    for r in records:
        assert r["tokens"] == 6 * r["num_samples"] and 3 <= r["num_samples"] <= 5
        assert sum(v["count"] for v in r["votes"]) == r["num_samples"]
        assert r["chosen"] == r["votes"][0]["answer"] and r["correct"] == (r["chosen"] == "7")
        assert r["stopped_early"] == (r["num_samples"] < 5)


def test_scale_command_greedy_and_best_of_n_with_pass_at_k(scripted_folder, monkeypatch, capsys):
    monkeypatch.setattr(scaling, "load_benchmark", lambda name, split=None, limit=None: fake_problems()[:limit])
    run_cli(scaling, ["scale", "--model", str(scripted_folder), "--method", "greedy", "--limit", "2",
                      "--max-new-tokens", "12", "--no-progress"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == "accuracy: 1.000"
    run_cli(scaling, ["scale", "--model", str(scripted_folder), "--method", "best-of-n", "--n", "4", "--scorer",
                      "oracle", "--temperature", "1.0", "--limit", "3", "--max-new-tokens", "12", "--no-progress"])
    lines = capsys.readouterr().out.strip().splitlines()
    values = dict(line.split(": ") for line in lines[1:])
    assert {"pass@1", "pass@2", "pass@4"} <= set(values)
    assert float(values["accuracy"]) == pytest.approx(float(values["pass@4"]), abs=1e-3)  # the oracle is pass@n


def test_run_settings_reject_unknown_choices():
    with pytest.raises(ValueError):
        scaling.RunSettings(method="beam")
    with pytest.raises(ValueError):
        scaling.RunSettings(prompt_style="shouting")
    assert scaling.RunSettings(method="greedy").prompt_style == "direct"
    assert scaling.RunSettings(method="cot").prompt_style == "cot"


def test_run_settings_reject_bad_sampling_values_by_name():
    for kwargs, words in [({"method": "self-consistency", "temperature": 0.0}, "temperature above 0"),
                          ({"method": "best-of-n", "temperature": 0.0}, "temperature above 0"),
                          ({"temperature": -0.5}, "temperature"), ({"top_p": 0.0}, "top-p"),
                          ({"top_p": 1.5}, "top-p"), ({"top_k": -1}, "top-k"), ({"n": 0}, "n must"),
                          ({"scorer": "vibes"}, "scorer"), ({"max_new_tokens": 0}, "max-new-tokens")]:
        with pytest.raises(ValueError, match=words):
            scaling.RunSettings(**kwargs)
    assert scaling.RunSettings(method="greedy", temperature=0.0).method == "greedy"


def test_scale_command_reports_bad_input_without_a_traceback(capsys):
    from companion.cli import main

    assert main(["scale", "--method", "self-consistency", "--temperature", "0", "--limit", "1"]) == 1
    error = capsys.readouterr().err
    assert "temperature above 0" in error and "Traceback" not in error


# ---- prompt styles -------------------------------------------------------------------------------

def test_three_prompt_styles_on_the_qwen3_template(tokenizer):
    question = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    prompts = {style: build_prompt(tokenizer, question, style) for style in ("direct", "cot", "thinking")}
    empty_think = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert prompts["direct"].endswith(empty_think) and "Give only the final answer" in prompts["direct"]
    assert prompts["cot"].endswith(empty_think) and "step by step" in prompts["cot"]
    assert prompts["thinking"].endswith("<|im_start|>assistant\n")  # the model opens <think> itself
    assert all(p.startswith(f"<|im_start|>user\n{question}\n") for p in prompts.values())
    with pytest.raises(ValueError, match="prompt style"):
        build_prompt(tokenizer, question, "shouting")


def test_each_method_uses_its_prompt_style(scripted_folder, tokenizer):
    from companion.checkpoint import load_model

    model, tok = load_model(scripted_folder, device="cpu")
    problems = fake_problems(2)
    for method, style in [("greedy", None), ("cot", None), ("cot", "thinking"), ("self-consistency", "direct")]:
        settings = scaling.RunSettings(method, n=3, temperature=1.0, prompt_style=style, max_new_tokens=12)
        records = scaling.run_problems(model, tok, problems, settings)
        expected = style or scaling.DEFAULT_STYLE[method]
        for problem, record in zip(problems, records):
            prompt_tokens = len(tok.encode(build_prompt(tok, problem.question, expected)))
            assert record["prompt_style"] == expected
            assert record["prefill_tokens"] == record["rounds"] * prompt_tokens


# ---- the measurement script ----------------------------------------------------------------------

def load_script(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_scaling_writes_the_table_json_and_plots(scripted_folder, tmp_path, monkeypatch):
    measure = load_script("measure_scaling")
    monkeypatch.setattr(measure, "load_problems", lambda name, split=None, limit=None: fake_problems(4)[:limit])
    out = tmp_path / "results"
    results = measure.main(["--model", str(scripted_folder), "--limit", "3", "--pool", "4", "--ns", "1", "3",
                            "--best-of", "2", "--ks", "1", "2", "4", "--max-new-tokens", "12", "--sweep-limit", "2",
                            "--sweep-temperatures", "0.0", "1.0", "--sweep-top-ps", "1.0", "0.5", "--sweep-n", "4",
                            "--out-dir", str(out)])
    assert {f.name for f in out.iterdir()} == {"scaling.md", "scaling.json", "scaling_curves.png",
                                               "sampling_sweep.png"}
    assert json.loads((out / "scaling.json").read_text()) == results
    rows = {(r["method"], r["n"]): r for r in results["rows"]}
    for style in ("direct", "step-by-step", "thinking"):  # the scripted model always says 7 when greedy
        assert rows[(f"greedy, {style} prompt", 1)] == {"method": f"greedy, {style} prompt", "n": 1,
                                                         "accuracy": 1.0, "tokens": 6.0}
    assert rows[("self-consistency", 3)]["tokens"] == 18 and rows[("self-consistency (early stop)", 3)]["tokens"] <= 18
    passes = [rows[("pass@k (unbiased, from 4)", k)]["accuracy"] for k in (1, 2, 4)]
    assert passes == sorted(passes) and 0 < passes[0] < 1
    assert rows[("pass@k (unbiased, from 4)", 4)]["tokens"] == 24
    assert {("best-of-n by log-prob", 2), ("best-of-n by heuristic", 2)} <= set(rows)
    table = (out / "scaling.md").read_text()
    assert table.count("\n| ") == len(results["rows"]) + 1  # header and one line per row
    assert "| self-consistency | 3 |" in table and results["meta"]["problems"] == 3
    sweep = {(r["temperature"], r["top_p"]): r for r in results["sweep"]}
    assert set(sweep) == {(0.0, 1.0), (0.0, 0.5), (1.0, 1.0), (1.0, 0.5)}
    assert sweep[(0.0, 1.0)]["entropy"] == 0.0 and sweep[(1.0, 0.5)]["entropy"] == 0.0  # p(7)=0.7 > 0.5
    assert {(c["method"], c["n"]) for c in results["curves"]} >= {("self-consistency", 1), ("pass@k (oracle)", 3)}


def test_answer_paths_count_the_different_texts_behind_each_answer():
    texts = ["a: 2 + 2 = 4. \\boxed{4}", "a: 2 + 2 = 4. \\boxed{4}", "b: 2 × 2 = 4. \\boxed{4}",
             "a: 2 + 2 = 5. \\boxed{5}", "c: 3 + 2 = 5. \\boxed{5}", "d: 2 + 3 = 5. \\boxed{5}", "no answer"]
    answers = ["4", "4", "4.0", "5", "5", "5", None]
    samples = [Sample(t, a, 5, -0.1 * i, "stop", a in ("4", "4.0")) for i, (t, a) in enumerate(zip(texts, answers))]
    paths = scaling.answer_paths(samples)
    assert [(p.answer, p.correct, p.samples, p.distinct_texts) for p in paths] == [
        ("4", True, 3, 2), ("5", False, 3, 3)]  # "4" and "4.0" vote together; the tie goes to the higher log-prob


def test_vote_analysis_counts_outcomes_and_problems_no_sample_gets_right():
    measure = load_script("measure_scaling")

    def pool(*answers):
        return [Sample(f"x = {a}. \\boxed{{{a}}}", a, 5, -0.1, "stop", a == "4") for a in answers]

    greedy = [{"correct": True}, {"correct": False}, {"correct": False}, {"correct": False}]
    pools = [pool("4", "4", "5"), pool("4", "4", "6"), pool("5", "5", "4"), pool("5", "6", "7")]
    analysis = measure.vote_analysis(greedy, pools, n=3)
    assert analysis["outcomes"] == {"both right": 1, "greedy only": 0, "vote only": 1, "both wrong": 2}
    assert analysis["never_sampled"] == 1  # the last problem: "4" is in none of its samples
    text = measure.vote_analysis_text(analysis)
    assert "on 1 of these, none of the 3 samples is right" in text and "at least two of the 3 votes" in text
