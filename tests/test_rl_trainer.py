"""The GRPO trainer end to end on a tiny random model: invariants, micro-batching, resume, variants."""
import json
import math

import pytest
import torch

from companion.checkpoint import load_model
from companion.rl import GRPOConfig, GRPOTrainer, RewardFunction, checkpointing
from companion.rl.cli import config_from_args, register_cli
from companion.rl.cli import main as rl_main
from companion.rl.config import PRESETS
from companion.rl.logprobs import completion_logprobs
from companion.rl.toy import toy_model
from rl_helpers import REWARDS, one_thread, problems, tokenizer, varied_reward  # noqa: F401 (fixtures)


def make_trainer(tokenizer, problems, out_dir=None, seed=0, rewards=REWARDS, **settings):
    base = dict(steps=4, prompts_per_step=2, group_size=4, max_new_tokens=12, micro_batch=8, lr=3e-3, seed=seed)
    config = GRPOConfig.from_algo(settings.pop("algo", "grpo"), **{**base, **settings})
    model = toy_model(len(tokenizer), hidden=32, layers=2, heads=4, kv_heads=2, head_dim=8, std=0.3, seed=seed)
    return GRPOTrainer(model, tokenizer, problems, config, reward_functions=rewards, out_dir=out_dir, verbose=False)


# ---- step-one invariants ----------------------------------------------------------------------------

def test_first_step_has_ratio_exactly_one_and_kl_exactly_zero(tokenizer, problems):
    trainer = make_trainer(tokenizer, problems, beta=0.1)
    assert trainer.ref_model is not None
    metrics = trainer.train_step()
    assert metrics["ratio/mean"] == 1.0 and metrics["kl"] == 0.0 and metrics["kl_loss"] == 0.0
    assert metrics["clip_ratio/region_mean"] == 0.0
    assert metrics["advantage/mean"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["advantage/std"] == pytest.approx(1.0, abs=0.2)  # per group 1; pooled about 1
    assert metrics["frac_reward_zero_std"] == 0.0 and metrics["grad_norm"] > 0
    assert metrics["sampling/logp_difference_mean"] < 1e-4  # the engine's log-probs = the trainer's
    second = trainer.train_step()  # the policy moved away from the reference
    assert second["kl"] > 0


def test_off_policy_old_logprobs_equal_the_current_ones_before_the_first_update(tokenizer, problems):
    trainer = make_trainer(tokenizer, problems, inner_epochs=2, beta=0.0)
    groups, _ = trainer.collect()
    [part] = trainer.minibatches(groups, trainer.advantages(groups))
    [micro] = part.micro
    old = trainer._logprobs_no_grad(trainer.model, micro)
    current, _ = completion_logprobs(trainer.model, micro.packed, trainer.config.temperature)
    assert torch.equal(old, current.detach())  # ratio exactly 1 at the first pass


def test_beta_zero_loads_no_reference_model(tokenizer, problems):
    trainer = make_trainer(tokenizer, problems, algo="dr_grpo")
    assert trainer.config.beta == 0 and trainer.ref_model is None
    assert "kl" not in trainer.train_step()


# ---- micro-batching and gradient accumulation ----------------------------------------------------------

def _gradients(trainer, groups, micro_batch):
    from companion.rl.trainer import Accumulator

    trainer.config.micro_batch = micro_batch
    [part] = trainer.minibatches(groups, trainer.advantages(groups))
    trainer.model.zero_grad(set_to_none=True)
    for micro in part.micro:
        if trainer.ref_model is not None:
            micro.ref_logp = trainer._logprobs_no_grad(trainer.ref_model, micro)
        trainer._accumulate_gradients(micro, part.norm, Accumulator(), first_pass=True)
    return [p.grad.clone() for p in trainer.model.parameters()]


@pytest.mark.parametrize("algo", ["grpo", "dapo", "dr_grpo"])
def test_gradient_accumulation_gives_the_big_batch_gradient(tokenizer, problems, algo):
    trainer = make_trainer(tokenizer, problems, algo=algo, prompts_per_step=3, max_new_tokens=16,
                           mask_truncated=False, dynamic_sampling=False, beta=0.05)
    groups, _ = trainer.collect()
    eos = tokenizer.eos_token_id
    for i, group in enumerate(groups):  # completions of different lengths, ended by EOS or cut
        for s in range(group.size):
            cut = 2 + (3 * i + 5 * s) % 14
            group.completions[s] = group.completions[s][:cut - 1] + ([eos] if cut < 16 else group.completions[s][cut - 1:cut])
            group.truncated[s] = cut == 16
            group.sampler_logprobs[s] = group.sampler_logprobs[s][:cut]
    lengths = {len(c) for g in groups for c in g.completions}
    assert len(lengths) > 5
    whole = _gradients(trainer, groups, micro_batch=12)
    for micro_batch in (5, 1):  # uneven micro-batches that straddle groups
        split = _gradients(trainer, groups, micro_batch)
        for a, b in zip(whole, split):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-7), (algo, micro_batch)
    assert any(float(g.abs().max()) > 0 for g in whole)


def test_truncated_completions_leave_the_loss_and_its_normalizer(tokenizer, problems):
    trainer = make_trainer(tokenizer, problems, algo="dapo", max_new_tokens=6, prompts_per_step=4)
    groups, _ = trainer.collect()
    eos = tokenizer.eos_token_id
    for g in groups:  # half of the completions end with EOS at length 6, the rest stay cut
        for s in range(0, g.size, 2):
            g.completions[s][-1], g.truncated[s] = eos, False
    truncated = [t for g in groups for t in g.truncated]
    assert any(truncated) and not all(truncated)
    advantages = trainer.advantages(groups)
    # With beta = 0 a row whose advantage is exactly 0 adds nothing and is not computed either.
    signal = [bool(a != 0) for group_advantages in advantages for a in group_advantages]
    [part] = trainer.minibatches(groups, advantages)
    assert part.norm.num_tokens == 6 * truncated.count(False) and part.norm.num_sequences == truncated.count(False)
    computed = sum(1 for cut, nonzero in zip(truncated, signal) if not cut and nonzero)
    assert sum(m.packed.num_rows for m in part.micro) == computed  # cut ones are not even computed
    assert all(bool(m.loss_mask.all()) for m in part.micro)
    trainer.config.mask_truncated = False
    [part] = trainer.minibatches(groups, trainer.advantages(groups))
    assert part.norm.num_tokens == 6 * len(truncated) and sum(m.packed.num_rows for m in part.micro) == sum(signal)


def test_rows_with_zero_advantage_are_skipped_without_changing_the_gradient(tokenizer, problems):
    """beta = 0: a group whose rewards are all equal has zero advantages, so its rows are not
    computed; the gradient still equals the one of the full batch written out here."""
    from companion.rl.logprobs import pack
    from companion.rl.losses import grpo_loss

    def reward(batch):  # even answers: the same reward for the whole group
        return [1.0 if int(gold) % 2 == 0 else varied_reward(batch)[i] for i, gold in enumerate(batch.golds)]

    odd = [p for p in problems if int(p["answer"]) % 2][:2]
    even = [p for p in problems if int(p["answer"]) % 2 == 0][:1]
    trainer = make_trainer(tokenizer, odd[:1] + even + odd[1:], rewards=[RewardFunction("r", reward)], algo="dapo",
                           prompts_per_step=3, mask_truncated=False, dynamic_sampling=False, micro_batch=5)
    trainer.stream.take = lambda count: [0, 1, 2]
    groups, _ = trainer.collect()
    advantages = trainer.advantages(groups)
    assert torch.equal(advantages[1], torch.zeros(4)) and (advantages[0] != 0).all()
    skipped_gradient = _gradients(trainer, groups, micro_batch=5)
    [part] = trainer.minibatches(groups, advantages)
    assert part.skipped_rows == 4 and part.norm.num_sequences == 12

    rows = [(g, s) for g in range(3) for s in range(4)]
    batch = pack([groups[g].prompt_ids for g, _ in rows], [groups[g].completions[s] for g, s in rows],
                 trainer.pad_id, trainer.eos_ids, layout="right")
    trainer.model.zero_grad(set_to_none=True)
    logp, _ = completion_logprobs(trainer.model, batch, trainer.config.temperature)
    terms = grpo_loss(logp, logp.detach(), None, advantages.flatten(), batch.valid, part.norm, loss_type="dapo")
    terms.loss.backward()
    for a, b in zip(skipped_gradient, trainer.model.parameters()):
        assert torch.allclose(a, b.grad, rtol=1e-4, atol=1e-7)


# ---- checkpoints and exact resume ---------------------------------------------------------------------

def test_resume_continues_bit_for_bit(tokenizer, problems, tmp_path):
    settings = dict(steps=4, save_every=2, beta=0.04, inner_epochs=2, warmup_steps=1)
    straight = make_trainer(tokenizer, problems, tmp_path / "straight", **settings)
    straight.train(progress=False)

    first = make_trainer(tokenizer, problems, tmp_path / "stopped", **settings)
    initial = [p.detach().clone() for p in first.model.parameters()]
    first.train(steps=2, progress=False)  # checkpoint at step 2, then "killed"
    del first
    resumed = GRPOTrainer.resume(tmp_path / "stopped", problems, reward_functions=REWARDS, verbose=False)
    assert resumed.step == 2 and resumed.ref_model is not None
    resumed.train(progress=False)

    for a, b, c in zip(straight.model.parameters(), resumed.model.parameters(), initial):
        assert torch.equal(a, b)
        assert not torch.equal(a, c) or a.dim() == 1  # training did move the weights
    logs = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("straight", "stopped")]
    assert [r["step"] for r in logs[1]] == [1, 2, 3, 4]
    for a, b in zip(*logs):
        assert a["reward"] == b["reward"] and a["loss"] == b["loss"] and a["learning_rate"] == b["learning_rate"]


def test_checkpoints_are_atomic_pruned_and_loadable(tokenizer, problems, tmp_path):
    trainer = make_trainer(tokenizer, problems, tmp_path, steps=3, save_every=1, keep_checkpoints=2, beta=0.0)
    trainer.train(progress=False)
    folders = checkpointing.complete_checkpoints(tmp_path)
    assert [f.name for f in folders] == ["step-000002", "step-000003"]
    assert checkpointing.latest_checkpoint(tmp_path) == folders[-1]
    (tmp_path / "checkpoints" / ".step-000004.partial-1").mkdir()  # what a kill during a save leaves
    assert checkpointing.latest_checkpoint(tmp_path) == folders[-1]
    model, _ = load_model(folders[-1], device="cpu")
    for a, b in zip(model.parameters(), trainer.model.parameters()):
        assert torch.equal(a, b)


def test_checkpoint_loads_in_transformers(tokenizer, problems, tmp_path):
    transformers = pytest.importorskip("transformers")
    trainer = make_trainer(tokenizer, problems, tmp_path, steps=1, beta=0.0)
    trainer.train(progress=False)
    folder = trainer.save_checkpoint()
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.tensor([[5, 9, 100, 42, 7]])
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, trainer.model(ids), atol=1e-4)


# ---- variants ----------------------------------------------------------------------------------------

def test_presets_set_the_algorithm_and_flags_win(tokenizer, problems):
    import argparse

    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    base = ["train-grpo", "--out-dir", "x"]
    dapo = config_from_args(parser.parse_args(base + ["--algo", "dapo"]))
    assert (dapo.loss_type, dapo.clip_eps_low, dapo.clip_eps_high, dapo.dynamic_sampling, dapo.mask_truncated,
            dapo.beta) == ("dapo", 0.2, 0.28, True, True, 0.0)
    assert dapo.overlong_tokens == dapo.max_new_tokens // 4
    dr = config_from_args(parser.parse_args(base + ["--algo", "dr_grpo"]))
    assert (dr.loss_type, dr.scale_rewards, dr.beta, dr.loss_norm_constant) == ("dr_grpo", "none", 0.0, dr.max_new_tokens)
    gspo = config_from_args(parser.parse_args(base + ["--algo", "gspo", "--inner-epochs", "2"]))
    assert (gspo.importance_level, gspo.clip_eps_low, gspo.clip_eps_high) == ("sequence", 3e-4, 4e-4)
    mixed = config_from_args(parser.parse_args(base + ["--algo", "dapo", "--clip-eps-high", "0.3", "--no-dynamic-sampling",
                                                       "--beta", "0.01", "--scale-rewards", "batch"]))
    assert (mixed.clip_eps_high, mixed.dynamic_sampling, mixed.beta, mixed.scale_rewards) == (0.3, False, 0.01, "batch")
    assert "GSPO equals GRPO" in GRPOConfig.from_algo("gspo").describe()
    assert set(PRESETS) == {"grpo", "dr_grpo", "dapo", "gspo"}


def test_dynamic_sampling_keeps_only_groups_with_signal(tokenizer, problems):
    def reward(batch):  # problems with an even answer give every completion the same reward
        return [1.0 if int(gold) % 2 == 0 else varied_reward(batch)[i] for i, gold in enumerate(batch.golds)]

    odd = sum(int(p["answer"]) % 2 for p in problems)
    assert 0 < odd < len(problems)
    trainer = make_trainer(tokenizer, problems, rewards=[RewardFunction("r", reward)], algo="dapo", prompts_per_step=3,
                           max_draws=6)
    groups, metrics = trainer.collect()
    assert all(float(g.rewards.max() - g.rewards.min()) > 0 for g in groups)
    assert len(groups) == metrics["dynamic_sampling/groups_kept"] == 3
    assert metrics["dynamic_sampling/groups_drawn"] == 3 * metrics["dynamic_sampling/draws"]
    assert metrics["dynamic_sampling/groups_dropped"] == round(metrics["frac_reward_zero_std"] * metrics["dynamic_sampling/groups_drawn"])
    assert metrics["dynamic_sampling/groups_dropped"] > 0 or metrics["dynamic_sampling/draws"] == 1
    without = make_trainer(tokenizer, problems, rewards=[RewardFunction("r", reward)], algo="grpo", prompts_per_step=6)
    groups, _ = without.collect()
    assert len(groups) == 6 and any(float(g.rewards.max() - g.rewards.min()) == 0 for g in groups)


@pytest.mark.parametrize("algo", ["dapo", "gspo", "dr_grpo"])
def test_every_preset_trains_off_policy(tokenizer, problems, algo):
    # mask_truncated off: a random model's completions are all cut, and would all leave the loss
    trainer = make_trainer(tokenizer, problems, algo=algo, steps=2, inner_epochs=2, minibatches=2, micro_batch=3,
                           mask_truncated=False)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    history = trainer.train(progress=False)
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    assert history[-1]["ratio/mean"] != 1.0  # later updates are off-policy
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_learning_rate_warms_up_then_decays(tokenizer, problems):
    trainer = make_trainer(tokenizer, problems, steps=6, warmup_steps=2, lr=1e-3, min_lr_ratio=0.1, max_new_tokens=4)
    rates = [h["learning_rate"] for h in trainer.train(progress=False)]
    assert rates[0] == pytest.approx(1e-3)  # after warm-up update 1 (0.5e-3), the second update sets 1e-3
    assert all(a >= b for a, b in zip(rates, rates[1:])) and rates[-1] == pytest.approx(1e-4)


# ---- command line ----------------------------------------------------------------------------------------

def test_cli_train_resume_plot_and_inspect(tokenizer, tmp_path, capsys):
    from companion.checkpoint import save_model

    model = toy_model(len(tokenizer), hidden=32, layers=2, heads=4, kv_heads=2, head_dim=8, std=0.3)
    save_model(model, tokenizer, tmp_path / "start")
    common = ["--model", str(tmp_path / "start"), "--dataset", "arith", "--limit", "8", "--prompts-per-step", "2",
              "-G", "3", "--max-new-tokens", "8", "--out-dir", str(tmp_path / "run"), "--no-progress", "--algo", "dapo"]
    assert rl_main(["train-grpo", *common, "--steps", "2", "--save-every", "1"]) == 0
    out = capsys.readouterr().out
    assert "algorithm dapo" in out and "step 2" in out
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    with pytest.raises(SystemExit):  # refuses to overwrite a run
        rl_main(["train-grpo", *common, "--steps", "2"])
    assert rl_main(["train-grpo", *common, "--steps", "2", "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert rl_main(["plot-log", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "metrics.png").stat().st_size > 1000
    assert rl_main(["inspect-rollouts", "--model", str(tmp_path / "run" / "model"), "--prompt", "What is 2+3?",
                    "--gold", "5", "--G", "2", "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert "sample 1: reward" in out and "correctness=" in out
    assert rl_main(["plan-run", "--model", str(tmp_path / "start"), "--prompt-tokens", "50", "-G", "4"]) == 0
    out = capsys.readouterr().out
    assert "AdamW moments" in out and "peak" in out


def test_overlong_punishment_joins_the_rewards_when_asked(tokenizer, problems):
    from companion.rl.rewards import default_reward_functions

    names = [f.name for f in default_reward_functions({"correctness": 1.0}, max_new_tokens=8, overlong_tokens=4)]
    assert names == ["correctness", "overlong"]
    trainer = make_trainer(tokenizer, problems, rewards=None, algo="dapo", max_new_tokens=8, mask_truncated=False,
                           dynamic_sampling=False, reward_weights={"correctness": 1.0})
    assert trainer.config.overlong_tokens == 2
    _, metrics = trainer.collect()
    # random completions run to the limit: -1 each, and nothing is correct
    assert metrics["rewards/overlong/mean"] == -1.0 and metrics["reward"] == -1.0
    assert metrics["accuracy"] == 0.0
