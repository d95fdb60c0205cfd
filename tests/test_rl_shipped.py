"""The shipped GRPO checkpoint (data/tiny-reasoner-grpo): complete, loadable, produced by the
command its card names, and as accurate as its card says (re-measured here, so the card cannot drift)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from companion import load_model
from companion.generate import generate
from companion.prompts import build_prompt
from companion.synthetic import read_split
from companion.verifier import grade

FOLDER = Path(__file__).resolve().parents[1] / "data" / "tiny-reasoner-grpo"
FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
         "README.md", "metrics.png", "metrics.jsonl", "report.json")
CHECK_PROBLEMS = 200
MAX_NEW_TOKENS = 256  # the longest reference solution of the split is about 140 tokens


@pytest.fixture(scope="module")
def report():
    return json.loads((FOLDER / "report.json").read_text())


def test_the_folder_is_complete_and_small(report):
    assert set(FILES) <= {p.name for p in FOLDER.iterdir()}
    assert (FOLDER / "model.safetensors").stat().st_size <= 25 * 1024**2
    log = [json.loads(line) for line in (FOLDER / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, len(log) + 1))
    steps = report["command"].split("--steps ")[1].split()[0]
    assert len(log) == int(steps)  # the log is the whole run of the card's command


def test_the_card_holds_the_command_and_the_measured_numbers(report):
    card = (FOLDER / "README.md").read_text()
    assert report["command"].startswith("python -m companion train-grpo ") and report["command"] in card
    assert f"{report['seconds'] / 60:.1f} minutes" in card
    for label in ("before", "after"):
        for split, result in report[label].items():
            assert result["problems"] == 500
            assert f"{result['accuracy']:.1%}" in card, (label, split)
    assert f"{report['after']['test']['first_200']:.1%}" in card


def test_the_shipped_model_is_as_accurate_as_its_card(report):
    """Greedy decoding on the first 200 test problems, with the prompt style the run trained and was
    measured with, against the card's number for those problems."""
    model, tokenizer = load_model(FOLDER, device="cpu", dtype="float32")
    records = read_split("test")[:CHECK_PROBLEMS]
    style = report.get("prompt_style", "cot")
    outputs = generate(model, tokenizer, [build_prompt(tokenizer, r["question"], style) for r in records],
                       MAX_NEW_TOKENS, batch_size=CHECK_PROBLEMS)
    accuracy = sum(grade(o.text, r["answer"]) for o, r in zip(outputs, records)) / len(records)
    assert abs(accuracy - report["after"]["test"]["first_200"]) <= 0.05, (accuracy, report["after"]["test"])


def test_the_start_model_is_a_shipped_tiny_model(report):
    """The 'before' numbers are those of the shipped start model as it is now: its own report
    (tiny-report, the same 500 test problems) stores the same accuracy."""
    start_folder = FOLDER.parent / Path(report["start_model"]).name
    assert report["start_model"].startswith("data/tiny-reasoner") and start_folder.is_dir()
    start = json.loads((start_folder / "report.json").read_text())
    style = report.get("prompt_style", "cot")
    assert abs(start["greedy"][style] - report["before"]["test"]["accuracy"]) <= 0.03
