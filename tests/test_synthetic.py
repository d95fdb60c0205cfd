"""The synthetic arithmetic problems: correct answers, determinism, disjoint splits, shipped files."""
from __future__ import annotations

import collections
import dataclasses
import random
import re

import pytest

from companion import synthetic
from companion.synthetic import Limits, Operand, Step, generate_problem, recompute

NUMBER_WORDS = {2: ("twice", "double", "half"), 3: ("triple", "third"), 4: ("quarter",)}
EQUATION = re.compile(r": (\d+) ([-+×÷]) (\d+) = (\d+)\.$")
SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def shipped():
    return {split: synthetic.read_split(split) for split in SPLITS}


@pytest.fixture(scope="module")
def problems():
    rng = random.Random(123)
    return [generate_problem(rng, steps) for steps in range(1, 7) for _ in range(150)]


def test_every_step_recomputes_from_its_operands(problems):
    for problem in problems:
        results = recompute(problem.steps)
        assert results[-1] == problem.answer
        assert len(problem.steps) in range(1, 7)


def test_numbers_in_the_solution_come_from_the_question(problems):
    """Operands not carried from an earlier step must be stated in the question, as digits or words."""
    for problem in problems:
        stated = set(re.findall(r"\d+", problem.question))
        for step in problem.steps:
            for operand in (step.left, step.right):
                if operand.step is None and str(operand.value) not in stated:
                    words = NUMBER_WORDS.get(operand.value, ())
                    assert any(w in problem.question.lower() for w in words), (problem.question, step)


def test_every_step_is_used_by_the_answer(problems):
    """No wasted work: each step feeds a later one, except the last, which is the answer."""
    for problem in problems:
        used = {op.step for step in problem.steps for op in (step.left, step.right) if op.step is not None}
        assert used == set(range(len(problem.steps) - 1)), problem.solution()


@pytest.mark.parametrize("limits", [Limits(), Limits(max_operand=50, max_factor=9, max_value=999)])
def test_values_respect_the_limits(limits):
    rng = random.Random(7)
    for steps in range(1, 7):
        for _ in range(100):
            problem = generate_problem(rng, steps, limits.max_operand, max_factor=limits.max_factor,
                                       max_value=limits.max_value)
            for step in problem.steps:
                assert 1 <= step.result <= limits.max_value
                if step.op in "×÷":
                    assert min(step.left.value, step.right.value) <= limits.max_factor


def test_recompute_rejects_a_wrong_result_or_a_broken_reference():
    rng = random.Random(0)
    problem = generate_problem(rng, 3)
    last = problem.steps[-1]
    wrong = dataclasses.replace(last, result=last.result + 1)
    with pytest.raises(ValueError):
        recompute(problem.steps[:-1] + (wrong,))
    ref = Operand(problem.steps[0].result + 1, 0)
    broken = Step(ref, "+", Operand(2), ref.value + 2, "x")
    with pytest.raises(ValueError):
        recompute(problem.steps[:1] + (broken,))


def test_generation_is_deterministic_per_seed():
    first = synthetic.generate_split(60, seed=5)
    assert first == synthetic.generate_split(60, seed=5)
    assert first != synthetic.generate_split(60, seed=6)
    state = random.getstate()
    synthetic.generate_split(10, seed=5)
    assert random.getstate() == state, "must not touch the global random state"


def test_all_families_and_operations_appear(problems):
    assert {p.family for p in problems} == set(synthetic.FAMILIES)
    assert {s.op for p in problems for s in p.steps} == set(synthetic.OPERATIONS)


def test_shipped_files_are_the_seeded_splits(shipped):
    """The jsonl files are exactly what ``write_splits`` produces with the default seed."""
    assert shipped == synthetic.all_splits()


def test_splits_are_disjoint(shipped):
    keys = {split: {synthetic.normalize_question(r["question"]) for r in shipped[split]} for split in SPLITS}
    for split in SPLITS:
        assert len(keys[split]) == len(shipped[split]), f"duplicate questions inside {split}"
    assert not keys["test"] & keys["train"]
    assert not keys["validation"] & keys["train"]
    assert not keys["test"] & keys["validation"]


def test_shipped_records_are_consistent(shipped):
    """Shape, ids, and every solution line's arithmetic, read from the text alone."""
    for split, records in shipped.items():
        assert len(records) == synthetic.SPLIT_SIZES[split]
        for index, record in enumerate(records, start=1):
            assert set(record) == {"id", "question", "solution", "answer", "steps"}
            assert record["id"] == f"arith-{split}-{index:05d}"
            *lines, last = record["solution"].split("\n")
            assert last == f"#### {record['answer']}"
            assert len(lines) == record["steps"]
            for line in lines:
                a, op, b, c = EQUATION.search(line).groups()
                assert synthetic.OPERATIONS[op](int(a), int(b)) == int(c), line
                assert op != "÷" or int(a) % int(b) == 0
            assert int(c) == int(record["answer"]) > 0


def test_step_counts_are_balanced(shipped):
    for split, records in shipped.items():
        counts = collections.Counter(r["steps"] for r in records)
        assert sorted(counts) == [1, 2, 3, 4, 5, 6]
        assert max(counts.values()) - min(counts.values()) <= 1, (split, counts)


def test_shipped_files_are_small():
    total = sum((synthetic.DEFAULT_DATA_DIR / f"{s}.jsonl").stat().st_size for s in SPLITS)
    assert total < 10_000_000
