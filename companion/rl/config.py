"""Every setting of a GRPO run in one dataclass, and the presets of the GRPO family.

The variants differ in a handful of switches, not in code paths, so that an ablation changes one
field at a time (chapter 7):

=============  ===================  ==============  ============  =======================================
preset         loss aggregation     advantage       clip range    other
=============  ===================  ==============  ============  =======================================
``grpo``       ``grpo`` (seq-mean)  / group std     0.2 / 0.2     KL to the reference, beta 0.04
``dr_grpo``    ``dr_grpo`` (/ L)    no scaling      0.2 / 0.2     beta 0
``dapo``       ``dapo`` (tok-mean)  / group std     0.2 / 0.28    dynamic sampling, overlong shaping
                                                                  and masking of truncated completions
``gspo``       ``grpo`` (seq-mean)  / group std     3e-4 / 4e-4   sequence-level importance ratio
=============  ===================  ==============  ============  =======================================

Each switch is also a field (and a flag of ``python -m companion train-grpo``) of its own, so that a
single change can be added to plain GRPO: ``loss_type`` / ``dr_grpo_norm``, ``scale_rewards``,
``clip_eps_low`` / ``clip_eps_high``, ``dynamic_sampling`` / ``max_draws``, ``overlong_cache``,
``mask_truncated``, ``beta`` / ``log_kl`` and ``importance_level``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")
SCALE_REWARDS = ("group", "batch", "none")
IMPORTANCE_LEVELS = ("token", "sequence")
ALGORITHMS = ("grpo", "dr_grpo", "dapo", "gspo")

# The fields each preset sets; everything else keeps its default or the user's value.
PRESETS: dict[str, dict] = {
    "grpo": dict(loss_type="grpo", scale_rewards="group", clip_eps_low=0.2, clip_eps_high=0.2,
                 importance_level="token", beta=0.04, dynamic_sampling=False, overlong_cache=0,
                 mask_truncated=False),
    "dr_grpo": dict(loss_type="dr_grpo", scale_rewards="none", clip_eps_low=0.2, clip_eps_high=0.2,
                    importance_level="token", beta=0.0, dynamic_sampling=False, overlong_cache=0,
                    mask_truncated=False),
    "dapo": dict(loss_type="dapo", scale_rewards="group", clip_eps_low=0.2, clip_eps_high=0.28,
                 importance_level="token", beta=0.0, dynamic_sampling=True, overlong_cache=-1,
                 mask_truncated=True),
    "gspo": dict(loss_type="grpo", scale_rewards="group", clip_eps_low=3e-4, clip_eps_high=4e-4,
                 importance_level="sequence", beta=0.0, dynamic_sampling=False, overlong_cache=0,
                 mask_truncated=False),
}


@dataclass
class GRPOConfig:
    """Settings of a run. Lengths are in tokens; "step" means one batch of rollouts.

    One step samples ``group_size`` completions for each of ``prompts_per_step`` prompts, scores
    them, and then makes ``inner_epochs`` passes over them; each pass is ``minibatches`` optimizer
    updates, each accumulated over micro-batches of ``micro_batch`` completions.
    """

    algo: str = "grpo"
    # -- rollouts
    prompts_per_step: int = 8
    group_size: int = 8
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0  # top_k / top_p shape what is drawn; log-probs (sampler's and trainer's alike) are of the
    top_p: float = 1.0  # whole temperature-scaled distribution, as in TRL, so the two always agree
    prompt_style: str = "cot"
    rollout_prompts: int = 0  # prompts generated together (bounds the KV cache); 0 = all of the step's
    min_new_tokens: int = 0  # EOS blocked before this many tokens (benchmarks force fixed lengths with it)
    compile_decode: bool = False  # torch.compile the sampling engine's decode step (compiles once, for minutes)
    # -- optimization
    steps: int = 100
    inner_epochs: int = 1  # mu: passes over each batch of rollouts
    minibatches: int = 1  # optimizer updates per pass
    micro_batch: int = 8  # completions per forward/backward
    lr: float = 1e-6
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    warmup_steps: int = 0  # in steps (batches of rollouts), linear from 0
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    max_grad_norm: float = 1.0
    logprob_chunk: int = 1024  # positions per chunk of the LM head when computing log-probs
    # -- loss
    loss_type: str = "grpo"  # grpo: per-sequence token mean; dapo: global token mean; dr_grpo: token sum / L
    dr_grpo_norm: int = 0  # the constant of dr_grpo; 0 = max_new_tokens
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    importance_level: str = "token"  # "sequence" = GSPO
    beta: float = 0.04  # k3 KL to the reference model in the loss; 0 = no KL term
    log_kl: bool = False  # with beta = 0, still load the reference model, only to log the KL (monitoring)
    # -- advantages
    scale_rewards: str = "group"
    adv_eps: float = 1e-4
    # -- rewards
    reward_weights: dict = field(default_factory=lambda: {"correctness": 1.0, "format": 0.2})
    overlong_cache: int = 0  # soft overlong punishment over the last N tokens; 0 off, -1 = max_new_tokens // 4
    mask_truncated: bool = False  # completions cut by max_new_tokens leave the loss
    # -- dynamic sampling (DAPO)
    dynamic_sampling: bool = False
    max_draws: int = 4  # rounds of prompts drawn per step at most
    # -- bookkeeping
    seed: int = 0
    save_every: int = 0  # steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 2

    def __post_init__(self):
        checks = [
            (self.algo in ALGORITHMS, f"algo must be one of {ALGORITHMS}"),
            (self.loss_type in LOSS_TYPES, f"loss_type must be one of {LOSS_TYPES}"),
            (self.scale_rewards in SCALE_REWARDS, f"scale_rewards must be one of {SCALE_REWARDS}"),
            (self.importance_level in IMPORTANCE_LEVELS, f"importance_level must be one of {IMPORTANCE_LEVELS}"),
            (self.group_size >= 2, "group_size must be at least 2 (the group is the baseline)"),
            (self.prompts_per_step >= 1 and self.micro_batch >= 1, "prompts_per_step and micro_batch must be >= 1"),
            (self.inner_epochs >= 1 and self.minibatches >= 1, "inner_epochs and minibatches must be >= 1"),
            (self.minibatches <= self.prompts_per_step, "minibatches cannot exceed prompts_per_step"),
            (self.temperature > 0, "GRPO samples: temperature must be > 0"),
            (self.beta >= 0, "beta must be >= 0"),
            (0 <= self.clip_eps_low < 1 and self.clip_eps_high >= 0, "clip ranges must satisfy 0 <= eps_low < 1"),
            (self.max_draws >= 1, "max_draws must be >= 1"),
            (self.dr_grpo_norm >= 0, "dr_grpo_norm must be >= 0 (0 = max_new_tokens)"),
            (self.overlong_cache >= -1 and self.overlong_tokens <= self.max_new_tokens,
             "overlong_cache must be -1 (a quarter of max_new_tokens), 0 (off) or at most max_new_tokens"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @classmethod
    def from_algo(cls, algo: str = "grpo", **overrides) -> GRPOConfig:
        """The preset ``algo``, then ``overrides`` on top (explicit values always win)."""
        if algo not in PRESETS:
            raise ValueError(f"unknown algo {algo!r}; choose one of {', '.join(ALGORITHMS)}")
        return cls(**{"algo": algo, **PRESETS[algo], **overrides})

    @property
    def on_policy(self) -> bool:
        """One update per batch of rollouts: pi_old is the current policy, so the ratio is exactly 1."""
        return self.inner_epochs == 1 and self.minibatches == 1

    @property
    def uses_reference(self) -> bool:
        """Whether the reference model is built at all: only for a KL term or a KL log."""
        return self.beta > 0 or self.log_kl

    @property
    def overlong_tokens(self) -> int:
        return self.max_new_tokens // 4 if self.overlong_cache < 0 else self.overlong_cache

    @property
    def loss_norm_constant(self) -> int:
        return self.dr_grpo_norm or self.max_new_tokens

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """The settings that define the algorithm, as printed at the start of a run."""
        reference = ("reference model loaded" if self.beta > 0 else
                     "reference model loaded only to log KL" if self.log_kl else "no reference model")
        normalizer = f" (constant {self.loss_norm_constant})" if self.loss_type == "dr_grpo" else ""
        lines = [f"algorithm {self.algo}: loss_type={self.loss_type}{normalizer} scale_rewards={self.scale_rewards} "
                 f"clip=[1-{self.clip_eps_low}, 1+{self.clip_eps_high}] importance={self.importance_level} "
                 f"beta={self.beta} ({reference})",
                 f"  dynamic_sampling={self.dynamic_sampling} (max_draws={self.max_draws}) "
                 f"overlong_punishment={'last ' + str(self.overlong_tokens) + ' tokens' if self.overlong_tokens else 'off'} "
                 f"mask_truncated={self.mask_truncated}",
                 f"  batch: {self.prompts_per_step} prompts x {self.group_size} completions of <= {self.max_new_tokens} "
                 f"tokens; mu={self.inner_epochs} x {self.minibatches} minibatch(es); micro-batch {self.micro_batch}; "
                 f"T={self.temperature} lr={self.lr} rewards={self.reward_weights}"]
        if self.importance_level == "sequence" and self.clip_eps_high >= 0.05:
            lines.append("  note: a length-normalized sequence ratio rarely leaves [0.8, 1.2]; GSPO clips it to "
                         "[1-3e-4, 1+4e-4] (--algo gspo)")
        if self.importance_level == "sequence" and self.on_policy:
            lines.append("  note: on-policy (mu=1, one minibatch), so the sequence ratio is 1 and GSPO equals GRPO here")
        return "\n".join(lines)
