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


def test_the_recipe_sets_the_share_of_drills(tokenizer, problems):
    recipe = tiny.Recipe(drills_per_problem=1.5)
    train, _ = tiny.prepare_data(tokenizer, recipe, 0, problems[:40], synthetic.split_problems("validation")[:4])
    assert len(train) == 2 * 40 + 60  # two chats per problem plus 1.5 drill chats per problem
    texts = tiny.tokenizer_corpus(problems[:40], drills_per_problem=1.5)
    assert sum(tiny.DRILL_INSTRUCTION in text for text in texts) == 60


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


def test_a_state_from_before_a_recipe_field_existed_resumes(tmp_path):
    tiny.train(tmp_path / "d", steps=4, recipe=MICRO, progress_bar=False, pause_after=2)
    state_path = tmp_path / "d" / "state.pt"
    state = torch.load(state_path, weights_only=False)
    del state["recipe"]["worked_lines"], state["recipe"]["swapped_operands"]  # as written before those knobs
    torch.save(state, state_path)
    tiny.train(tmp_path / "d", steps=4, recipe=MICRO, progress_bar=False, resume=True)
    assert (tmp_path / "d" / "model" / "model.safetensors").exists()
    # the old run did not have the knob, so resuming it with the knob set is still refused
    tiny.train(tmp_path / "e", steps=4, recipe=MICRO, progress_bar=False, pause_after=2)
    state = torch.load(tmp_path / "e" / "state.pt", weights_only=False)
    del state["recipe"]["worked_lines"]
    torch.save(state, tmp_path / "e" / "state.pt")
    with pytest.raises(ValueError, match="another recipe"):
        tiny.train(tmp_path / "e", steps=4, recipe=tiny.Recipe(**{**MICRO.__dict__, "worked_lines": 0.5}),
                   progress_bar=False, resume=True)


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


def test_empty_think_replies_answer_at_once(tokenizer, problems):
    """A share of thinking replies closes the think block at once and still ends in the right answer."""
    def empty(corpus):
        return [e for e in corpus if e.kind == "thinking" and e.reply.startswith("<think>\n\n</think>\n\n")]

    assert not empty(tiny.build_corpus(tokenizer, problems, seed=0))
    corpus = tiny.build_corpus(tokenizer, problems, seed=0, empty_think=0.6)
    thinking = [e for e in corpus if e.kind == "thinking"]
    share = len(empty(corpus)) / len(thinking)
    assert 0.4 < share < 0.8, share  # 0.6 of about 80 thinking chats
    for example in empty(corpus):
        assert example.prompt.endswith("<|im_start|>assistant\n")  # thinking mode: the model opens the block
        assert re.fullmatch(r"<think>\n\n</think>\n\nThe answer is \\boxed\{\d+\}\.<\|im_end\|>", example.reply)
    for example in empty(corpus)[:20]:
        problem = next(p for p in problems if p.question in example.prompt)
        assert grade(example.reply, str(problem.answer))


def test_bare_attempt_reviews_work_the_problem_out_then_judge(tokenizer, problems):
    corpus = tiny.build_corpus(tokenizer, problems, seed=0, bare_attempts=0.5)
    reviews = [e for e in corpus if e.kind == "revise"]
    bare = [e for e in reviews if "\nCheck the attempt" in e.prompt and not e.reply.startswith("Check:")]
    assert 0.3 < len(bare) / len(reviews) < 0.7
    verdicts = {"right": 0, "wrong": 0}
    for example in bare:
        problem = next(p for p in problems if p.question in example.prompt)
        shown = int(re.search(r"an attempt:\n\\boxed\{(\d+)\}\n", example.prompt).group(1))
        lines = example.reply.removesuffix(tiny.END_OF_TURN).split("\n")
        assert lines[:-1] == problem.solution_lines()  # the work comes before the verdict
        assert grade(example.reply, str(problem.answer))
        right = shown == problem.answer
        verdicts["right" if right else "wrong"] += 1
        assert lines[-1].startswith("The attempt is correct." if right else f"The attempt says {shown}, which is wrong.")
    assert min(verdicts.values()) > 0, verdicts
    assert not any(not e.reply.startswith("Check:") for e in tiny.build_corpus(tokenizer, problems, seed=0)
                   if e.kind == "revise")


def test_the_reproduce_command_names_the_corpus_flags():
    import argparse
    import shlex

    recipe = tiny.Recipe(empty_think=0.5, bare_attempts=0.3, drills_per_problem=1.0, habits_from_step=7)
    command = tiny.reproduce_command(0, tiny.DEFAULT_STEPS, recipe)
    assert command.endswith("--drills-per-problem 1.0 --empty-think 0.5 --bare-attempts 0.3 --habits-from-step 7")
    # the command, parsed by train-tiny's own parser, asks for the same recipe
    parser = argparse.ArgumentParser()
    tiny.register_cli(parser.add_subparsers())
    every_flag = tiny.Recipe(train_problems=100, hidden_size=64, num_layers=3, intermediate_size=96,
                             drills_per_problem=1.0, empty_think=0.5, bare_attempts=0.3, habits_from_step=7,
                             worked_lines=0.4, swapped_operands=0.6)
    for wanted in (recipe, every_flag, tiny.Recipe()):
        args = parser.parse_args(shlex.split(tiny.reproduce_command(0, tiny.DEFAULT_STEPS, wanted))[3:])
        assert tiny.recipe_from_args(args) == wanted
    assert tiny.reproduce_command(0, tiny.DEFAULT_STEPS, tiny.Recipe()) == "python -m companion train-tiny --out runs/tiny"


def test_the_card_describes_the_corpus_flags():
    facts = tiny.CardFacts(steps=10, elapsed=60.0, epochs_begun=1, seed=0, examples=100, tokens=1000, parameters=5)
    plain = tiny.model_card(tiny.Recipe(empty_think=0.0, bare_attempts=0.0), facts)
    assert "think block empty" not in plain and "bare answer" not in plain and "enter the corpus" not in plain
    card = tiny.model_card(tiny.Recipe(empty_think=0.5, bare_attempts=0.2, drills_per_problem=1.5), facts)
    assert "plus 1.5 drill chat per problem" in card
    assert "50% of the thinking replies leave the think block empty" in card
    assert "20% of the reviews are of a bare answer" in card
    assert "enter the corpus" not in card  # from step 0: no switch to describe
    assert "--empty-think 0.5 --bare-attempts 0.2" in card
    habits = tiny.model_card(tiny.Recipe(**tiny.HABITS), facts)  # data/tiny-reasoner-habits
    assert "60% of the thinking replies" in habits and f"enter the corpus at step {tiny.HABITS_FROM_STEP}" in habits
    assert "--empty-think 0.6 --bare-attempts 0.3 --habits-from-step 1300" in habits


def test_habits_replace_replies_and_keep_the_chat_order(tokenizer, problems):
    """The corpus with habits is the plain corpus, chat for chat, with some replies replaced."""
    plain = tiny.build_corpus(tokenizer, problems, seed=2)
    habits = tiny.build_corpus(tokenizer, problems, seed=2, empty_think=0.6, bare_attempts=0.3)
    assert len(plain) == len(habits)
    changed = [(a, b) for a, b in zip(plain, habits) if a != b]
    assert changed and all(a.kind in ("thinking", "revise", "direct") for a, _ in changed)
    assert all(a.prompt == b.prompt for a, b in changed if a.kind == "thinking")
    assert all(a.kind == b.kind or (a.kind, b.kind) == ("direct", "cot") for a, b in changed)
    # the worked solutions that empty think blocks take out come back as step-by-step chats
    emptied = sum(a.kind == "thinking" and "<think>\n\n</think>" in b.reply for a, b in changed)
    to_cot = sum((a.kind, b.kind) == ("direct", "cot") for a, b in changed)
    assert emptied and to_cot and 0.5 < to_cot / emptied < 2, (emptied, to_cot)
    for a, b in changed:
        if b.kind == "cot":
            problem = next(p for p in problems if p.question in a.prompt)
            assert b.prompt == build_prompt(tokenizer, problem.question, "cot")
            assert b.reply.startswith(problem.solution_lines()[0])


def _weights(folder):
    return load_file(folder / "model.safetensors")


def test_habits_from_a_step_leave_the_earlier_steps_as_a_plain_run(tmp_path):
    late = tiny.Recipe(**{**MICRO.__dict__, "empty_think": 0.6, "bare_attempts": 0.5, "habits_from_step": 3})
    early = tiny.Recipe(**{**late.__dict__, "habits_from_step": 0})
    runs = {}
    for name, recipe in (("plain", MICRO), ("late", late), ("early", early)):
        runs[name, 3] = _weights(tiny.train(tmp_path / name, steps=8, recipe=recipe, progress_bar=False, pause_after=3))
        runs[name, 8] = _weights(tiny.train(tmp_path / name, steps=8, recipe=recipe, progress_bar=False, resume=True))
    same = lambda a, b: all(torch.equal(runs[a][k], runs[b][k]) for k in runs[a])  # noqa: E731
    assert same(("plain", 3), ("late", 3))  # before the switch: the plain run, bit for bit
    assert not same(("plain", 8), ("late", 8))  # after it: other chats
    assert not same(("plain", 3), ("early", 3))  # habits from step 0 change the first steps too
    card = (tmp_path / "late" / "model" / "README.md").read_text()
    assert "These habits enter the corpus at step 3" in card


def _evaluate(expression: str) -> int:
    """``40 × 3 + 6 × 3`` or ``37 - 3 - 2``: products and quotients first, then left to right."""
    total, sign = 0, 1
    for term in re.split(r" ([+-]) ", expression):
        if term in "+-":
            sign = 1 if term == "+" else -1
            continue
        value, *rest = term.split(" ")
        value = int(value)
        for op, number in zip(rest[::2], rest[1::2]):
            value = value * int(number) if op == "×" else value // int(number)
        total += sign * value
    return total


def test_worked_equations_are_chains_of_true_equations(problems):
    worked = 0
    for problem in problems:
        for step in problem.steps:
            equation = tiny.worked_equation(step)
            if equation is None:
                continue
            worked += 1
            stages = equation.split(" = ")
            assert stages[0] == f"{step.left.value} {step.op} {step.right.value}" and stages[-1] == str(step.result)
            assert len(stages) == 4, equation
            assert all(_evaluate(stage) == step.result for stage in stages), equation
    assert worked > 200


@pytest.mark.parametrize("step, expected", [
    ((37, "+", 15), "37 + 15 = 37 + 10 + 5 = 47 + 5 = 52"),
    ((37, "+", 5), "37 + 5 = 37 + 3 + 2 = 40 + 2 = 42"),
    ((37, "+", 2), None),  # no carry: nothing to split
    ((52, "-", 7), "52 - 7 = 52 - 2 - 5 = 50 - 5 = 45"),
    ((52, "-", 20), None),
    ((4, "×", 17), "4 × 17 = 4 × 10 + 4 × 7 = 40 + 28 = 68"),
    ((17, "×", 4), "17 × 4 = 10 × 4 + 7 × 4 = 40 + 28 = 68"),
    ((96, "÷", 4), "96 ÷ 4 = 80 ÷ 4 + 16 ÷ 4 = 20 + 4 = 24"),
    ((36, "÷", 4), None),  # a one-digit quotient
])
def test_worked_equation_forms(step, expected):
    left, op, right = step
    result = synthetic.OPERATIONS[op](left, right)
    made = synthetic.Step(synthetic.Operand(left), op, synthetic.Operand(right), result, "x")
    assert tiny.worked_equation(made) == expected


def test_worked_lines_rewrite_only_solution_lines(tokenizer, problems):
    """The corpus with worked lines is the plain corpus, chat for chat, with some cot and thinking
    lines worked out in two stages; the answers and every other chat stay as they were."""
    plain = tiny.build_corpus(tokenizer, problems, seed=3)
    paths = tiny.build_corpus(tokenizer, problems, seed=3, ways=tiny.LineWays(worked=0.5))
    assert [(a.kind, a.prompt) for a in plain] == [(b.kind, b.prompt) for b in paths]
    changed = [(a, b) for a, b in zip(plain, paths) if a.reply != b.reply]
    assert changed and {a.kind for a, _ in changed} == {"cot", "thinking"}
    worked = 0
    for a, b in changed:
        assert a.reply.split("\n")[-1] == b.reply.split("\n")[-1]  # the same answer sentence
        for short, long in zip(a.reply.split("\n"), b.reply.split("\n")):
            if short != long:  # "clause: 37 + 15 = 52." became "clause: 37 + 15 = 37 + 10 + 5 = 47 + 5 = 52."
                worked += 1
                head, result = short.rsplit(" = ", 1)
                assert long.startswith(head + " = ") and long.endswith(" = " + result) and long.count(" = ") == 3
    workable = 0  # lines of cot and thinking replies that worked_equation can split
    for example in paths:
        if example.kind in ("cot", "thinking"):
            problem = next(p for p in problems if p.question in example.prompt)
            workable += sum(tiny.worked_equation(s) is not None for s in problem.steps)
    assert 0.4 < worked / workable < 0.6, (worked, workable)


def test_swapped_operands_turn_sums_and_products_round(tokenizer, problems):
    plain = tiny.build_corpus(tokenizer, problems, seed=4)
    paths = tiny.build_corpus(tokenizer, problems, seed=4, ways=tiny.LineWays(swapped=0.5))
    assert [a.kind for a in plain] == [b.kind for b in paths]
    assert all(a.prompt == b.prompt for a, b in zip(plain, paths) if a.kind != "drill")  # drills ask the turned ones
    equation = re.compile(r"(\d+) ([-+×÷]) (\d+) = (\d+)")
    turned = kept = 0
    for a, b in zip(plain, paths):
        if a.kind not in ("cot", "thinking", "drill"):
            assert a == b
            continue
        for left, right in zip(equation.findall(a.reply), equation.findall(b.reply)):
            if left == right:
                kept += left[1] in "+×" and left[0] != left[2]
                continue
            assert left[1] in "+×" and (left[2], left[1], left[0], left[3]) == right
            turned += 1
    assert 0.4 < turned / (turned + kept) < 0.6, (turned, kept)
    with pytest.raises(ValueError, match="does not commute"):
        tiny.swapped(synthetic.Step(synthetic.Operand(5), "-", synthetic.Operand(2), 3, "x"))


def test_the_paths_recipe_is_named_on_its_card_and_command():
    facts = tiny.CardFacts(steps=10, elapsed=60.0, epochs_begun=1, seed=0, examples=100, tokens=1000, parameters=5)
    recipe = tiny.Recipe(worked_lines=tiny.WORKED_LINE_FRACTION, swapped_operands=tiny.SWAPPED_OPERAND_FRACTION)
    card = tiny.model_card(recipe, facts)
    assert card.splitlines()[6] == "# tiny-reasoner-paths"
    assert f"--worked-lines {tiny.WORKED_LINE_FRACTION} --swapped-operands {tiny.SWAPPED_OPERAND_FRACTION}" in card
    assert "50% of the sums and products have their operands swapped" in card
    assert "50% of the solution lines of step-by-step and thinking replies are worked out in two stages" in card
    assert "two stages" not in tiny.model_card(tiny.Recipe(), facts)
    assert tiny.model_card(tiny.Recipe(), facts).splitlines()[6] == "# tiny-reasoner"


def test_other_styles_rewrite_whole_solutions(tokenizer, problems):
    """Each cot or thinking solution is written in one style: labelled lines (as in the plain
    corpus), the equations alone, or the equations after the question's numbers. The three are
    about equally common at OTHER_STYLES_FRACTION, and nothing else changes."""
    plain = tiny.build_corpus(tokenizer, problems, seed=5)
    styled = tiny.build_corpus(tokenizer, problems, seed=5, ways=tiny.LineWays(other_styles=tiny.OTHER_STYLES_FRACTION))
    assert [(a.kind, a.prompt) for a in plain] == [(b.kind, b.prompt) for b in styled]
    counts = {style: 0 for style in tiny.SOLUTION_STYLES}
    for a, b in zip(plain, styled):
        if a.kind not in ("cot", "thinking"):
            assert a == b
            continue
        labelled = [line for line in a.reply.split("\n") if ": " in line and " = " in line]
        lines = b.reply.split("\n")
        assert lines[-1] == a.reply.split("\n")[-1]  # the same answer sentence
        if b.reply == a.reply:
            counts["labelled"] += 1
            continue
        problem = next(p for p in problems if p.question in a.prompt)
        bare = [line.split(": ", 1)[1] for line in labelled]
        if any(line.startswith("Given: ") for line in lines):
            counts["given"] += 1
            given = next(line for line in lines if line.startswith("Given: "))
            assert given == f"Given: {', '.join(re.findall(r'[0-9]+', problem.question))}."
            assert lines[lines.index(given) + 1:lines.index(given) + 1 + len(bare)] == bare
        else:
            counts["bare"] += 1
            assert [line for line in lines if line in bare] == bare
    total = sum(counts.values())
    assert all(0.25 < count / total < 0.42 for count in counts.values()), counts
    assert tiny.Recipe(other_styles=0.5).line_ways.other_styles == 0.5
    problem = problems[0]
    assert tiny.solution_lines(problem, style="labelled") == problem.solution_lines()
    assert tiny.solution_lines(problem, style="bare") == [f"{step.equation()}." for step in problem.steps]
    assert tiny.solution_lines(problem, style="given")[1:] == tiny.solution_lines(problem, style="bare")
    with pytest.raises(ValueError, match="unknown solution style"):
        tiny.solution_lines(problem, style="shouted")
    facts = tiny.CardFacts(steps=10, elapsed=60.0, epochs_begun=1, seed=0, examples=100, tokens=1000, parameters=5)
    card = tiny.model_card(tiny.Recipe(other_styles=0.5), facts)
    assert "50% of the step-by-step and thinking solutions are written without the clause labels" in card
    assert "--other-styles 0.5" in card and card.splitlines()[6] == "# tiny-reasoner-paths"
