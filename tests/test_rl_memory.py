"""plan-run's memory budget against the peak memory a real GRPO run reaches on CPU."""
import json
import os
import subprocess
import sys

from companion.config import ModelConfig
from companion.rl.config import GRPOConfig
from companion.rl.memory import num_parameters, plan
from companion.rl.toy import toy_model

# Runs in a fresh process. Warm-up first (a tiny run loads every library and kernel a run needs).
# Then for each configuration: reset the peak-RSS mark, take the RSS as baseline, run two steps;
# the peak above the baseline is what that configuration costs.
MEASURE = r"""
import gc, json, os, sys
import torch
torch.set_num_threads(1)
from companion.rl import GRPOConfig, GRPOTrainer, RewardFunction
from companion.rl.memory import plan
from companion.rl.toy import toy_model, toy_problems, toy_tokenizer

tokenizer = toy_tokenizer()
problems = [toy_problems(count=1)[0]] * 4  # one prompt length, so the plan's prompt length is exact
# a reward that is never exactly the group's mean: no row is skipped for a zero advantage
reward = [RewardFunction("r", lambda batch: [sum(map(ord, t)) / 997 + 1e-3 * i for i, t in enumerate(batch.texts)])]

def run(model, **settings):
    config = GRPOConfig.from_algo("grpo", steps=2, prompts_per_step=2, group_size=4, lr=1e-4, **settings)
    trainer = GRPOTrainer(model, tokenizer, problems, config, reward_functions=reward, verbose=False)
    trainer.train(progress=False)
    return trainer

def kib(key):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(key))

run(toy_model(len(tokenizer)), max_new_tokens=4, micro_batch=2, beta=0.01)
results = []
for hidden, layers, micro, beta, new_tokens in json.loads(sys.argv[1]):
    gc.collect()
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # VmHWM := VmRSS
    base = kib("VmRSS")
    model = toy_model(len(tokenizer), hidden=hidden, layers=layers, heads=8, kv_heads=4, head_dim=hidden // 8,
                      std=0.2)
    trainer = run(model, max_new_tokens=new_tokens, micro_batch=micro, beta=beta)
    lengths = [len(c) for g in trainer.last_groups for c in g.completions]
    predicted = plan(model.config, trainer.config, len(trainer.prompts[0][1])).peak
    results.append({"measured": (kib("VmHWM") - base) * 1024, "predicted": predicted,
                    "full_length": max(lengths) == new_tokens})
    del model, trainer
print(json.dumps(results))
"""


def measure(configurations):
    # Large allocations go straight to mmap and back to the system when freed, so RSS tracks live
    # tensors instead of what the allocator keeps cached (which depends on allocation order).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(configurations)],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_plan_predicts_peak_memory_within_25_percent():
    # (hidden, layers, micro-batch, beta, completion tokens): one micro-batch per update with a
    # reference model, then gradient accumulation over two micro-batches
    configurations = [(384, 3, 8, 0.04, 32), (256, 3, 4, 0.0, 48)]
    for settings, result in zip(configurations, measure(configurations)):
        assert result["full_length"]  # some completion ran to the limit, as the plan assumes
        ratio = result["measured"] / result["predicted"]
        assert 0.75 < ratio < 1.25, (settings, result, ratio)


def test_parameter_count_matches_the_model():
    for tied in (True, False):
        model = toy_model(300, hidden=48, layers=3, heads=4, kv_heads=2, head_dim=12)
        config = model.config
        if not tied:
            config = ModelConfig(**{**config.__dict__, "tie_word_embeddings": False})
            from companion.model import Qwen3Model
            model = Qwen3Model(config)
        assert num_parameters(config) == sum(p.numel() for p in model.parameters())


def test_plan_grows_with_each_setting():
    config = ModelConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    base = plan(config, GRPOConfig(beta=0.0), prompt_tokens=50)
    assert "reference model" not in base.items
    assert plan(config, GRPOConfig(beta=0.1), 50).resident > base.resident
    assert plan(config, GRPOConfig(beta=0.0, micro_batch=16), 50).update > base.update
    assert plan(config, GRPOConfig(beta=0.0, group_size=16), 50).rollout > base.rollout
    assert base.completion_tokens_per_step == 8 * 8 * 256
    assert "peak" in base.format()
