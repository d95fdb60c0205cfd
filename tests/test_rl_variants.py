"""Chapter 7: every switch of the GRPO family is a flag and a config field, and each does what it
says, on hand-made tensors and in the trainer on a tiny random model."""
import argparse
import math

import pytest
import torch

from companion.rl import GRPOConfig, GRPOTrainer, RewardFunction
from companion.rl.advantages import group_advantages
from companion.rl.cli import config_from_args, register_cli
from companion.rl.cli import main as rl_main
from companion.rl.config import PRESETS
from companion.rl.losses import Normalizer, aggregate, grpo_loss, importance_log_ratio
from companion.rl.rewards import Completions, default_reward_functions
from companion.rl.toy import toy_model
from rl_helpers import REWARDS, one_thread, problems, tokenizer, varied_reward  # noqa: F401 (fixtures)


def make_trainer(tokenizer, problems, rewards=REWARDS, **settings):
    base = dict(steps=2, prompts_per_step=2, group_size=4, max_new_tokens=10, micro_batch=8, lr=3e-3, seed=0)
    config = GRPOConfig.from_algo(settings.pop("algo", "grpo"), **{**base, **settings})
    model = toy_model(len(tokenizer), hidden=32, layers=2, heads=4, kv_heads=2, head_dim=8, std=0.3, seed=0)
    return GRPOTrainer(model, tokenizer, problems, config, reward_functions=rewards, verbose=False)


def parse(*flags):
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    return config_from_args(parser.parse_args(["train-grpo", "--out-dir", "x", *flags]))


# ---- every switch is a flag and a field ------------------------------------------------------------------

@pytest.mark.parametrize("flags, field, value", [
    (["--loss-type", "dapo"], "loss_type", "dapo"),
    (["--loss-type", "dr_grpo"], "loss_type", "dr_grpo"),
    (["--dr-grpo-norm", "77"], "dr_grpo_norm", 77),
    (["--scale-rewards", "batch"], "scale_rewards", "batch"),
    (["--scale-rewards", "none"], "scale_rewards", "none"),
    (["--clip-eps-low", "0.1"], "clip_eps_low", 0.1),
    (["--clip-eps-high", "0.28"], "clip_eps_high", 0.28),
    (["--dynamic-sampling"], "dynamic_sampling", True),
    (["--max-draws", "7"], "max_draws", 7),
    (["--overlong-cache", "16"], "overlong_cache", 16),
    (["--mask-truncated"], "mask_truncated", True),
    (["--beta", "0"], "beta", 0.0),
    (["--beta", "0", "--log-kl"], "log_kl", True),
    (["--importance-level", "sequence"], "importance_level", "sequence"),
    (["--adv-eps", "0.01"], "adv_eps", 0.01),
])
def test_each_switch_is_a_flag_that_sets_its_field_on_plain_grpo(flags, field, value):
    plain = parse()
    config = parse(*flags)
    assert getattr(plain, field) != value and getattr(config, field) == value
    changed = {name for name, v in config.to_dict().items() if v != plain.to_dict()[name]}
    assert changed <= {field, "beta"}  # one switch moves one field (--log-kl needs --beta 0)


@pytest.mark.parametrize("algo", sorted(PRESETS))
def test_presets_print_every_value_they_choose(algo, capsys):
    config = GRPOConfig.from_algo(algo)
    text = config.describe()
    for name, value in PRESETS[algo].items():
        shown = {"overlong_cache": f"last {config.overlong_tokens} tokens" if config.overlong_tokens else "off",
                 "clip_eps_low": f"1-{value}", "clip_eps_high": f"1+{value}"}.get(name, f"={value}")
        assert str(shown) in text, (name, text)
    assert ("no reference model" in text) == (config.beta == 0)


def test_cli_prints_the_chosen_values_before_training(tokenizer, tmp_path, capsys):
    from companion.checkpoint import save_model

    model = toy_model(len(tokenizer), hidden=32, layers=2, heads=4, kv_heads=2, head_dim=8, std=0.3)
    save_model(model, tokenizer, tmp_path / "start")
    assert rl_main(["train-grpo", "--model", str(tmp_path / "start"), "--limit", "4", "--prompts-per-step", "2",
                    "-G", "2", "--max-new-tokens", "4", "--steps", "1", "--no-progress", "--algo", "dr_grpo",
                    "--dr-grpo-norm", "50", "--out-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    header = out.index("algorithm dr_grpo")
    assert "loss_type=dr_grpo (constant 50) scale_rewards=none" in out and "no reference model" in out
    assert header < out.index("step 1")


def test_bad_settings_are_refused_with_the_field_named():
    for bad, name in [(dict(loss_type="sum"), "loss_type"), (dict(scale_rewards="mad"), "scale_rewards"),
                      (dict(importance_level="segment"), "importance_level"), (dict(clip_eps_low=1.0), "clip"),
                      (dict(dr_grpo_norm=-1), "dr_grpo_norm"), (dict(overlong_cache=999), "overlong_cache")]:
        with pytest.raises(ValueError, match=name):
            GRPOConfig(max_new_tokens=64, **bad)
    with pytest.raises(ValueError, match="unknown algo"):
        GRPOConfig.from_algo("ppo")


# ---- loss aggregation: length bias ---------------------------------------------------------------------

def token_weights(loss_type, lengths, constant=10):
    """d loss / d value of each token: how much each token counts under an aggregation."""
    mask = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
    values = torch.zeros(mask.shape, requires_grad=True)
    aggregate(values, mask, loss_type, Normalizer.from_mask(mask, constant)).backward()
    return values.grad


def test_sequence_mean_weighs_short_answers_tokens_more_token_mean_does_not():
    grpo = token_weights("grpo", [2, 8])
    assert grpo[0, 0] == pytest.approx(1 / 2 / 2) and grpo[1, 0] == pytest.approx(1 / 8 / 2)  # 4x per token
    dapo = token_weights("dapo", [2, 8])
    assert torch.allclose(dapo[0, :2], torch.full((2,), 0.1)) and torch.allclose(dapo[1], torch.full((8,), 0.1))
    dr = token_weights("dr_grpo", [2, 8], constant=10)
    assert torch.allclose(dr[0, :2], torch.full((2,), 1 / 20)) and torch.allclose(dr[1], torch.full((8,), 1 / 20))
    assert float(dr[0, 2:].abs().sum()) == 0  # padding never counts


def test_dapo_normalizer_counts_the_whole_optimizer_step_not_the_micro_batch(tokenizer, problems):
    """Two micro-batches of very different lengths: each token weighs 1 / (tokens of the step)."""
    # log_kl: every row is computed (none skipped for a zero advantage), so the micro-batches are fixed
    trainer = make_trainer(tokenizer, problems, algo="dapo", prompts_per_step=3, dynamic_sampling=False,
                           mask_truncated=False, micro_batch=5, max_new_tokens=12, log_kl=True)
    groups, _ = trainer.collect()
    eos = tokenizer.eos_token_id
    for i, group in enumerate(groups):
        for s in range(group.size):
            cut = 2 + (5 * i + 3 * s) % 10
            group.completions[s] = group.completions[s][:cut - 1] + [eos]
            group.truncated[s] = False
    [part] = trainer.minibatches(groups, trainer.advantages(groups))
    step_tokens = sum(len(c) for g in groups for c in g.completions)
    assert part.norm.num_tokens == step_tokens and len(part.micro) == 3
    assert len({int(m.loss_mask.sum()) for m in part.micro}) > 1
    for micro in part.micro:  # a constant per-token loss of 1 gives each micro-batch its token share
        ones = torch.ones(micro.loss_mask.shape)
        share = aggregate(ones, micro.loss_mask, "dapo", part.norm)
        assert float(share) == pytest.approx(float(micro.loss_mask.sum()) / step_tokens)


def test_dr_grpo_constant_comes_from_the_config(tokenizer, problems):
    trainer = make_trainer(tokenizer, problems, algo="dr_grpo", dr_grpo_norm=40)
    groups, _ = trainer.collect()
    [part] = trainer.minibatches(groups, trainer.advantages(groups))
    assert part.norm.constant == 40
    assert make_trainer(tokenizer, problems, algo="dr_grpo").config.loss_norm_constant == 10  # max_new_tokens


# ---- advantage scaling: difficulty bias ------------------------------------------------------------------

def test_group_std_scaling_upweights_nearly_solved_prompts_and_the_others_do_not():
    # prompt 0 is solved 7 times in 8 (easy), prompt 1 four times in 8 (informative)
    rewards = torch.tensor([[1.0] * 7 + [0.0], [1.0] * 4 + [0.0] * 4])
    group = group_advantages(rewards, "group", eps=0.0)
    none = group_advantages(rewards, "none")
    batch = group_advantages(rewards, "batch", eps=0.0)
    # the lone failure of the easy prompt gets a larger push than any sample of the hard one
    assert abs(float(group[0, 7])) > abs(float(group[1, 0])) * 2
    assert abs(float(none[0, 7])) == pytest.approx(0.875) and abs(float(none[1, 0])) == pytest.approx(0.5)
    assert torch.allclose(batch, none / rewards.std())  # one scale for all: the ranking of none is kept


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_the_trainer_scales_advantages_as_configured(tokenizer, problems, scale):
    trainer = make_trainer(tokenizer, problems, scale_rewards=scale, prompts_per_step=3)
    groups, _ = trainer.collect()
    rewards = torch.stack([g.rewards for g in groups])
    assert torch.equal(trainer.advantages(groups), group_advantages(rewards, scale, trainer.config.adv_eps))


# ---- clip-higher -----------------------------------------------------------------------------------------

def test_clip_higher_lets_unlikely_tokens_with_positive_advantage_grow_further():
    """A token at ratio 1.25 with A > 0: clipped (no gradient) at eps 0.2, free at eps_high 0.28;
    the low side, for A < 0, stays at 0.2."""
    def gradient(ratio, advantage, eps_high):
        logp = torch.tensor([[math.log(ratio)]], requires_grad=True)
        terms = grpo_loss(logp, torch.zeros(1, 1), None, torch.tensor([advantage]), torch.ones(1, 1),
                          Normalizer(1, 1), eps_low=0.2, eps_high=eps_high)
        terms.loss.backward()
        return float(logp.grad), bool(terms.clipped_high), bool(terms.clipped_low)

    assert gradient(1.25, 1.0, 0.2) == (0.0, True, False)
    grad, high, _ = gradient(1.25, 1.0, 0.28)
    assert grad == pytest.approx(-1.25) and not high
    assert gradient(0.75, -1.0, 0.28) == (0.0, False, True)


def test_the_trainer_counts_clipping_on_each_side(tokenizer, problems):
    trainer = make_trainer(tokenizer, problems, inner_epochs=3, clip_eps_low=0.01, clip_eps_high=0.02, lr=3e-2)
    metrics = trainer.train_step()
    assert metrics["clip_ratio/low_mean"] > 0 and metrics["clip_ratio/high_mean"] > 0


# ---- GSPO: one ratio per sequence, with its own clip range -----------------------------------------------

def test_sequence_ratio_is_the_geometric_mean_of_token_ratios_over_the_completion():
    logp = torch.log(torch.tensor([[1.2, 0.8, 1.5, 9.0]]))  # the last position is padding
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.float32)
    seq = importance_log_ratio(logp, torch.zeros(1, 4), mask, "sequence").exp()
    assert torch.allclose(seq[0, :3], torch.full((3,), (1.2 * 0.8 * 1.5) ** (1 / 3)))


def test_gspo_clips_whole_sequences_with_its_own_range():
    """Token ratios 1.1 and 0.9 are inside the token clip range; their sequence ratio, 0.995, is
    outside GSPO's [1-3e-4, 1+4e-4]. For A < 0 the sequence is clipped: no token gets a gradient."""
    ratios = torch.tensor([[1.1, 0.9]])
    logp = ratios.log().requires_grad_(True)
    args = (torch.zeros(1, 2), None, torch.tensor([-1.0]), torch.ones(1, 2), Normalizer(2, 1))
    token = grpo_loss(logp, *args, eps_low=0.2, eps_high=0.2)
    token.loss.backward()
    assert (logp.grad != 0).all()
    logp.grad = None
    sequence = grpo_loss(logp, *args, eps_low=3e-4, eps_high=4e-4, importance_level="sequence")
    sequence.loss.backward()
    assert bool(sequence.clipped_low.all()) and torch.equal(logp.grad, torch.zeros(1, 2))
    assert "note" not in GRPOConfig.from_algo("gspo", inner_epochs=2).describe()
    assert "rarely leaves" in GRPOConfig(importance_level="sequence").describe()  # token clip range on a sequence ratio


def test_gspo_on_policy_has_the_same_gradient_as_grpo():
    g = torch.Generator().manual_seed(1)
    logp = (-torch.rand(3, 5, generator=g)).requires_grad_(True)
    mask = torch.arange(5)[None] < torch.tensor([5, 2, 4])[:, None]
    adv = torch.tensor([1.0, -0.5, 0.3])
    grads = []
    for level in ("token", "sequence"):
        logp.grad = None
        grpo_loss(logp, logp.detach(), None, adv, mask, Normalizer.from_mask(mask), importance_level=level).loss.backward()
        grads.append(logp.grad.clone())
    assert torch.allclose(*grads, atol=1e-7)


# ---- KL on / off and the reference model ------------------------------------------------------------------

def test_reference_model_is_built_only_for_a_kl_term_or_a_kl_log(tokenizer, problems):
    off = make_trainer(tokenizer, problems, beta=0.0)
    assert off.ref_model is None and "kl" not in off.train_step()
    logged = make_trainer(tokenizer, problems, beta=0.0, log_kl=True)
    assert logged.ref_model is not None
    first, second = logged.train_step(), logged.train_step()
    assert first["kl"] == 0.0 and second["kl"] > 0 and second["kl_loss"] > 0
    assert second["loss"] == second["policy_loss"]  # measured, not optimized


def test_logging_kl_leaves_the_gradient_unchanged():
    g = torch.Generator().manual_seed(2)
    logp = (-torch.rand(2, 4, generator=g)).requires_grad_(True)
    ref = logp.detach() + 0.3
    mask, adv = torch.ones(2, 4), torch.tensor([0.7, -0.7])
    grads = []
    for ref_logp in (None, ref):
        logp.grad = None
        grpo_loss(logp, logp.detach(), ref_logp, adv, mask, Normalizer.from_mask(mask), beta=0.0).loss.backward()
        grads.append(logp.grad.clone())
    assert torch.equal(*grads)
    logp.grad = None
    grpo_loss(logp, logp.detach(), ref, adv, mask, Normalizer.from_mask(mask), beta=0.5).loss.backward()
    assert not torch.equal(logp.grad, grads[0])  # with beta > 0 the KL pulls


# ---- dynamic sampling --------------------------------------------------------------------------------------

def test_dynamic_sampling_logs_drawn_and_dropped_and_gives_up_after_max_draws(tokenizer, problems):
    constant = [RewardFunction("same", lambda batch: [1.0] * len(batch.texts))]
    trainer = make_trainer(tokenizer, problems, rewards=constant, dynamic_sampling=True, max_draws=3)
    metrics = trainer.train_step()  # no group ever has signal: three rounds, everything dropped
    assert metrics["dynamic_sampling/draws"] == 3 and metrics["dynamic_sampling/groups_drawn"] == 6
    assert metrics["dynamic_sampling/groups_dropped"] == 6 and metrics["dynamic_sampling/groups_kept"] == 0
    assert metrics["skipped_update"] == 1.0
    plain = make_trainer(tokenizer, problems, rewards=constant)
    assert "dynamic_sampling/draws" not in plain.train_step()


# ---- overlong: soft punishment and masking are separate switches ------------------------------------------

def test_soft_overlong_punishment_values():
    punish = default_reward_functions({}, max_new_tokens=20, overlong_tokens=8)[0].fn
    batch = Completions([""] * 5, [""] * 5, [""] * 5, [5, 12, 16, 20, 25], [False] * 4 + [True])
    assert punish(batch) == [0.0, 0.0, -0.5, -1.0, -1.0]


@pytest.mark.parametrize("overlong, mask", [(0, False), (3, False), (0, True), (3, True)])
def test_overlong_punishment_and_truncation_masking_are_independent(tokenizer, problems, overlong, mask):
    trainer = make_trainer(tokenizer, problems, rewards=None, reward_weights={"format": 1.0}, max_new_tokens=6,
                           overlong_cache=overlong, mask_truncated=mask)
    groups, metrics = trainer.collect()  # a random model never stops: every completion is cut
    assert all(all(g.truncated) for g in groups)
    assert ("rewards/overlong/mean" in metrics) == bool(overlong)
    if overlong:
        assert metrics["rewards/overlong/mean"] == -1.0
    [part] = trainer.minibatches(groups, trainer.advantages(groups))
    assert part.norm.num_tokens == (0 if mask else 6 * 8)
