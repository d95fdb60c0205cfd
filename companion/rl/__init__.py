"""Reinforcement learning with verifiable rewards: GRPO and its family (Dr. GRPO, DAPO, GSPO).

    from companion.rl import GRPOConfig, GRPOTrainer
    trainer = GRPOTrainer(model, tokenizer, problems, GRPOConfig.from_algo("dapo", steps=50), out_dir="runs/dapo")
    trainer.train()

Modules: ``rollout`` (G samples per prompt), ``rewards``, ``advantages``, ``logprobs`` (memory-lean
per-token log-probs), ``losses`` (clipped surrogate, KL, aggregation), ``trainer``,
``checkpointing``, ``metrics``, ``memory`` (plan a run's memory), ``cli``.
"""
from companion.rl.advantages import group_advantages
from companion.rl.config import ALGORITHMS, PRESETS, GRPOConfig
from companion.rl.losses import Normalizer, aggregate, grpo_loss
from companion.rl.rewards import (Completions, RewardFunction, correctness_reward, default_reward_functions,
                                  format_reward, soft_overlong_punishment)
from companion.rl.trainer import GRPOTrainer

__all__ = ["ALGORITHMS", "PRESETS", "Completions", "GRPOConfig", "GRPOTrainer", "Normalizer", "RewardFunction",
           "aggregate", "correctness_reward", "default_reward_functions", "format_reward", "group_advantages",
           "grpo_loss", "soft_overlong_punishment"]
