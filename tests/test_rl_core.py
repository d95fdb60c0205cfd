"""GRPO building blocks: advantages, rewards, log-probs, masks, the clipped loss and its aggregation."""
import math

import pytest
import torch

from companion.rl.advantages import group_advantages, has_spread
from companion.rl.logprobs import completion_logprobs, completion_mask, pack, selected_logprobs
from companion.rl.losses import Normalizer, aggregate, clipped_surrogate, grpo_loss, k3_kl
from companion.rl.rewards import (Completions, RewardFunction, assistant_turn, correctness_reward, format_reward,
                                  is_well_formatted, score, soft_overlong_punishment)
from companion.rl.toy import toy_model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster and immune to a busy machine
    yield
    torch.set_num_threads(threads)


# ---- advantages -----------------------------------------------------------------------------------

def test_group_advantages_have_mean_zero_and_std_one_per_group_with_spread():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0, 0.0], [0.2, 0.9, 0.4, 0.4, 0.0, 1.3], [1.0] * 6])
    adv = group_advantages(rewards, "group", eps=0.0 + 1e-4)
    assert torch.allclose(adv.mean(dim=1), torch.zeros(3), atol=1e-6)
    assert torch.allclose(adv[:2].std(dim=1), torch.ones(2), atol=1e-3)
    assert torch.equal(adv[2], torch.zeros(6))  # no spread: no signal, and no division blow-up
    assert has_spread(rewards).tolist() == [True, True, False]
    # better than the group's mean <=> positive advantage
    assert ((adv[:2] > 0) == (rewards[:2] > rewards[:2].mean(dim=1, keepdim=True))).all()


def test_advantage_scaling_options():
    rewards = torch.tensor([[0.0, 2.0], [0.0, 0.5]])
    none = group_advantages(rewards, "none")
    assert torch.allclose(none, torch.tensor([[-1.0, 1.0], [-0.25, 0.25]]))
    batch = group_advantages(rewards, "batch", eps=0.0)
    assert torch.allclose(batch, none / rewards.std())
    group = group_advantages(rewards, "group", eps=0.0)
    assert torch.allclose(group.abs(), torch.full((2, 2), 1 / math.sqrt(2)))  # each group scaled on its own
    with pytest.raises(ValueError):
        group_advantages(rewards, "median")


# ---- rewards --------------------------------------------------------------------------------------

COT_PROMPT = "<|im_start|>user\nQ\n<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
THINKING_PROMPT = "<|im_start|>user\nQ\n<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("prompt, completion, expected", [
    (COT_PROMPT, "Step: 3 + 4 = 7.\nThe answer is \\boxed{7}.", True),
    (THINKING_PROMPT, "<think>\n3 + 4 = 7\n</think>\n\nThe answer is \\boxed{7}.", True),
    (THINKING_PROMPT, "<think>\n3 + 4 = 7\n</think>\n\nThe answer is 7.", False),  # no boxed answer
    (THINKING_PROMPT, "<think>\n3 + 4 = 7\nThe answer is \\boxed{7}.", False),  # think block never closed
    (THINKING_PROMPT, "<think>a</think> \\boxed{7} and \\boxed{8}", False),  # two answers
    (COT_PROMPT, "The answer is \\boxed{7}. Then more text follows here", False),  # boxed is not the end
    (THINKING_PROMPT, "<think>x</think><think>y</think>\\boxed{7}", False),
    (THINKING_PROMPT, "<reasoning>3 + 4 = 7</reasoning>\n<answer>7</answer>", True),
    (THINKING_PROMPT, "<reasoning>3 + 4 = 7</reasoning>\n<answer></answer>", False),  # empty answer
    (THINKING_PROMPT, "\\boxed{\\frac{1}{2}}", False),  # no think block at all
])
def test_format_reward_cases(prompt, completion, expected):
    assert is_well_formatted(assistant_turn(prompt, completion)) is expected


def test_reward_functions_and_weighted_total():
    batch = Completions(
        prompts=[COT_PROMPT] * 4,
        texts=["So \\boxed{12}.", "So \\boxed{13}.", "12", "So \\boxed{12}."],
        golds=["12"] * 4, lengths=[5, 5, 2, 64], truncated=[False, False, False, True])
    assert correctness_reward(batch) == [1.0, 0.0, 0.0, 1.0]  # strict: a bare "12" is not boxed
    assert format_reward(batch) == [1.0, 1.0, 0.0, 0.0]  # a truncated reply is not well formed
    functions = [RewardFunction("correctness", correctness_reward, 1.0), RewardFunction("format", format_reward, 0.5)]
    total, values = score(functions, batch)
    assert torch.allclose(total, torch.tensor([1.5, 0.5, 0.0, 1.0]))
    assert set(values) == {"correctness", "format"}


def test_soft_overlong_punishment_is_zero_then_linear_to_minus_one():
    punish = soft_overlong_punishment(max_tokens=100, cache_tokens=20)
    batch = Completions([""] * 5, [""] * 5, [""] * 5, [50, 80, 90, 100, 120], [False] * 5)
    assert punish(batch) == [0.0, 0.0, -0.5, -1.0, -1.0]


# ---- masks, packing and log-probs ---------------------------------------------------------------

def test_completion_mask_covers_up_to_the_first_eos_even_when_pad_is_eos():
    eos, pad = 7, 7  # the pad id is an EOS id, as with <|endoftext|>
    completion = torch.tensor([[3, 4, eos, pad, pad], [3, eos, 5, eos, pad], [3, 4, 5, 6, 8], [eos, pad, pad, pad, pad]])
    lengths = torch.tensor([5, 5, 5, 1])
    mask = completion_mask(completion, lengths, (eos, 9))
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    # the length bounds the mask too: a row shorter than the rectangle stops at its length
    assert completion_mask(completion[2:3], torch.tensor([3]), (eos,)).tolist() == [[1, 1, 1, 0, 0]]


@pytest.fixture(scope="module")
def model():
    return toy_model(vocab_size=97, hidden=32, layers=2, heads=4, kv_heads=2, head_dim=8, std=0.3, seed=1)


def _naive_logprobs(model, prompt, completion, temperature):
    ids = torch.tensor([prompt + completion])
    logits = model(ids)[0, len(prompt) - 1:-1].float() / temperature  # (L, V)
    return torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(completion)[:, None]).squeeze(1)


@pytest.mark.parametrize("layout", ["shared", "right", "left"])
def test_packed_logprobs_equal_one_sequence_at_a_time(model, layout):
    """Padding invariance: a completion's log-probs do not depend on the other rows of the batch,
    on how the batch is padded (left-padded prompts, right-padded rows), or on sharing the prompt's
    forward pass among its completions."""
    g = torch.Generator().manual_seed(0)
    distinct = [torch.randint(0, 90, (n,), generator=g).tolist() for n in (3, 11, 6)]
    prompts = [distinct[i] for i in (0, 1, 1, 2, 1, 0)]  # groups of different sizes, not contiguous
    completions = [torch.randint(0, 90, (n,), generator=g).tolist() for n in (9, 2, 5, 1, 7, 4)]
    batch = pack(prompts, completions, pad_id=0, eos_ids=(96,), layout=layout)
    logp, entropy = completion_logprobs(model, batch, temperature=0.7)
    for row, (prompt, completion) in enumerate(zip(prompts, completions)):
        expected = _naive_logprobs(model, prompt, completion, 0.7)
        assert torch.allclose(logp[row, :len(completion)], expected, atol=1e-5)
        assert torch.equal(logp[row, len(completion):], torch.zeros(logp.shape[1] - len(completion)))
        assert (entropy[row, :len(completion)] > 0).all()
    if layout != "right":
        assert (batch.mask is not None) and (batch.prompt_ids is None or batch.prompt_ids.shape[0] == 3)


def test_layouts_give_the_same_gradients(model):
    g = torch.Generator().manual_seed(1)
    prompts = [[5, 6, 7, 8]] * 3 + [[9, 10]] * 2
    completions = [torch.randint(0, 90, (n,), generator=g).tolist() for n in (6, 3, 8, 2, 5)]
    weights = torch.randn(5, 8, generator=g)
    grads = {}
    for layout in ("shared", "right", "left"):
        model.zero_grad()
        logp, _ = completion_logprobs(model, pack(prompts, completions, 0, (96,), layout=layout), 1.0)
        (logp * weights).sum().backward()
        grads[layout] = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for layout in ("right", "left"):
        for a, b in zip(grads["shared"], grads[layout]):
            assert torch.allclose(a, b, atol=1e-5)


def test_left_padding_changes_nothing_for_a_row(model):
    prompt, completion = [5, 17, 33, 2], [40, 41, 42, 96, 0]  # EOS (96) then a pad: the pad is not scored
    for layout in ("left", "shared"):
        alone = completion_logprobs(model, pack([prompt], [completion], 0, (96,), layout=layout), 1.0)[0]
        padded = completion_logprobs(model, pack([prompt, [1] * 12], [completion, [3]], 0, (96,), layout=layout), 1.0)[0]
        assert torch.allclose(alone[0], padded[0], atol=1e-5)
        assert alone[0, 4] == 0 and alone[0, 3] != 0  # EOS scored, the token after it not


def test_chunked_logprobs_match_log_softmax_in_value_and_gradient():
    torch.manual_seed(0)
    N, C, V, T = 13, 6, 11, 0.6
    hidden = torch.randn(N, C, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, C, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, V, (N,))
    logp, entropy = selected_logprobs(hidden, weight, targets, T, chunk=4)
    reference_logits = (hidden @ weight.T) / T
    reference = torch.log_softmax(reference_logits, -1).gather(1, targets[:, None]).squeeze(1)
    probs = torch.softmax(reference_logits, -1)
    assert torch.allclose(logp.double(), reference, atol=1e-5)
    assert torch.allclose(entropy.double(), -(probs * probs.log()).sum(-1), atol=1e-5)
    upstream = torch.randn(N, dtype=torch.float64)
    grads = torch.autograd.grad((logp.double() * upstream).sum(), (hidden, weight))
    expected = torch.autograd.grad((reference * upstream).sum(), (hidden, weight))
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-5)


# ---- the loss -------------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio, advantage, clipped, grad_flows", [
    (1.5, +1.0, True, False),   # A > 0, ratio above 1+eps: the gain is capped, no gradient
    (0.5, +1.0, False, True),   # A > 0, ratio below 1-eps: keeps pushing the probability up
    (0.5, -1.0, True, False),   # A < 0, ratio below 1-eps: the decrease is capped, no gradient
    (1.5, -1.0, False, True),   # A < 0, ratio above 1+eps: pessimistic, full gradient down
    (1.1, +1.0, False, True),   # inside the trust region: plain r * A
    (0.9, -1.0, False, True),
])
def test_clipped_surrogate_signs_and_clip_side(ratio, advantage, clipped, grad_flows):
    eps = 0.2
    logp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    old = torch.zeros(1, 1)
    terms = grpo_loss(logp, old, None, torch.tensor([advantage]), torch.ones(1, 1), Normalizer(1, 1),
                      eps_low=eps, eps_high=eps)
    expected_ratio = min(max(ratio, 1 - eps), 1 + eps) if clipped else ratio
    assert float(terms.loss.detach()) == pytest.approx(-expected_ratio * advantage, rel=1e-6)
    assert bool(terms.clipped_low | terms.clipped_high) is clipped
    assert bool(terms.clipped_high) is (clipped and advantage > 0)
    terms.loss.backward()
    gradient = float(logp.grad)
    if grad_flows:  # d(-r A)/d logp = -r A: raising logp lowers the loss exactly when A > 0
        assert gradient == pytest.approx(-ratio * advantage, rel=1e-5)
    else:
        assert gradient == 0.0


def test_clip_higher_uses_separate_low_and_high_ranges():
    r = torch.tensor([[1.25, 0.75]])
    loss_pos = clipped_surrogate(r, torch.tensor([[1.0]]), eps_low=0.2, eps_high=0.28)
    assert torch.allclose(loss_pos, torch.tensor([[-1.25, -0.75]]))  # 1.25 < 1.28: not clipped
    loss_neg = clipped_surrogate(r, torch.tensor([[-1.0]]), eps_low=0.2, eps_high=0.28)
    assert torch.allclose(loss_neg, torch.tensor([[1.25, 0.8]]))  # 0.75 < 0.8: clipped at 1-eps_low


def _written_out_loss(logp, old, ref, adv, mask, loss_type, eps_low, eps_high, beta, level, L_const):
    """The objective with explicit loops, written independently of companion.rl.losses."""
    per_row, total_tokens = [], 0
    for i in range(logp.shape[0]):
        tokens = [t for t in range(logp.shape[1]) if mask[i, t]]
        if not tokens:
            continue
        if level == "sequence":
            seq = sum(float(logp[i, t] - old[i, t]) for t in tokens) / len(tokens)
        values = []
        for t in tokens:
            r = math.exp(seq if level == "sequence" else float(logp[i, t] - old[i, t]))
            a = float(adv[i])
            value = -min(r * a, min(max(r, 1 - eps_low), 1 + eps_high) * a)
            if beta:
                d = float(ref[i, t] - logp[i, t])
                value += beta * (math.exp(d) - d - 1)
            values.append(value)
        per_row.append(values)
        total_tokens += len(values)
    if loss_type == "grpo":
        return sum(sum(v) / len(v) for v in per_row) / len(per_row)
    if loss_type == "dapo":
        return sum(sum(v) for v in per_row) / total_tokens
    return sum(sum(v) for v in per_row) / (len(per_row) * L_const)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("level, beta", [("token", 0.0), ("token", 0.1), ("sequence", 0.0)])
def test_loss_on_a_fixed_batch_equals_the_formula_written_out(loss_type, level, beta):
    g = torch.Generator().manual_seed(3)
    B, L = 5, 7
    logp = -torch.rand(B, L, generator=g, dtype=torch.float64) * 3
    old = logp + torch.randn(B, L, generator=g, dtype=torch.float64) * 0.3
    ref = logp + torch.randn(B, L, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 1, 5, 0])  # the last row is fully masked (e.g. truncated)
    mask = torch.arange(L)[None] < lengths[:, None]
    norm = Normalizer.from_mask(mask, constant=10)
    terms = grpo_loss(logp, old, ref, adv, mask, norm, loss_type=loss_type, eps_low=0.2, eps_high=0.28,
                      beta=beta, importance_level=level)
    expected = _written_out_loss(logp, old, ref, adv, mask, loss_type, 0.2, 0.28, beta, level, 10)
    assert float(terms.loss) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_k3_is_zero_for_equal_policies_and_positive_otherwise():
    logp = torch.tensor([-1.0, -2.0, -0.1])
    assert torch.equal(k3_kl(logp, logp.clone()), torch.zeros(3))
    assert (k3_kl(logp, logp + torch.tensor([0.5, -0.5, 1.0])) > 0).all()


def test_aggregation_sums_over_micro_batches_to_the_whole_batch():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(6, 8, generator=g)
    mask = torch.arange(8)[None] < torch.tensor([8, 1, 4, 6, 2, 7])[:, None]
    for loss_type in ("grpo", "dapo", "dr_grpo"):
        norm = Normalizer.from_mask(mask, constant=8)
        whole = aggregate(values, mask, loss_type, norm)
        parts = sum(aggregate(values[s], mask[s], loss_type, norm) for s in (slice(0, 1), slice(1, 4), slice(4, 6)))
        assert torch.allclose(whole, parts, atol=1e-6)
    # ... while per-micro-batch token means would not be the same number
    micro_means = sum(aggregate(values[s], mask[s], "dapo", Normalizer.from_mask(mask[s])) for s in (slice(0, 1), slice(1, 6))) / 2
    assert not torch.allclose(micro_means, aggregate(values, mask, "dapo", Normalizer.from_mask(mask)))
