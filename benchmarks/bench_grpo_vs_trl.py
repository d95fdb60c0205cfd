"""GRPO step speed: companion.rl against TRL's GRPOTrainer, same model, same settings, one process.

Both train the same tiny Qwen3 (hidden 256, 4 layers, 4 heads, 2 KV heads, head_dim 64, vocab 4096,
random init, tied embeddings; or ``--model`` for a model folder) on the same arithmetic prompts:
groups of 8 completions of exactly 64 tokens (EOS blocked by min_new_tokens in both), one policy
update per batch of rollouts, beta 0, DAPO token-mean loss, lr 1e-6, temperature 1, fp32 on CPU.
A step is the whole thing: sampling, rewards, log-probs, backward, AdamW.

Runs alternate (ours, TRL, ours, TRL, ...) so that load from elsewhere hits both; each run's
first ``--warmup`` steps are dropped and the median step time of the rest is its time. Reported:
the median over runs of each, and the speed-up as the median over runs of TRL/ours (each pair ran
back to back). Completion tokens per second = completions x 64 / step time.

Before timing, the loss of both on one shared fixed batch is compared for TRL's loss types
"grpo", "dapo" and "dr_grpo" against our aggregation of the same name, with old log-probs and
reference log-probs perturbed so that the ratio, the clipping and the KL term are all active
(TRL's ratio-weighted KL, on by default since 1.x, is turned off: ours is the plain k3 term).

    python benchmarks/bench_grpo_vs_trl.py                      # 1 and 8 prompts per step
    python benchmarks/bench_grpo_vs_trl.py --prompts 1 --runs 2 --steps 6
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import torch

from companion.checkpoint import load_model, save_model
from companion.rl import GRPOConfig, GRPOTrainer, RewardFunction
from companion.rl.logprobs import completion_logprobs, pack
from companion.rl.losses import Normalizer, grpo_loss
from companion.rl.toy import toy_model, toy_problems, toy_tokenizer

G, LENGTH = 8, 64


def make_model_folder(root: Path, model: str | None) -> Path:
    """The model both trainers load: ``model`` or the tiny random one with a 4096-token BPE."""
    if model:
        return Path(model)
    tokenizer = toy_tokenizer(vocab_size=4096, examples=2000, gsm8k=True)
    policy = toy_model(len(tokenizer), hidden=256, layers=4, heads=4, kv_heads=2, head_dim=64, intermediate=768,
                       seed=0, eos_token_id=tokenizer.eos_token_id)
    return save_model(policy, tokenizer, root / "tiny")


def text_length(texts: list[str]) -> list[float]:
    """The shared reward: the completion's length in characters / 1000, plus a tie-break from a
    checksum of the text (below 1e-4). It is cheap, and it differs between the completions of
    every group, so no completion's reward equals its group's mean and both trainers do the full
    backward pass on every completion (ours skips rows whose advantage is exactly 0). Lengths alone
    tie: with 8 completions, one of them sometimes has exactly the mean length."""
    return [len(text) / 1000 + zlib.crc32(text.encode()) % 1000 / 1e7 for text in texts]


# ---- ours ---------------------------------------------------------------------------------------------

def run_ours(folder: Path, problems: list[dict], prompts_per_step: int, steps: int, compile: bool = False) -> list[float]:
    model, tokenizer = load_model(folder, device="cpu", dtype="fp32")
    config = GRPOConfig.from_algo(
        "dapo", steps=steps, prompts_per_step=prompts_per_step, group_size=G, max_new_tokens=LENGTH,
        min_new_tokens=LENGTH, micro_batch=G * prompts_per_step, lr=1e-6, temperature=1.0,
        dynamic_sampling=False, overlong_cache=0, mask_truncated=False, beta=0.0, warmup_steps=0,
        compile_decode=compile)
    reward = RewardFunction("text_length", lambda batch: text_length(batch.texts))
    trainer = GRPOTrainer(model, tokenizer, problems, config, reward_functions=[reward], verbose=False)
    times = []
    for _ in range(steps):
        metrics = trainer.train_step()
        assert metrics["completions/min_length"] == LENGTH == metrics["completions/max_length"]
        # a row whose reward equals its group's mean has advantage exactly 0 and is skipped; rare here
        assert metrics["skipped_rows_fraction"] <= 0.05, metrics["skipped_rows_fraction"]
        times.append(metrics["step_time"])
    return times


# ---- TRL -------------------------------------------------------------------------------------------------

def trl_trainer(folder: Path, problems: list[dict], prompts_per_step: int, steps: int, out: Path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer as TRLTrainer

    from companion.prompts import build_prompt

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ours_tokenizer = load_model(folder, device="cpu", tokenizer=True)[1]
    rows = [{"prompt": build_prompt(ours_tokenizer, p["question"], "cot"), "answer": p["answer"]} for p in problems]
    dataset = Dataset.from_list(rows)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)

    def reward(prompts, completions, **_):
        return text_length(completions)

    args = TRLConfig(
        output_dir=str(out), use_cpu=True, bf16=False, fp16=False, report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=True, seed=0, max_steps=steps, per_device_train_batch_size=G * prompts_per_step,
        gradient_accumulation_steps=1, num_generations=G, max_completion_length=LENGTH,
        generation_kwargs={"min_new_tokens": LENGTH}, temperature=1.0, learning_rate=1e-6, beta=0.0,
        loss_type="dapo", gradient_checkpointing=False, lr_scheduler_type="constant", dataloader_num_workers=0)

    class Stamps(TrainerCallback):
        def __init__(self):
            self.stamps = []

        def on_train_begin(self, *a, **k):
            self.stamps.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            self.stamps.append(time.perf_counter())

    stamps = Stamps()
    trainer = TRLTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                         processing_class=tokenizer, callbacks=[stamps])
    trainer.remove_callback(PrinterCallback)  # no per-step log dicts on stdout
    return trainer, stamps


def run_trl(folder: Path, problems: list[dict], prompts_per_step: int, steps: int) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        trainer, stamps = trl_trainer(folder, problems, prompts_per_step, steps, Path(out))
        trainer.train()
        lengths = [entry["completions/mean_length"] for entry in trainer.state.log_history
                   if "completions/mean_length" in entry]
        assert lengths and all(n == LENGTH for n in lengths), lengths
    return [b - a for a, b in zip(stamps.stamps, stamps.stamps[1:])]


# ---- the same loss on a shared fixed batch ---------------------------------------------------------------

def check_loss_parity(folder: Path, problems: list[dict]) -> list[tuple[str, float, float]]:
    """Our loss and TRL's ``_compute_loss`` on one batch: 2 prompts x 4 completions of varied
    lengths, old/ref log-probs perturbed (ratios off 1, some clipped), beta 0.04."""
    with tempfile.TemporaryDirectory() as out:
        trainer, _ = trl_trainer(folder, problems, 1, 1, Path(out))
    trl_model = trainer.model
    ours, tokenizer = load_model(folder, device="cpu", dtype="fp32")
    generator = torch.Generator().manual_seed(0)
    prompts = [tokenizer.encode(f"<|im_start|>user\nWhat is {a}+{b}?<|im_end|>\n<|im_start|>assistant\n")
               for a, b in ((12, 7), (305, 41))]
    rows, completions = [], []
    for i in range(8):
        length = 5 + 3 * i
        tokens = torch.randint(100, 4000, (length,), generator=generator).tolist()
        if i % 3 != 2:
            tokens[-1] = tokenizer.eos_token_id  # some end with EOS, some are cut
        rows.append(prompts[i // 4])
        completions.append(tokens)
    batch = pack(rows, completions, tokenizer.pad_token_id, (tokenizer.eos_token_id,), layout="left")
    mask = batch.valid
    with torch.no_grad():
        base, _ = completion_logprobs(ours, batch, temperature=1.0)
    old = (base + 0.3 * torch.randn(base.shape, generator=generator)) * mask
    ref = (base + 0.3 * torch.randn(base.shape, generator=generator)) * mask
    advantages = torch.randn(8, generator=generator)
    P = max(map(len, prompts))
    prompt_ids = batch.input_ids[:, :P]
    prompt_mask = (torch.arange(P)[None] >= (P - torch.tensor([len(r) for r in rows]))[:, None]).long()
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": batch.completion,
              "completion_mask": mask.long(), "advantages": advantages, "old_per_token_logps": old,
              "ref_per_token_logps": ref, "num_items_in_batch": mask.sum()}
    trainer.beta = 0.04
    trainer.args.use_bias_correction_kl = False  # TRL 1.16 weights the k3 term by the ratio; ours is plain k3
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); one micro-step here
    trainer.model.train()
    results = []
    for loss_type in ("grpo", "dapo", "dr_grpo"):
        trainer.loss_type = loss_type
        with torch.no_grad():
            theirs = float(trainer._compute_loss(trl_model, inputs))
            logp, _ = completion_logprobs(ours, batch, temperature=1.0)
            norm = Normalizer.from_mask(mask, constant=trainer.max_completion_length)
            mine = float(grpo_loss(logp, old, ref, advantages, mask, norm, loss_type=loss_type, eps_low=0.2,
                                   eps_high=0.2, beta=0.04).loss)
        results.append((loss_type, mine, theirs))
    return results


# ---- main ------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, nargs="+", default=[1, 8], help="prompts per step to measure")
    parser.add_argument("--steps", type=int, default=8, help="steps per run (the first --warmup are dropped)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="runs of each trainer per setting, alternating")
    parser.add_argument("--model", default=None, help="a model folder instead of the tiny random model")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true",
                        help="ours with a torch.compile'd decode step (compiling happens in the warm-up steps)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    with tempfile.TemporaryDirectory() as root:
        folder = make_model_folder(Path(root), args.model)
        problems = toy_problems("train", count=max(args.prompts) * args.steps * 2)
        print(f"model {folder}; torch {torch.__version__}, {torch.get_num_threads()} threads")

        print("\nloss on a shared fixed batch (ratios off 1, clipping and KL active):")
        for loss_type, mine, theirs in check_loss_parity(folder, problems):
            ok = abs(mine - theirs) <= 1e-5 * max(1.0, abs(theirs))
            print(f"  {loss_type:8s} ours {mine:+.8f}  TRL {theirs:+.8f}  {'equal' if ok else 'DIFFERENT'}")
            if not ok:
                raise SystemExit(f"loss mismatch for {loss_type}")

        rows = []
        for prompts_per_step in args.prompts:
            ours_runs, trl_runs = [], []
            for run in range(args.runs):
                ours_runs.append(statistics.median(
                    run_ours(folder, problems, prompts_per_step, args.steps, args.compile)[args.warmup:]))
                trl_runs.append(statistics.median(run_trl(folder, problems, prompts_per_step, args.steps)[args.warmup:]))
                print(f"  {prompts_per_step} prompt(s)/step, run {run + 1}: ours {ours_runs[-1]:.3f} s/step, "
                      f"TRL {trl_runs[-1]:.3f} s/step", flush=True)
            tokens = prompts_per_step * G * LENGTH
            ours_s, trl_s = statistics.median(ours_runs), statistics.median(trl_runs)
            # Each ours/TRL pair ran back to back, so their ratio sees the same load: the median
            # of the pairs' ratios is steadier than the ratio of the medians on a shared machine.
            speedup = statistics.median(t / o for o, t in zip(ours_runs, trl_runs))
            rows.append((prompts_per_step, tokens, ours_s, trl_s, speedup))

    print(f"\n{'prompts/step':>12} {'tokens/step':>11} {'ours s/step':>11} {'ours tok/s':>10} "
          f"{'TRL s/step':>10} {'TRL tok/s':>9} {'speed-up':>8}")
    for prompts_per_step, tokens, ours_s, trl_s, speedup in rows:
        print(f"{prompts_per_step:>12} {tokens:>11} {ours_s:>11.3f} {tokens / ours_s:>10.0f} "
              f"{trl_s:>10.3f} {tokens / trl_s:>9.0f} {speedup:>7.2f}x")
    print("(s/step and tok/s: medians over runs; speed-up: median over runs of TRL/ours, each pair back to back)")


if __name__ == "__main__":
    main()
