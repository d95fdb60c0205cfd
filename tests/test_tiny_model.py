"""The shipped tiny models (data/tiny-reasoner; data/tiny-reasoner-habits, made by the same recipe
with habits in its last steps; data/tiny-reasoner-paths, chapter 4's, trained four times as long on lines
written more than one way): they load everywhere and do what their cards say."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch

from companion import load_model, tiny
from companion.generate import generate
from companion.hub import DEFAULT_MODEL, HABITS_MODEL, PATHS_MODEL
from companion.prompts import build_prompt, build_revise_prompt
from companion.synthetic import read_split
from companion.tokenizer import split_reasoning
from companion.verifier import grade

FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
         "README.md", "loss.png", "log.jsonl", "report.json")


@pytest.fixture(scope="module", params=[DEFAULT_MODEL, HABITS_MODEL, PATHS_MODEL],
                ids=["tiny-reasoner", "tiny-reasoner-habits", "tiny-reasoner-paths"])
def folder(request):
    return Path(request.param)


@pytest.fixture(scope="module")
def shipped(folder):
    return load_model(folder, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def report(folder):
    return json.loads((folder / "report.json").read_text())


@pytest.fixture(scope="module")
def prompts(shipped):
    _, tokenizer = shipped
    problems = read_split("test")[:3]
    texts = [build_prompt(tokenizer, p["question"], style) for p in problems for style in ("cot", "thinking")]
    return texts + ["Ava has 12 apples. She eats 5 apples. How many apples does Ava have now?"]


def test_the_folder_is_complete_and_small(folder):
    assert {name for name in FILES} <= {p.name for p in folder.iterdir()}
    assert (folder / "model.safetensors").stat().st_size <= 25 * 1024**2
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, len(log) + 1))
    steps = re.search(r"--steps ([0-9]+)", (folder / "README.md").read_text())
    assert log[-1]["step"] == (int(steps[1]) if steps else tiny.DEFAULT_STEPS)  # the card's command made it


def test_transformers_gives_the_same_logits_and_tokens(folder, shipped, prompts):
    transformers = pytest.importorskip("transformers")
    model, tokenizer = shipped
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder).float().eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    for text in prompts:
        ids = tokenizer.encode(text)
        assert hf_tokenizer.encode(text, add_special_tokens=False) == ids
        with torch.no_grad():
            ours = model(torch.tensor([ids]))
            theirs = hf_model(torch.tensor([ids])).logits
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    for thinking in (True, False):
        assert hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                enable_thinking=thinking) == \
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=thinking)


def test_greedy_cot_accuracy_matches_the_card(folder, shipped, report):
    """Greedy cot on the first problems of the test split, against the number the report stores for them."""
    model, tokenizer = shipped
    first = report["greedy_first"]
    records = read_split("test")[:first["problems"]]
    outputs = generate(model, tokenizer, [build_prompt(tokenizer, r["question"], "cot") for r in records],
                       tiny.MAX_NEW_TOKENS["cot"], batch_size=first["problems"])
    accuracy = sum(grade(o.text, r["answer"]) for o, r in zip(outputs, records)) / len(records)
    assert abs(accuracy - first["cot"]) <= 0.05, (accuracy, first["cot"])
    assert f"{first['cot']:.1%}" in (folder / "README.md").read_text()


def test_the_card_holds_the_measured_numbers(folder, report):
    card = (folder / "README.md").read_text()
    assert "python -m companion train-tiny --out" in card
    assert f"tiny-report --model data/{folder.name} " in card and f"# {folder.name}\n" in card
    for value in list(report["greedy"].values()) + [report["pass@8"]] + list(report["by_steps"].values()):
        assert f"{value:.1%}" in card
    assert report["problems"] >= 500 and report["split"] == "test"
    assert report["greedy"]["cot"] > report["greedy"]["direct"]
    assert report["pass@8"] > report["greedy"]["cot"]


def test_the_model_reviews_an_attempt(shipped):
    """Self-refinement: shown a solution with a slip, the model checks it line by line."""
    model, tokenizer = shipped
    problem = next(p for p in tiny.split_problems("test") if len(p.steps) == 2)
    attempt = tiny.slipped_attempt(problem, random.Random(0))
    prompt = build_revise_prompt(tokenizer, problem.question, attempt.text(problem))
    [output] = generate(model, tokenizer, prompt, tiny.MAX_NEW_TOKENS["revise"])
    assert output.text.startswith("Check: ") and "\\boxed{" in output.text, output.text


def test_the_habits_model_mostly_skips_its_think_block():
    """data/tiny-reasoner-habits: greedy thinking mode closes the think block at once on most problems
    (the habit chapter 6 trains away), and its card names the flags that planted it."""
    model, tokenizer = load_model(HABITS_MODEL, device="cpu", dtype="float32")
    records = read_split("test")[:50]
    outputs = generate(model, tokenizer, [build_prompt(tokenizer, r["question"], "thinking") for r in records],
                       tiny.MAX_NEW_TOKENS["thinking"], batch_size=50)
    empty = sum("</think>" in o.text and split_reasoning(o.text)[0].strip() == "" for o in outputs)
    assert empty >= 30, [o.text for o in outputs[:3]]
    card = (Path(HABITS_MODEL) / "README.md").read_text()
    assert "--empty-think 0.6 --bare-attempts 0.3 --habits-from-step 1300" in card


def test_the_paths_model_writes_lines_more_than_one_way():
    """data/tiny-reasoner-paths (chapter 4): its samples work some lines out in stages and write others
    at once, so one answer can be reached through different texts; its card names the flags."""
    model, tokenizer = load_model(PATHS_MODEL, device="cpu", dtype="float32")
    records = read_split("test")[:8]
    outputs = generate(model, tokenizer, [build_prompt(tokenizer, r["question"], "cot") for r in records],
                       tiny.MAX_NEW_TOKENS["cot"], temperature=0.7, top_p=0.9, seed=0, num_samples=4)
    lines = [line for o in outputs for line in o.text.splitlines() if " = " in line]
    staged = sum(line.count(" = ") >= 3 for line in lines)
    assert 0 < staged < len(lines), lines
    card = (Path(PATHS_MODEL) / "README.md").read_text()
    assert "--steps 6400 --worked-lines 0.5 --swapped-operands 0.5" in card
