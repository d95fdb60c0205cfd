"""The GRPO trainer: rollouts -> rewards -> group advantages -> clipped updates, one step at a time.

    trainer = GRPOTrainer(model, tokenizer, problems, GRPOConfig.from_algo("grpo", steps=50), out_dir="runs/a")
    trainer.train()                       # metrics per step, checkpoints every save_every steps
    trainer = GRPOTrainer.resume("runs/a", problems)   # continues as if it had never stopped

One step:
1. draw ``prompts_per_step`` problems (with dynamic sampling: keep drawing, and drop groups whose
   completions all got the same reward, until the batch is full of groups with signal);
2. sample ``group_size`` completions per prompt with the shared engine and score them;
3. advantages = (reward - group mean) / (group std + eps);
4. reference log-probs (beta > 0) and old log-probs (off-policy only) once per batch;
5. ``inner_epochs`` passes, each ``minibatches`` optimizer updates, each accumulated over micro-batches.
"""
from __future__ import annotations

import copy
import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from companion.generate import SamplingParams, compiled_decode_step
from companion.rl import checkpointing
from companion.rl.advantages import group_advantages, has_spread
from companion.rl.config import GRPOConfig
from companion.rl.logprobs import PackedBatch, completion_logprobs, pack
from companion.rl.losses import Normalizer, grpo_loss
from companion.rl.metrics import MetricsLog, format_summary, percentile
from companion.rl.rewards import RewardFunction, default_reward_functions
from companion.rl.rollout import Group, PromptCache, PromptStream, eos_ids_of, sample_groups


def problem_fields(problem) -> tuple[str, str]:
    """(question, gold answer) of a ``Problem``, a dict, or a (question, answer) pair."""
    if isinstance(problem, dict):
        return problem["question"], str(problem["answer"])
    if isinstance(problem, (tuple, list)):
        return problem[0], str(problem[1])
    return problem.question, str(problem.answer)


def lr_factor(update: int, total_updates: int, warmup_updates: int, min_ratio: float) -> float:
    """Linear warm-up from 0 over ``warmup_updates``, then cosine decay from 1 to ``min_ratio``."""
    if update < warmup_updates:
        return (update + 1) / warmup_updates
    decay = max(1, total_updates - warmup_updates)
    progress = min(1.0, (update - warmup_updates) / decay)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model, config: GRPOConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms and biases). The fused kernel (one pass
    over all parameters) where the device has it, the loop over parameters elsewhere."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = model.device.type in ("cpu", "cuda") and all(p.dtype in (torch.float32, torch.bfloat16, torch.float16)
                                                          for p in params)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2), fused=fused)


class GRPOTrainer:
    def __init__(self, model, tokenizer, problems, config: GRPOConfig, reward_functions: list[RewardFunction] | None = None,
                 ref_model=None, out_dir: str | Path | None = None, wandb_project: str | None = None,
                 verbose: bool = True):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        questions, self.golds = zip(*(problem_fields(p) for p in problems)) if problems else ((), ())
        self.golds = list(self.golds)
        self.prompts = PromptCache(tokenizer, list(questions), config.prompt_style)
        self.stream = PromptStream(len(self.golds), config.seed)
        self.reward_functions = reward_functions or default_reward_functions(
            config.reward_weights, config.max_new_tokens, config.overlong_tokens)
        self.params = SamplingParams(config.temperature, config.top_k, config.top_p)
        self.generator = torch.Generator(device=model.device).manual_seed(config.seed)
        self.eos_ids = eos_ids_of(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.ref_model = None
        if config.uses_reference:  # with beta = 0 (and no KL log) the reference model is never built
            self.ref_model = ref_model if ref_model is not None else copy.deepcopy(model)
            self.ref_model.eval().requires_grad_(False)
        self.reference_source = None  # set when the reference weights are first saved beside the checkpoints
        self.optimizer = make_optimizer(model, config)
        per_step = config.inner_epochs * config.minibatches
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda u: lr_factor(
            u, config.steps * per_step, config.warmup_steps * per_step, config.min_lr_ratio))
        self.step = 0
        self.num_tokens = 0  # prompt + completion tokens processed so far (as TRL counts them)
        self.out_dir = Path(out_dir) if out_dir else None
        self.log = MetricsLog(self.out_dir / "metrics.jsonl" if self.out_dir else None, wandb_project, config.to_dict())
        self.verbose = verbose
        self.last_groups: list[Group] = []
        # Eager decoding spends most of its time dispatching small kernels; a compiled decode step
        # removes that overhead (it reads the live weights, so updates are seen).
        self.decode_step = compiled_decode_step(model) if config.compile_decode else None

    # ---- the loop --------------------------------------------------------------------------------

    def train(self, steps: int | None = None, progress: bool = True, callback=None) -> list[dict]:
        """Run until ``steps`` (default: config.steps) steps are done; returns their metrics."""
        from tqdm.auto import tqdm

        target = self.config.steps if steps is None else steps
        history = []
        bar = tqdm(total=target, initial=self.step, desc="GRPO", unit="step", disable=not progress)
        while self.step < target:
            metrics = self.train_step()
            history.append(metrics)
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward']:.3f}", kl=f"{metrics.get('kl', 0.0):.4f}")
            if self.verbose:
                (bar.write if progress else print)(format_summary(metrics))
            if self.out_dir and self.config.save_every and self.step % self.config.save_every == 0:
                self.save_checkpoint()
            if callback is not None:
                callback(metrics)
        bar.close()
        return history

    def train_step(self) -> dict:
        """One batch of rollouts and the updates on it; returns (and logs) the step's metrics."""
        started = time.perf_counter()
        self.model.train()
        groups, metrics = self.collect()
        rollout_time = time.perf_counter() - started
        metrics.update(self.update(groups))
        self.step += 1
        elapsed = time.perf_counter() - started
        self.num_tokens += metrics.pop("_prompt_tokens") + metrics["completions/generated_tokens"]
        metrics.update({"step": self.step, "step_time": elapsed, "rollout_time": rollout_time,
                        "update_time": elapsed - rollout_time,
                        "tokens_per_second": metrics["completions/generated_tokens"] / elapsed,
                        "num_tokens": self.num_tokens, "epoch": self.stream.epoch})
        self.log.write(metrics)
        self.last_groups = groups
        return metrics

    # ---- checkpoints ------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything besides the weights that the next step depends on."""
        return {
            "step": self.step, "num_tokens": self.num_tokens, "config": self.config.to_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python_rng": random.getstate(), "stream": self.stream.state_dict(),
            "reference_source": self.reference_source,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step, self.num_tokens = state["step"], state["num_tokens"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        random.setstate(state["python_rng"])
        self.stream.load_state_dict(state["stream"])
        self.log.truncate(self.step)

    def save_checkpoint(self) -> Path:
        """An HF-format model folder plus ``trainer_state.pt``, written atomically to
        ``<out_dir>/checkpoints/step-NNNNNN``; older ones beyond ``keep_checkpoints`` are removed."""
        if self.out_dir is None:
            raise ValueError("this trainer has no out_dir to save checkpoints in")
        if self.ref_model is not None and self.reference_source is None:
            self.reference_source = str(checkpointing.save_reference(self.ref_model, self.tokenizer, self.out_dir))
        return checkpointing.save_checkpoint(self.model, self.tokenizer, self.state_dict(), self.out_dir, self.step,
                                             self.config.keep_checkpoints)

    @classmethod
    def resume(cls, out_dir: str | Path, problems, reward_functions: list[RewardFunction] | None = None,
               device=None, dtype=None, checkpoint: str | Path | None = None, **kwargs) -> GRPOTrainer:
        """Rebuild the trainer of ``out_dir`` from its latest checkpoint (or ``checkpoint``)."""
        from companion.checkpoint import load_model

        folder = Path(checkpoint) if checkpoint else checkpointing.latest_checkpoint(out_dir)
        if folder is None:
            raise FileNotFoundError(f"no complete checkpoint in {Path(out_dir) / 'checkpoints'}")
        state = checkpointing.load_state(folder)
        config = GRPOConfig(**state["config"])
        model, tokenizer = load_model(folder, device=device, dtype=dtype)
        ref_model = None
        if config.uses_reference:
            ref_model, _ = load_model(state["reference_source"], device=device, dtype=dtype, tokenizer=False)
        trainer = cls(model, tokenizer, problems, config, reward_functions, ref_model, out_dir, **kwargs)
        trainer.reference_source = state["reference_source"]
        trainer.load_state_dict(state)
        return trainer

    # ---- rollouts ---------------------------------------------------------------------------------

    def sample(self, indices: list[int]) -> list[Group]:
        c = self.config
        return sample_groups(self.model, self.tokenizer, self.prompts, self.golds, indices, c.group_size,
                             c.max_new_tokens, self.params, self.generator, self.reward_functions, c.rollout_prompts,
                             c.min_new_tokens, self.decode_step)

    def collect(self) -> tuple[list[Group], dict]:
        """The step's groups (with rewards) and the metrics of what was sampled.

        With dynamic sampling, rounds of ``prompts_per_step`` prompts are drawn (at most
        ``max_draws``) and groups whose rewards are all equal are dropped, since their advantages
        are all zero: they would only dilute the batch. Reward metrics cover every drawn group.
        """
        c = self.config
        drawn: list[Group] = []
        kept: list[Group] = []
        draws = 0
        while draws < (c.max_draws if c.dynamic_sampling else 1):
            new = self.sample(self.stream.take(c.prompts_per_step))
            draws += 1
            drawn += new
            kept += [g for g in new if not c.dynamic_sampling or bool(has_spread(g.rewards[None])[0])]
            if len(kept) >= c.prompts_per_step:
                break
        metrics = self.reward_metrics(drawn)
        metrics["completions/generated_tokens"] = sum(len(tokens) for g in drawn for tokens in g.completions)
        metrics["_prompt_tokens"] = sum(len(g.prompt_ids) * g.size for g in drawn)
        if c.dynamic_sampling:
            dropped = sum(1 for g in drawn if not bool(has_spread(g.rewards[None])[0]))
            metrics.update({"dynamic_sampling/draws": draws, "dynamic_sampling/groups_drawn": len(drawn),
                            "dynamic_sampling/groups_dropped": dropped,
                            "dynamic_sampling/groups_kept": min(len(kept), c.prompts_per_step)})
        return kept[:c.prompts_per_step], metrics

    def reward_metrics(self, groups: list[Group]) -> dict:
        rewards = torch.stack([g.rewards for g in groups])  # (P, G)
        lengths = [len(c) for g in groups for c in g.completions]
        truncated = [t for g in groups for t in g.truncated]
        metrics = {"reward": float(rewards.mean()), "reward_std": float(rewards.std(dim=1).mean()),
                   "frac_reward_zero_std": float((~has_spread(rewards)).float().mean())}
        for name in groups[0].reward_values:
            values = torch.cat([g.reward_values[name] for g in groups])
            metrics[f"rewards/{name}/mean"] = float(values.mean())
            metrics[f"rewards/{name}/std"] = float(values.std()) if len(values) > 1 else 0.0
        if "correctness" in groups[0].reward_values:
            metrics["accuracy"] = metrics["rewards/correctness/mean"]
        if "format" in groups[0].reward_values:
            metrics["format"] = metrics["rewards/format/mean"]
        metrics.update({"completions/mean_length": sum(lengths) / len(lengths),
                        "completions/p95_length": percentile(lengths, 0.95),
                        "completions/min_length": min(lengths), "completions/max_length": max(lengths),
                        "completions/clipped_ratio": sum(truncated) / len(truncated),
                        "completions/eos_fraction": 1 - sum(truncated) / len(truncated)})
        return metrics

    # ---- updates ----------------------------------------------------------------------------------

    def advantages(self, groups: list[Group]) -> torch.Tensor:
        """(P, G) advantages of the kept groups."""
        return group_advantages(torch.stack([g.rewards for g in groups]), self.config.scale_rewards, self.config.adv_eps)

    def loss_tokens(self, group: Group, sample: int) -> int:
        """How many tokens of a completion enter the loss: up to and including its first EOS; none
        for a truncated one when truncated completions are masked out."""
        if self.config.mask_truncated and group.truncated[sample]:
            return 0
        tokens = group.completions[sample]
        return next((i + 1 for i, token in enumerate(tokens) if token in self.eos_ids), len(tokens))

    def minibatches(self, groups: list[Group], advantages: torch.Tensor) -> list[Minibatch]:
        """Groups split into ``minibatches`` parts (one optimizer update each), each cut into
        micro-batches of ``micro_batch`` completions, in group order.

        The normalizer counts every row of the part. The forward/backward skips rows that cannot
        change the gradient: rows with no token in the loss, and, when beta = 0, rows whose
        advantage is exactly 0 (every token's loss is -min(r * 0, clip(r) * 0) = 0, gradient 0).
        Groups whose rewards are all equal are such rows, often half of a batch.
        """
        c = self.config
        bounds = [round(i * len(groups) / c.minibatches) for i in range(c.minibatches + 1)]
        parts = []
        for lo, hi in zip(bounds, bounds[1:]):
            rows = [(g, s) for g in range(lo, hi) for s in range(groups[g].size)]
            counts = [self.loss_tokens(groups[g], s) for g, s in rows]
            norm = Normalizer(sum(counts), sum(1 for n in counts if n), c.loss_norm_constant)
            work = [(g, s) for (g, s), n in zip(rows, counts) if n and (c.uses_reference or float(advantages[g, s]) != 0.0)]
            micro = [self._micro_batch(groups, advantages, work[i:i + c.micro_batch])
                     for i in range(0, len(work), c.micro_batch)]
            parts.append(Minibatch(norm, micro, len(rows) - len(work)))
        return parts

    def _micro_batch(self, groups: list[Group], advantages: torch.Tensor, rows: list[tuple[int, int]]) -> MicroBatch:
        device = self.model.device
        packed = pack([groups[g].prompt_ids for g, _ in rows], [groups[g].completions[s] for g, s in rows],
                      self.pad_id, self.eos_ids, device)
        loss_mask = packed.valid
        if self.config.mask_truncated:
            truncated = torch.tensor([groups[g].truncated[s] for g, s in rows], device=device)
            loss_mask = loss_mask & ~truncated[:, None]
        sampler = torch.zeros(packed.valid.shape)
        for row, (g, s) in enumerate(rows):
            logprobs = groups[g].sampler_logprobs[s][:sampler.shape[1]]
            sampler[row, :len(logprobs)] = torch.tensor(logprobs)
        return MicroBatch(packed, loss_mask, torch.stack([advantages[g, s] for g, s in rows]).to(device),
                          sampler.to(device))

    @torch.no_grad()
    def _logprobs_no_grad(self, model, micro: MicroBatch) -> torch.Tensor:
        return completion_logprobs(model, micro.packed, self.config.temperature, self.config.logprob_chunk)[0]

    def update(self, groups: list[Group]) -> dict:
        """The optimizer updates on one batch of rollouts; returns the loss-side metrics."""
        c = self.config
        if not groups:  # dynamic sampling found no group with signal: nothing to learn from
            with warnings.catch_warnings():  # the schedule still advances, so steps keep their learning rates
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(c.inner_epochs * c.minibatches):
                    self.scheduler.step()
            return {"skipped_update": 1.0, "learning_rate": self.scheduler.get_last_lr()[0]}
        advantages = self.advantages(groups)
        minibatches = self.minibatches(groups, advantages)
        for micro in (m for part in minibatches for m in part.micro):
            if self.ref_model is not None:
                micro.ref_logp = self._logprobs_no_grad(self.ref_model, micro)
            if not c.on_policy:  # pi_old: the policy that sampled, fixed for all passes
                micro.old_logp = self._logprobs_no_grad(self.model, micro)
        stats = Accumulator()
        for epoch in range(c.inner_epochs):
            for part in minibatches:
                self.optimizer.zero_grad(set_to_none=True)
                for micro in part.micro:
                    self._accumulate_gradients(micro, part.norm, stats, first_pass=epoch == 0)
                for param in self.model.parameters():  # every row skipped: the gradient is exactly zero
                    if param.grad is None and param.requires_grad:
                        param.grad = torch.zeros_like(param)
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.max_grad_norm)
                stats.add_update(float(grad_norm))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)  # no gradients held through the next rollouts
                self.scheduler.step()
        adv = advantages.flatten()
        metrics = stats.metrics()
        metrics["skipped_rows_fraction"] = sum(p.skipped_rows for p in minibatches) / adv.numel()
        metrics["loss"] = metrics["policy_loss"] + c.beta * metrics["kl_loss"]
        return {**metrics, "advantage/mean": float(adv.mean()), "advantage/std": float(adv.std()),
                "learning_rate": self.scheduler.get_last_lr()[0]}

    def _accumulate_gradients(self, micro: MicroBatch, norm: Normalizer, stats: Accumulator, first_pass: bool) -> None:
        c = self.config
        logp, entropy = completion_logprobs(self.model, micro.packed, c.temperature, c.logprob_chunk)  # (B, L)
        # On-policy, pi_old is the current policy: the detached log-probs make the ratio exactly 1
        # while keeping the gradient of r * A equal to A * grad log pi.
        old_logp = logp.detach() if micro.old_logp is None else micro.old_logp
        terms = grpo_loss(logp, old_logp, micro.ref_logp, micro.advantages, micro.loss_mask, norm, loss_type=c.loss_type,
                          eps_low=c.clip_eps_low, eps_high=c.clip_eps_high, beta=c.beta,
                          importance_level=c.importance_level)
        terms.loss.backward()
        stats.add_micro(terms, micro, entropy, old_logp if first_pass else None)


@dataclass
class Minibatch:
    """The rows of one optimizer update: their normalizer and the micro-batches that need computing."""

    norm: Normalizer
    micro: list[MicroBatch]
    skipped_rows: int


class MicroBatch:
    """A packed micro-batch with its loss mask (B, L), advantages (B,), sampler log-probs (B, L),
    and the reference / old log-probs once computed."""

    def __init__(self, packed: PackedBatch, loss_mask, advantages, sampler_logp):
        self.packed, self.loss_mask, self.advantages, self.sampler_logp = packed, loss_mask, advantages, sampler_logp
        self.ref_logp: torch.Tensor | None = None
        self.old_logp: torch.Tensor | None = None


class Accumulator:
    """Sums over micro-batches, turned into token means and per-update means at the end."""

    def __init__(self):
        self.sums: dict[str, float] = {}

    def _add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + value

    def add_micro(self, terms, micro: MicroBatch, entropy: torch.Tensor, pre_update_logp: torch.Tensor | None) -> None:
        mask = micro.loss_mask.float()
        tokens = float(mask.sum())
        self._add("tokens", tokens)
        self._add("ratio", float((terms.ratio * mask).sum()))
        self._add("clip_low", float((terms.clipped_low * mask).sum()))
        self._add("clip_high", float((terms.clipped_high * mask).sum()))
        self._add("policy_loss", float(terms.policy_loss))
        self._add("kl_loss", float(terms.kl_loss))
        if terms.kl is not None:
            self._add("kl", float((terms.kl * mask).sum()))
        if pre_update_logp is not None:  # the first pass: weights are still those that sampled
            valid = micro.packed.valid.float()
            self._add("first_tokens", tokens)
            self._add("entropy", float((entropy * mask).sum()))
            self._add("valid_tokens", float(valid.sum()))
            self._add("logp_diff", float(((pre_update_logp - micro.sampler_logp).abs() * valid).sum()))

    def add_update(self, grad_norm: float) -> None:
        self._add("updates", 1)
        self._add("grad_norm", grad_norm)

    def metrics(self) -> dict:
        s = self.sums
        updates = max(1.0, s.get("updates", 0))
        out = {"policy_loss": s.get("policy_loss", 0) / updates, "kl_loss": s.get("kl_loss", 0) / updates,
               "grad_norm": s.get("grad_norm", 0) / updates}
        if s.get("valid_tokens"):
            out["sampling/logp_difference_mean"] = s["logp_diff"] / s["valid_tokens"]
        tokens = s.get("tokens", 0)
        if tokens:  # token means only exist when some token was in the loss
            out.update({"ratio/mean": s["ratio"] / tokens, "clip_ratio/low_mean": s["clip_low"] / tokens,
                        "clip_ratio/high_mean": s["clip_high"] / tokens,
                        "clip_ratio/region_mean": (s["clip_low"] + s["clip_high"]) / tokens,
                        "entropy": s["entropy"] / s["first_tokens"]})
            if "kl" in s:
                out["kl"] = s["kl"] / tokens
        return out
