"""The tiny model's corpus, tokenizer and training recipe (small sizes, so it runs in seconds)."""
from __future__ import annotations

import json
import random
import re

import pytest
import torch
from safetensors.torch import load_file

from companion import synthetic, tiny
from companion.prompts import build_prompt
from companion.tokenizer import QWEN3_CHAT_TEMPLATE, QWEN3_SPECIAL_TOKENS, load_tokenizer, render_jinja_chat
from companion.verifier import grade

MICRO = tiny.Recipe(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16, intermediate_size=64,
                    batch_size=8, warmup_steps=3, train_problems=60, val_examples=8, eval_every=5)


@pytest.fixture(scope="module")
def problems():
    return synthetic.split_problems("train")[:200]


@pytest.fixture(scope="module")
def tokenizer(problems):
    return tiny.train_tokenizer(tiny.tokenizer_corpus(problems))


@pytest.fixture(scope="module")
def corpus(tokenizer, problems):
    return tiny.build_corpus(tokenizer, problems, seed=0, kinds_per_problem=4)


def _assistant_message(example: tiny.Example) -> dict:
    return {"role": "assistant", "content": example.reply.removesuffix(tiny.END_OF_TURN)}


def _user_message(example: tiny.Example) -> str:
    return re.search(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", example.prompt, re.S).group(1)


def test_examples_are_what_the_jinja_template_renders(corpus):
    """Prompt + reply equals the Qwen3 template rendering the whole chat (its final newline aside)."""
    for example in corpus[:200]:
        messages = [{"role": "user", "content": _user_message(example)}, _assistant_message(example)]
        rendered = render_jinja_chat(QWEN3_CHAT_TEMPLATE, messages, enable_thinking=example.kind == "thinking")
        assert rendered == example.text + "\n", example.kind


def test_prompts_match_the_shared_prompt_builder(tokenizer, problems):
    problem = problems[0]
    for style in ("direct", "cot", "thinking"):
        example = tiny.make_example(tokenizer, problem, style, random.Random(0))
        assert example.prompt == build_prompt(tokenizer, problem.question, style)
    thinking = tiny.make_example(tokenizer, problem, "thinking", random.Random(0))
    assert thinking.prompt.endswith("<|im_start|>assistant\n")
    assert thinking.reply.startswith("<think>\n") and "\n</think>\n\nThe answer is \\boxed{" in thinking.reply
    cot = tiny.make_example(tokenizer, problem, "cot", random.Random(0))
    assert cot.prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_every_reply_grades_correct(corpus, problems):
    """The verifier finds the right answer in every target, whatever its kind."""
    answers = {p.question: str(p.answer) for p in problems}
    for example in corpus:
        if example.kind == "drill":
            continue
        question = _user_message(example).split("\n")[0]
        assert grade(example.reply.removesuffix(tiny.END_OF_TURN), answers[question]), example.text


def test_corpus_mix_and_determinism(tokenizer, problems):
    corpus = tiny.build_corpus(tokenizer, problems, seed=3)
    assert corpus == tiny.build_corpus(tokenizer, problems, seed=3)
    assert corpus != tiny.build_corpus(tokenizer, problems, seed=4)
    drills = round(tiny.DRILLS_PER_PROBLEM * len(problems))
    assert len(corpus) == 2 * len(problems) + drills
    assert sum(e.kind == "drill" for e in corpus) == drills
    stories = [e for e in corpus if e.kind != "drill"]
    kinds = {kind: sum(e.kind == kind for e in stories) / len(stories) for kind in tiny.CORPUS_MIX}
    assert all(share > 0.1 for share in kinds.values()), kinds
    assert kinds["cot"] > kinds["direct"]


def test_drills_are_true_equations_from_the_problems(tokenizer, problems):
    """Each drill line is a step of some training problem, with its correct result."""
    equations = {step.equation() for p in problems for step in p.steps}
    drill = tiny.drill_example(tokenizer, problems, random.Random(0))
    lines = drill.reply.removesuffix(tiny.END_OF_TURN).split("\n")
    assert len(lines) == tiny.DRILL_EQUATIONS
    for line in lines:
        assert line.endswith(".") and line[:-1] in equations, line
    asked = _user_message(drill).split("\n")
    assert asked[:-1] == [line.rsplit(" = ", 1)[0] for line in lines]
    assert asked[-1] == tiny.DRILL_INSTRUCTION
    assert drill.prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_a_slip_is_one_wrong_step_carried_forward(problems):
    rng = random.Random(0)
    slipped = 0
    for problem in problems:
        attempt = tiny.slipped_attempt(problem, rng)
        if attempt is None:
            continue
        slipped += 1
        for index, (step, (left, right, result)) in enumerate(zip(problem.steps, attempt.values)):
            computed = synthetic.OPERATIONS[step.op](left, right)
            assert (computed != result) == (index == attempt.slip)
        assert attempt.values[-1][2] != problem.answer or attempt.slip < len(problem.steps) - 1
        review = tiny.review_target(problem, attempt)
        assert f"not {attempt.values[attempt.slip][2]}. Wrong." in review
        assert review.endswith(tiny.final_answer(problem.answer))
    assert slipped > 0.8 * len(problems)


def test_review_of_a_right_attempt_confirms_it(problems):
    problem = problems[0]
    attempt = tiny.correct_attempt(problem)
    assert attempt.text(problem) == tiny.solution_text(problem)
    review = tiny.review_target(problem, attempt)
    assert review.count("Correct.") == len(problem.steps) and "Wrong" not in review
    assert tiny.REVISE_INSTRUCTION in tiny.revise_message(problem.question, attempt.text(problem))


def test_tokenizer_layout(tokenizer):
    """Qwen3's added tokens follow the BPE tokens in Qwen3's order; digits are single tokens."""
    added = tokenizer.added_tokens
    assert list(added) == list(QWEN3_SPECIAL_TOKENS)
    assert list(added.values()) == list(range(tokenizer.vocab_size, len(tokenizer)))
    assert len(tokenizer) <= tiny.TINY_VOCAB_SIZE
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert "<think>" not in tokenizer.special_tokens and "<|im_end|>" in tokenizer.special_tokens
    pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode("Ava has 1234 stickers: 1234 × 2 = 2468."))
    digits = [piece for piece in pieces if any(ch.isdigit() for ch in piece)]
    assert digits == list("1234") + list("1234") + ["2"] + list("2468")


def test_prompt_and_reply_tokenize_apart_as_together(tokenizer, corpus):
    for example in corpus:
        assert tokenizer.encode(example.prompt) + tokenizer.encode(example.reply) == tokenizer.encode(example.text)
        assert tokenizer.decode(tokenizer.encode(example.text)) == example.text


def test_transformers_reads_the_saved_tokenizer(tokenizer, corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizer.save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf.eos_token == "<|im_end|>" and hf.pad_token == "<|endoftext|>"
    for example in corpus[:50]:
        assert hf.encode(example.text, add_special_tokens=False) == tokenizer.encode(example.text)
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    for thinking in (True, False):
        assert hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                      enable_thinking=thinking) == \
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=thinking)


def test_collate_masks_everything_but_the_reply(tokenizer, corpus):
    encoded = tiny.encode_examples(tokenizer, corpus[:4])
    inputs, labels = tiny.collate(encoded, [0, 1, 2, 3], tokenizer.pad_token_id)
    for row, item in enumerate(encoded):
        reply = item.ids[item.reply_start:]
        assert labels[row][labels[row] != -100].tolist() == reply
        assert inputs[row, :len(item.ids) - 1].tolist() == item.ids[:-1]
        assert reply[-1] == tokenizer.eos_token_id


def test_batch_order_covers_each_example_once():
    lengths = [random.Random(i).randint(10, 200) for i in range(1000)]
    batches = tiny.batch_order(lengths, 32, seed=0, epoch=0)
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    assert batches == tiny.batch_order(lengths, 32, seed=0, epoch=0)
    assert batches != tiny.batch_order(lengths, 32, seed=0, epoch=1)


def test_learning_rate_schedule():
    recipe = tiny.Recipe(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert tiny.learning_rate(0, 100, recipe) == pytest.approx(1e-4)
    assert tiny.learning_rate(9, 100, recipe) == pytest.approx(1e-3)
    assert tiny.learning_rate(100, 100, recipe) == pytest.approx(1e-4)
    rates = [tiny.learning_rate(step, 100, recipe) for step in range(10, 101)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_training_lowers_the_loss_and_writes_a_loadable_model(tmp_path):
    from companion.checkpoint import load_model

    folder = tiny.train(tmp_path / "run", steps=30, recipe=MICRO, progress_bar=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 31))
    assert sum(r["loss"] for r in records[-5:]) < sum(r["loss"] for r in records[:5])
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    model, tokenizer = load_model(folder, device="cpu")
    assert model.config.vocab_size == len(tokenizer)
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= {p.name for p in folder.iterdir()}


def test_resumed_training_matches_an_uninterrupted_run(tmp_path):
    straight = tiny.train(tmp_path / "a", steps=12, recipe=MICRO, progress_bar=False)
    tiny.train(tmp_path / "b", steps=12, recipe=MICRO, progress_bar=False, pause_after=5)
    with pytest.raises(FileExistsError):
        tiny.train(tmp_path / "b", steps=12, recipe=MICRO, progress_bar=False)
    resumed = tiny.train(tmp_path / "b", steps=12, recipe=MICRO, progress_bar=False, resume=True)
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    log = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert log == list(range(1, 13))


def test_resume_refuses_another_recipe(tmp_path):
    tiny.train(tmp_path / "c", steps=4, recipe=MICRO, progress_bar=False, pause_after=2)
    other = tiny.Recipe(**{**MICRO.__dict__, "lr": 1e-4})
    with pytest.raises(ValueError, match="another recipe"):
        tiny.train(tmp_path / "c", steps=4, recipe=other, progress_bar=False, resume=True)


def test_the_default_run_is_a_fixed_number_of_steps():
    """The shipped model's command has no time budget: same command, same amount of work, any machine."""
    import argparse
    import inspect

    assert inspect.signature(tiny.train).parameters["minutes"].default is None
    parser = argparse.ArgumentParser()
    tiny.register_cli(parser.add_subparsers())
    args = parser.parse_args(["train-tiny", "--out", "runs/tiny"])
    assert args.steps is None and args.minutes is None
    assert tiny.reproduce_command(0, tiny.DEFAULT_STEPS, tiny.Recipe()) == "python -m companion train-tiny --out runs/tiny"
    assert tiny.reproduce_command(1, 50, tiny.Recipe(hidden_size=64)) == \
        "python -m companion train-tiny --out runs/tiny --steps 50 --seed 1 --hidden-size 64"


def test_minutes_caps_a_fixed_step_run(tmp_path):
    tiny.train(tmp_path / "d", minutes=1e-4, steps=50, recipe=MICRO, progress_bar=False)
    log = (tmp_path / "d" / "log.jsonl").read_text().splitlines()
    assert 1 <= len(log) < 50
    card = (tmp_path / "d" / "model" / "README.md").read_text()
    assert "parameters" in card and "tokens/s" in card
