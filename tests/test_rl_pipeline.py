"""The main job end to end on a tiny random model: every stage runs, the report is written, and a
resumed pipeline reads its finished stages back instead of recomputing them."""
import json

import pytest
import torch

from companion.checkpoint import load_model, save_model
from companion.cli import main
from companion.pipeline import STAGES
from companion.rl.toy import toy_model, toy_tokenizer


def test_pipeline_runs_every_stage_and_resumes(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tokenizer = toy_tokenizer()
        model = toy_model(len(tokenizer), hidden=32, layers=2, heads=4, kv_heads=2, head_dim=8, std=0.3)
        save_model(model, tokenizer, tmp_path / "start")
        out = tmp_path / "pipeline"
        args = ["pipeline", "--model", str(tmp_path / "start"), "--benchmark", "arith", "--limit", "3",
                "--max-new-tokens", "6", "--batch-size", "8", "--sc-n", "2", "--refine-rounds", "1",
                "--grpo-steps", "2", "--grpo-lr", "1e-3", "--train-limit", "16", "--out-dir", str(out),
                "--no-progress"]
        assert main(args) == 0
        printed = capsys.readouterr().out
        summary = json.loads((out / "summary.json").read_text())
        assert [s["name"] for s in summary] == ["direct", "cot", "thinking", "self-consistency", "refine", "grpo-cot",
                                                "grpo-thinking"]
        assert all(s["problems"] == 3 and 0.0 <= s["accuracy"] <= 1.0 for s in summary)
        report = (out / "report.md").read_text()
        assert "| chain of thought |" in report and "GRPO model, chain of thought" in report
        assert "| thinking mode |" in report and "GRPO model, thinking mode" in report
        assert report.startswith("# Reasoning pipeline: start on arith/test")  # a local folder by its name
        assert (out / "accuracy.png").stat().st_size > 1000 and (out / "grpo" / "metrics.png").is_file()
        assert len((out / "grpo" / "metrics.jsonl").read_text().splitlines()) == 2
        trained, _ = load_model(out / "grpo" / "model", device="cpu")
        assert sum(p.numel() for p in trained.parameters()) == sum(p.numel() for p in model.parameters())
        assert "algorithm grpo" in printed and "| self-consistency (n=2) |" in printed

        with pytest.raises(SystemExit):  # a finished pipeline is not overwritten without --resume
            main(args)
        assert main(args + ["--resume", "--stages", "cot,self-consistency,grpo,grpo-cot"]) == 0
        again = json.loads((out / "summary.json").read_text())
        assert [s["name"] for s in again] == ["cot", "self-consistency", "grpo-cot"]
        for new in again:  # read back, not recomputed: the same numbers
            old = next(s for s in summary if s["name"] == new["name"])
            assert new["accuracy"] == old["accuracy"] and new["tokens_per_problem"] == old["tokens_per_problem"]
        assert set(STAGES) >= {s["name"] for s in again}
    finally:
        torch.set_num_threads(threads)


def test_the_arith_profile_is_chapter_6s_run():
    """Without --model the pipeline starts from the tiny model with habits and trains it as
    benchmarks/measure_grpo.py did for the shipped checkpoint (thinking prompts, correctness only)."""
    from pathlib import Path

    from companion.hub import HABITS_MODEL
    from companion.pipeline import PipelineSettings

    settings = PipelineSettings.for_benchmark("arith")
    assert settings.model == HABITS_MODEL and (Path(HABITS_MODEL) / "model.safetensors").is_file()
    assert settings.grpo["prompt_style"] == "thinking" and settings.grpo["reward_weights"] == {"correctness": 1.0}
    assert PipelineSettings.for_benchmark("arith", model="elsewhere").model == "elsewhere"
    assert PipelineSettings.for_benchmark("gsm8k").model is None  # the default model, or --model
