"""The evaluation harness: records, resume, summaries and re-grading with a fake generator, then
the command line end to end with a tiny scripted model."""
from __future__ import annotations

import argparse
import json
import re
from types import SimpleNamespace

import pytest

from companion import evaluate
from companion.data import Problem
from companion.evaluate import RecordsError, evaluate_problems, read_records, regrade_records, summarize


class FakeTokenizer:
    """Just enough of a tokenizer for ``build_prompt``."""

    def apply_chat_template(self, messages, add_generation_prompt=True, enable_thinking=False):
        return f"<user>{messages[0]['content']}</user><think={enable_thinking}>"


class FakeGenerate:
    """Answers "What is a + b?" right when a is even, else off by one; counts the prompts it saw."""

    def __init__(self, fail_after: int | None = None, style: str = "boxed"):
        self.prompts: list[str] = []
        self.fail_after = fail_after
        self.style = style

    def __call__(self, model, tokenizer, prompts, max_new_tokens, temperature, batch_size):
        if self.fail_after is not None and len(self.prompts) >= self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.prompts += prompts
        results = []
        for prompt in prompts:
            a, b = map(int, re.search(r"What is (\d+) \+ (\d+)", prompt).groups())
            answer = a + b if a % 2 == 0 else a + b + 1
            final = f"\\boxed{{{answer}}}" if self.style == "boxed" else f"The answer is {answer}."
            text = f"{a} + {b} = {answer}. {final}"
            results.append(SimpleNamespace(text=text, token_ids=list(range(len(text) // 4)), finish_reason="stop"))
        return results


def problems(n: int = 10) -> list[Problem]:
    return [Problem(id=f"p{i}", question=f"What is {i} + 3?", answer=str(i + 3),
                    subject="Algebra" if i < 4 else "Geometry", level=1 + i % 2, steps=1 + i % 3) for i in range(n)]


def test_records_and_report(tmp_path):
    out = tmp_path / "run.jsonl"
    report = evaluate_problems(None, FakeTokenizer(), problems(), batch_size=4, out_path=out, progress=False,
                               generate_fn=FakeGenerate())
    assert report.accuracy == 0.5 and report.strict_accuracy == 0.5 and report.generated == 10
    records, truncated = read_records(out)
    assert not truncated and [r["id"] for r in records] == [f"p{i}" for i in range(10)]
    first = records[0]
    instruction = "Solve it step by step, then give the final answer in \\boxed{}."
    assert first["prompt"] == f"<user>What is 0 + 3?\n{instruction}</user><think=False>"
    assert first["response"].endswith("\\boxed{3}") and first["extracted"] == "3" and first["gold"] == "3"
    assert first["correct"] and first["correct_strict"] and first["reason"] == "equal"
    assert (first["subject"], first["level"], first["steps"], first["finish_reason"]) == ("Algebra", 1, 1, "stop")
    assert first["tokens"] > 0 and first["seconds"] >= 0
    assert not records[1]["correct"] and records[1]["extracted"] == "5"


def test_strict_and_lenient_differ_without_a_box():
    report = evaluate_problems(None, FakeTokenizer(), problems(4), progress=False,
                               generate_fn=FakeGenerate(style="plain"))
    assert report.accuracy == 0.5 and report.strict_accuracy == 0.0


def test_summary_by_subject_level_and_steps():
    report = evaluate_problems(None, FakeTokenizer(), problems(), progress=False, generate_fn=FakeGenerate())
    summary = report.summary
    assert summary["all"]["all"]["n"] == 10
    assert summary["subject"]["Algebra"] == {"n": 4, "accuracy": 0.5, "strict": 0.5,
                                             "tokens": summary["subject"]["Algebra"]["tokens"], "truncated": 0}
    assert summary["level"]["1"]["accuracy"] == 1.0 and summary["level"]["2"]["accuracy"] == 0.0
    assert list(summary["steps"]) == ["1", "2", "3"]
    table = report.table()
    assert "subject=Geometry" in table and "level=2" in table and table.splitlines()[1].split()[0] == "all"
    assert "subject" not in summarize([dict(r, subject=None) for r in report.records])


def test_resume_after_a_crash_redoes_nothing(tmp_path):
    out = tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):
        evaluate_problems(None, FakeTokenizer(), problems(), batch_size=4, out_path=out, progress=False,
                          generate_fn=FakeGenerate(fail_after=4))
    assert len(read_records(out)[0]) == 4
    with open(out, "a") as handle:  # the crash also left half a line behind
        handle.write('{"id": "p4", "prom')
    generate = FakeGenerate()
    report = evaluate_problems(None, FakeTokenizer(), problems(), batch_size=4, out_path=out, progress=False,
                               generate_fn=generate)
    assert len(generate.prompts) == 6 and report.resumed == 4 and report.generated == 6
    assert report.accuracy == 0.5
    records, truncated = read_records(out)
    assert not truncated and sorted(r["id"] for r in records) == sorted(f"p{i}" for i in range(10))
    again = FakeGenerate()
    assert evaluate_problems(None, FakeTokenizer(), problems(), out_path=out, progress=False,
                             generate_fn=again).accuracy == 0.5
    assert again.prompts == []


def test_resume_refuses_a_file_from_another_benchmark(tmp_path):
    out = tmp_path / "run.jsonl"
    evaluate_problems(None, FakeTokenizer(), problems(2), out_path=out, progress=False, generate_fn=FakeGenerate())
    other = [Problem(id="p0", question="What is 0 + 3?", answer="99")]
    with pytest.raises(RecordsError, match="another benchmark"):
        evaluate_problems(None, FakeTokenizer(), other, out_path=out, progress=False, generate_fn=FakeGenerate())


def test_malformed_record_names_file_and_line(tmp_path):
    out = tmp_path / "run.jsonl"
    out.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(RecordsError, match=f"{out}:2: not valid JSON"):
        read_records(out)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown prompt style"):
        evaluate_problems(None, FakeTokenizer(), problems(1), prompt_style="verbose", generate_fn=FakeGenerate())
    with pytest.raises(ValueError, match="unique"):
        evaluate_problems(None, FakeTokenizer(), problems(2) * 2, generate_fn=FakeGenerate())


def test_regrade_reports_what_changed(tmp_path, capsys):
    out = tmp_path / "run.jsonl"
    evaluate_problems(None, FakeTokenizer(), problems(4), out_path=out, progress=False, generate_fn=FakeGenerate())
    records, _ = read_records(out)
    records[1]["correct"] = True  # as if an older verifier had been too lenient
    records[2]["extracted"] = None
    evaluate.write_records(out, records)
    updated, changes = regrade_records(records)
    assert [c["id"] for c in changes] == ["p1", "p2"] and changes[0]["correct"] == (True, False)
    assert main(["regrade", str(out), "--write"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("p1: correct True -> False") and lines[-1] == "accuracy: 0.500"
    assert "2 of 4 records changed" in "\n".join(lines)
    assert read_records(out)[0][1]["correct"] is False


# --------------------------------------------------------------------------- end to end
def main(argv: list[str]) -> int:
    """``python -m companion <argv>`` restricted to this module's commands."""
    parser = argparse.ArgumentParser(prog="companion")
    evaluate.register_cli(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def scripted_tiny_model(tokenizer, prompt: str, reply: str):
    """A one-layer model over a small vocabulary that answers any prompt ending like ``prompt``
    with ``reply`` then ``<|im_end|>``: a bigram table (one-hot embeddings, attention and MLP
    outputs zeroed, the LM head maps each token to its successor)."""
    import torch

    from companion.config import ModelConfig
    from companion.model import Qwen3Model

    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    chain = [tokenizer.encode(prompt)[-1]] + tokenizer.encode(reply) + [end]
    assert len(set(chain)) == len(chain), "the scripted chain needs distinct tokens"
    hidden = 16
    config = ModelConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=512,
                         tie_word_embeddings=False, eos_token_id=end)
    model = Qwen3Model(config).init_weights(seed=0)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        model.embed.weight.zero_()
        model.lm_head.weight.zero_()
        for state, (token, successor) in enumerate(zip(chain, chain[1:])):
            model.embed.weight[token, state] = 1.0
            model.lm_head.weight[successor, state] = 40.0 / hidden ** 0.5  # RMSNorm scales one-hot by sqrt(hidden)
    return model.eval()


def test_command_line_end_to_end(tmp_path, capsys):
    from companion.checkpoint import save_model
    from companion.prompts import build_prompt
    from companion.tiny import train_tokenizer

    records = [{"id": f"arith-test-{i:05d}", "question": f"Tom has {i} apples, gets {7 - i} more. How many?",
                "solution": f"{i} + {7 - i} = 7\n#### 7", "answer": str(7 if i < 3 else 8), "steps": 1 + i % 2}
               for i in range(4)]
    texts = [r["question"] + " " + r["solution"] + " \\boxed{7}" for r in records] * 5
    tokenizer = train_tokenizer(texts, vocab_size=300)
    prompt = build_prompt(tokenizer, records[0]["question"], "cot")
    folder = save_model(scripted_tiny_model(tokenizer, prompt, "\\boxed{7}"), tokenizer, tmp_path / "scripted")
    arith = tmp_path / "data" / "arith" / "test.jsonl"
    arith.parent.mkdir(parents=True)
    arith.write_text("".join(json.dumps(record) + "\n" for record in records))
    out = tmp_path / "eval.jsonl"
    argv = ["evaluate", "--model", str(folder), "--benchmark", "arith", "--data-dir", str(tmp_path / "data"),
            "--max-new-tokens", "12", "--batch-size", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == "accuracy: 0.750" and "steps=2" in "\n".join(printed)
    saved, _ = read_records(out)
    assert [r["response"] for r in saved] == ["\\boxed{7}"] * 4 and saved[3]["correct"] is False
    assert all(r["finish_reason"] == "stop" and r["correct_strict"] == r["correct"] for r in saved)
    assert main(argv) == 0  # resumes: nothing left to generate
    assert "0 generated" in capsys.readouterr().out
