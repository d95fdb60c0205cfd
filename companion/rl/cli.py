"""Command-line tools of the RL chapters.

    python -m companion train-grpo --model data/tiny-reasoner --dataset arith --steps 100 --out-dir runs/grpo
    python -m companion train-grpo --out-dir runs/grpo --resume          # continue a stopped run
    python -m companion plan-run --model Qwen/Qwen3-0.6B --group-size 8 --max-new-tokens 1024
    python -m companion plot-log runs/grpo
    python -m companion inspect-rollouts --model runs/grpo/model --prompt "What is 12*7?" --gold 84 --G 4
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from companion.rl.config import ALGORITHMS, IMPORTANCE_LEVELS, LOSS_TYPES, SCALE_REWARDS, GRPOConfig

DATASETS = ("arith", "gsm8k", "math", "math500")


def load_problems(name: str, split: str, limit: int | None = None) -> list:
    """Problems of a dataset split through ``companion.data``; the synthetic arithmetic set is also
    read directly, so the trainer works before anything else is installed."""
    try:
        from companion.data import load_problems as load
    except ImportError:
        load = None
    if load is not None:
        problems = load(name, split)
    elif name == "arith":
        from companion.synthetic import read_split

        problems = [{"id": r["id"], "question": r["question"], "answer": r["answer"]} for r in read_split(split)]
    else:
        raise ImportError(f"loading {name!r} needs companion.data")
    return list(problems)[:limit] if limit else list(problems)


# ---- arguments shared by train-grpo and plan-run ------------------------------------------------

# CLI flag -> config field, for the settings a preset may set (None on the command line = keep preset).
PRESET_FLAGS = ("loss_type", "scale_rewards", "clip_eps_low", "clip_eps_high", "importance_level", "beta",
                "dynamic_sampling", "overlong_cache", "mask_truncated")


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    defaults = GRPOConfig()
    g = p.add_argument_group("algorithm (a preset sets these together; a flag given here wins)")
    g.add_argument("--algo", choices=ALGORITHMS, default="grpo", help="preset: grpo, dr_grpo, dapo, gspo")
    g.add_argument("--loss-type", choices=LOSS_TYPES, default=None,
                   help="grpo: per-sequence token mean; dapo: token mean over the step; dr_grpo: token sum / L")
    g.add_argument("--scale-rewards", choices=SCALE_REWARDS, default=None, help="divide advantages by this std")
    g.add_argument("--clip-eps", type=float, default=None, help="clip range on both sides")
    g.add_argument("--clip-eps-low", type=float, default=None)
    g.add_argument("--clip-eps-high", type=float, default=None, help="clip-higher (DAPO: 0.28)")
    g.add_argument("--importance-level", choices=IMPORTANCE_LEVELS, default=None, help="sequence = GSPO")
    g.add_argument("--beta", type=float, default=None, help="KL coefficient; 0 loads no reference model")
    g.add_argument("--log-kl", action="store_true",
                   help="with --beta 0, still load the reference model to log the KL (no KL term in the loss)")
    g.add_argument("--dr-grpo-norm", type=int, default=defaults.dr_grpo_norm,
                   help="the constant of --loss-type dr_grpo (0 = --max-new-tokens)")
    g.add_argument("--adv-eps", type=float, default=defaults.adv_eps, help="added to the std that scales advantages")
    g.add_argument("--dynamic-sampling", action=argparse.BooleanOptionalAction, default=None,
                   help="drop groups whose rewards are all equal and draw more prompts (DAPO)")
    g.add_argument("--max-draws", type=int, default=defaults.max_draws, help="rounds of prompts per step at most")
    g.add_argument("--overlong-cache", type=int, default=None,
                   help="soft overlong punishment over the last N tokens (0 off, -1 = max_new_tokens/4)")
    g.add_argument("--mask-truncated", action=argparse.BooleanOptionalAction, default=None,
                   help="leave completions cut by --max-new-tokens out of the loss")
    g = p.add_argument_group("batch and optimization")
    g.add_argument("--steps", type=int, default=defaults.steps)
    g.add_argument("--group-size", "-G", type=int, default=defaults.group_size)
    g.add_argument("--prompts-per-step", type=int, default=defaults.prompts_per_step)
    g.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    g.add_argument("--inner-epochs", type=int, default=defaults.inner_epochs, help="mu: passes over each batch")
    g.add_argument("--minibatches", type=int, default=defaults.minibatches, help="optimizer updates per pass")
    g.add_argument("--micro-batch", type=int, default=defaults.micro_batch, help="completions per forward/backward")
    g.add_argument("--rollout-prompts", type=int, default=defaults.rollout_prompts,
                   help="prompts generated together (0 = all of the step's)")
    g.add_argument("--lr", type=float, default=defaults.lr)
    g.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    g.add_argument("--min-lr-ratio", type=float, default=defaults.min_lr_ratio)
    g.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    g.add_argument("--max-grad-norm", type=float, default=defaults.max_grad_norm)
    g.add_argument("--temperature", type=float, default=defaults.temperature)
    g.add_argument("--top-p", type=float, default=defaults.top_p)
    g.add_argument("--top-k", type=int, default=defaults.top_k)
    g.add_argument("--prompt-style", choices=("direct", "cot", "thinking"), default=defaults.prompt_style)
    g.add_argument("--reward-weights", default="correctness=1,format=0.2",
                   help="comma-separated name=weight of the built-in rewards (correctness, format)")
    g.add_argument("--seed", type=int, default=defaults.seed)
    g.add_argument("--compile", dest="compile_decode", action="store_true",
                   help="torch.compile the decode step of rollouts (a few minutes once; then much faster on CPU)")


def parse_weights(text: str) -> dict[str, float]:
    weights = {}
    for part in filter(None, (s.strip() for s in text.split(","))):
        name, _, value = part.partition("=")
        weights[name.strip()] = float(value) if value else 1.0
    return weights


def config_from_args(args, **extra) -> GRPOConfig:
    """Preset first, then every flag that was given."""
    overrides = {name: getattr(args, name) for name in PRESET_FLAGS if getattr(args, name) is not None}
    if args.clip_eps is not None:
        overrides.setdefault("clip_eps_low", args.clip_eps)
        overrides.setdefault("clip_eps_high", args.clip_eps)
    for name in ("steps", "group_size", "prompts_per_step", "max_new_tokens", "inner_epochs", "minibatches",
                 "micro_batch", "rollout_prompts", "lr", "warmup_steps", "min_lr_ratio", "weight_decay",
                 "max_grad_norm", "temperature", "top_p", "top_k", "prompt_style", "seed", "max_draws",
                 "compile_decode", "log_kl", "dr_grpo_norm", "adv_eps"):
        overrides[name] = getattr(args, name)
    overrides["reward_weights"] = parse_weights(args.reward_weights)
    return GRPOConfig.from_algo(args.algo, **overrides, **extra)


# ---- train-grpo ----------------------------------------------------------------------------------

def _train(args) -> int:
    import torch

    from companion.checkpoint import load_model, save_model
    from companion.rl import checkpointing
    from companion.rl.trainer import GRPOTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir)
    dtype = args.dtype or "fp32"  # AdamW on bf16 weights loses updates smaller than the weight's last bit
    problems = load_problems(args.dataset, args.split, args.limit)
    latest = checkpointing.latest_checkpoint(out_dir) if args.resume else None
    if args.resume and latest is None:
        print(f"no checkpoint in {out_dir}; starting a new run")
    if latest is not None:
        trainer = GRPOTrainer.resume(out_dir, problems, device=args.device, dtype=dtype,
                                     wandb_project=args.wandb_project)
        print(f"resumed from {latest} at step {trainer.step} (settings are the checkpoint's)")
    else:
        if out_dir.exists() and (out_dir / "metrics.jsonl").exists() and not args.resume:
            raise SystemExit(f"{out_dir} already holds a run; pass --resume to continue it or pick another --out-dir")
        config = config_from_args(args, save_every=args.save_every, keep_checkpoints=args.keep_checkpoints)
        model, tokenizer = load_model(args.model, device=args.device, dtype=dtype)
        trainer = GRPOTrainer(model, tokenizer, problems, config, out_dir=out_dir, wandb_project=args.wandb_project)
    config = trainer.config
    print(config.describe())
    print(f"{len(problems)} problems from {args.dataset}/{args.split}; model {sum(p.numel() for p in trainer.model.parameters()):,} "
          f"parameters on {trainer.model.device} ({trainer.model.dtype}); writing to {out_dir}")
    started = time.perf_counter()
    trainer.train(progress=not args.no_progress)
    if config.save_every == 0 or trainer.step % config.save_every:
        trainer.save_checkpoint()
    final = save_model(trainer.model, trainer.tokenizer, out_dir / "model",
                       extra_files={"README.md": model_card(trainer, args)})
    print(f"done: {trainer.step} steps in {time.perf_counter() - started:.0f} s; model in {final}")
    return 0


def model_card(trainer, args) -> str:
    c = trainer.config
    return (f"# GRPO-trained model\n\nTrained with `python -m companion train-grpo` "
            f"({c.algo}, {trainer.step} steps of {c.prompts_per_step} prompts x {c.group_size} completions, "
            f"dataset {args.dataset}/{args.split}, start model `{args.model}`).\n\n"
            f"Settings:\n\n```\n{c.describe()}\n```\n")


# ---- plan-run ------------------------------------------------------------------------------------

def _plan(args) -> int:
    from companion.config import ModelConfig, preset
    from companion.hub import DEFAULT_MODEL
    from companion.rl.memory import plan

    name = args.model or DEFAULT_MODEL
    path = Path(name)
    config = ModelConfig.from_json(path / "config.json") if (path / "config.json").is_file() else preset(name)
    prompt_tokens = args.prompt_tokens or _longest_prompt(path, args)
    grpo = config_from_args(args)
    budget = plan(config, grpo, prompt_tokens, dtype_bytes=2 if args.dtype in ("bf16", "fp16") else 4)
    print(f"model {name}: {config.num_hidden_layers} layers, hidden {config.hidden_size}, vocab {config.vocab_size}; "
          f"weights in {args.dtype or 'fp32'}; prompts of {prompt_tokens} tokens")
    print(grpo.describe())
    print(budget.format())
    return 0


def _longest_prompt(path: Path, args) -> int:
    """The longest prompt (tokens) among the first 200 problems of the dataset, or 128 if the
    tokenizer or dataset is not at hand."""
    try:
        from companion.prompts import build_prompt
        from companion.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(path if path.is_dir() else args.model)
        problems = load_problems(args.dataset, args.split, 200)
        return max(len(tokenizer.encode(build_prompt(tokenizer, _question(p), args.prompt_style))) for p in problems)
    except (OSError, ValueError, ImportError, KeyError) as error:  # planning works offline, without data
        print(f"(prompt length not measured: {error}; assuming 128 tokens, set --prompt-tokens)")
        return 128


def _question(problem) -> str:
    return problem["question"] if isinstance(problem, dict) else problem.question


# ---- plot-log --------------------------------------------------------------------------------------

def _plot(args) -> int:
    from companion.rl.metrics import plot_log

    png = plot_log(args.run, args.out, smooth=args.smooth)
    print(f"wrote {png}")
    return 0


# ---- inspect-rollouts ------------------------------------------------------------------------------

def _inspect(args) -> int:
    import torch

    from companion.checkpoint import load_model
    from companion.generate import SamplingParams
    from companion.rl.rewards import default_reward_functions
    from companion.rl.rollout import PromptCache, sample_groups

    model, tokenizer = load_model(args.model, device=args.device)
    functions = default_reward_functions(parse_weights(args.reward_weights), args.max_new_tokens, args.overlong_cache)
    prompts = PromptCache(tokenizer, [args.prompt], args.prompt_style)
    generator = torch.Generator(device=model.device).manual_seed(args.seed)
    [group] = sample_groups(model, tokenizer, prompts, [args.gold], [0], args.G, args.max_new_tokens,
                            SamplingParams(args.temperature, args.top_k, args.top_p), generator, functions)
    from companion.rl.advantages import group_advantages

    advantages = group_advantages(group.rewards[None])[0]
    print(f"prompt ({len(group.prompt_ids)} tokens):\n{group.prompt_text}\n")
    for i in range(group.size):
        parts = "  ".join(f"{name}={values[i]:.2f}" for name, values in group.reward_values.items())
        ending = "truncated" if group.truncated[i] else "eos"
        print(f"--- sample {i}: reward {group.rewards[i]:.2f} ({parts}), advantage {advantages[i]:+.2f}, "
              f"{len(group.completions[i])} tokens, {ending}")
        print(group.texts[i])
    print(f"\nmean reward {group.rewards.mean():.3f}, spread {group.rewards.max() - group.rewards.min():.2f}")
    return 0


# ---- registration ----------------------------------------------------------------------------------

def register_cli(subparsers) -> None:
    p = subparsers.add_parser("train-grpo", help="train a model with GRPO (or Dr. GRPO, DAPO, GSPO)",
                              description="GRPO on verifiable math rewards, with resumable checkpoints.")
    p.add_argument("--model", default=None, help="model folder or hub id (default: the shipped tiny model)")
    p.add_argument("--dataset", choices=DATASETS, default="arith")
    p.add_argument("--split", default="train")
    p.add_argument("--limit", type=int, default=None, help="use only the first N problems")
    add_config_arguments(p)
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every K steps (0: only at the end)")
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out-dir")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16"], help="weights and optimizer state (default fp32)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--wandb-project", default=None, help="also log to Weights & Biases (if installed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (plain lines)")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("plan-run", help="print the memory budget of a GRPO configuration",
                              description="Weights, gradients, AdamW state, reference model, KV cache, activations "
                                          "and logits of a GRPO configuration, before running it.")
    p.add_argument("--model", default=None, help="model folder or preset name (e.g. Qwen/Qwen3-0.6B)")
    p.add_argument("--dataset", choices=DATASETS, default="arith")
    p.add_argument("--split", default="train")
    p.add_argument("--prompt-tokens", type=int, default=0, help="prompt length (default: measured on the dataset)")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"])
    add_config_arguments(p)
    p.set_defaults(func=_plan)

    p = subparsers.add_parser("plot-log", help="plot the metrics of a GRPO run as a PNG panel")
    p.add_argument("run", help="run folder (holding metrics.jsonl) or the JSONL file")
    p.add_argument("--out", default=None, help="PNG path (default: <run>/metrics.png)")
    p.add_argument("--smooth", type=float, default=0.0, help="EMA weight in [0, 1) drawn over the raw curves")
    p.set_defaults(func=_plot)

    p = subparsers.add_parser("inspect-rollouts", help="sample G completions for one prompt and show their rewards")
    p.add_argument("--model", default=None)
    p.add_argument("--prompt", required=True, help="the question")
    p.add_argument("--gold", required=True, help="the gold answer")
    p.add_argument("--G", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--prompt-style", choices=("direct", "cot", "thinking"), default="cot")
    p.add_argument("--reward-weights", default="correctness=1,format=0.2")
    p.add_argument("--overlong-cache", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.set_defaults(func=_inspect)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m companion.rl.cli")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
