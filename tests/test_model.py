import json

import pytest
import torch
from hf_helpers import save_hf, tiny_hf_model

from companion.checkpoint import build_model, load_model, load_weights
from companion.config import ModelConfig, UnsupportedConfigError, preset
from companion.model import (KVCache, Qwen3Model, attention_sdpa, attention_written_out, padding_mask,
                             positions_from_padding)


def companion_twin(hf_model, folder):
    save_hf(hf_model, folder)
    model, _ = load_model(folder, device="cpu", dtype="fp32", tokenizer=False)
    return model


@pytest.mark.parametrize("family", ["qwen3", "qwen2"])
@pytest.mark.parametrize("tied", [False, True])
def test_logits_match_transformers(tmp_path, family, tied):
    hf = tiny_hf_model(family, tied=tied)
    ours = companion_twin(hf, tmp_path)
    ids = torch.randint(0, 128, (3, 17))
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    assert got.shape == (3, 17, 128)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_padded_batch_matches_transformers_with_attention_mask(tmp_path):
    hf = tiny_hf_model("qwen3")
    ours = companion_twin(hf, tmp_path)
    ids = torch.randint(1, 128, (2, 12))
    valid = torch.ones(2, 12, dtype=torch.bool)
    valid[1, :5] = False  # row 1 is left-padded by 5
    positions = positions_from_padding(valid)
    with torch.no_grad():
        expected = hf(ids, attention_mask=valid.long(), position_ids=positions).logits
        got = ours(ids, positions, padding_mask(valid, 12))
    torch.testing.assert_close(got[valid], expected[valid], atol=1e-5, rtol=0)


def test_real_qwen3_06b_config_random_weights_match_transformers(shared_data):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config_path = shared_data / "qwen3-0.6b" / "config.json"
    config = ModelConfig.from_json(config_path)
    assert config == preset("Qwen/Qwen3-0.6B").replace(max_position_embeddings=40960, torch_dtype="bfloat16")
    assert config.num_parameters() == 596_049_920
    torch.manual_seed(0)
    hf = Qwen3ForCausalLM(Qwen3Config(**json.loads(config_path.read_text()))).eval()
    ours = build_model(config)
    with torch.no_grad():
        for name, tensor in hf.state_dict().items():  # share the weights through the name map
            from companion.checkpoint import hf_to_ours
            ours.get_parameter(hf_to_ours(name)).copy_(tensor)
    ids = torch.tensor([[151644, 872, 198, 3838, 374, 220, 17, 10, 17, 30, 151645, 198]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-4, rtol=1e-5)
    assert ours.num_parameters() == 596_049_920
    del hf


def test_written_out_attention_equals_sdpa():
    q = torch.randn(2, 8, 5, 16)
    k, v = torch.randn(2, 2, 9, 16), torch.randn(2, 2, 9, 16)
    torch.testing.assert_close(attention_written_out(q, k, v), attention_sdpa(q, k, v), atol=1e-6, rtol=0)
    mask = torch.rand(2, 1, 5, 9) > 0.3
    mask[..., 0] = True
    torch.testing.assert_close(attention_written_out(q, k, v, mask), attention_sdpa(q, k, v, mask), atol=1e-6, rtol=0)


def test_whole_model_with_written_out_attention(tmp_path):
    hf = tiny_hf_model("qwen3")
    ours = companion_twin(hf, tmp_path)
    ids = torch.randint(0, 128, (2, 10))
    with torch.no_grad():
        fused = ours(ids)
        ours.set_attention("written_out")
        written = ours(ids)
    torch.testing.assert_close(written, fused, atol=1e-5, rtol=0)


def test_kv_cache_prefill_then_decode_equals_full_forward():
    config = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64)
    model = Qwen3Model(config).init_weights(seed=1).eval()
    ids = torch.randint(0, 64, (2, 12))
    cache = KVCache(config, 2, 12)
    with torch.no_grad():
        full = model(ids)
        first = model(ids[:, :7], cache=cache, start=0)
        rest = [model(ids[:, t:t + 1], cache=cache, start=t) for t in range(7, 12)]
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["qwen3", "qwen2"])
@pytest.mark.parametrize("attention", ["sdpa", "written_out"])
def test_decode_step_equals_the_full_forward_with_left_padding(tmp_path, family, attention):
    """The engine's one-token step (``decode_step``) gives the logits of a full forward pass, row by
    row, for left-padded rows of different lengths."""
    model = companion_twin(tiny_hf_model(family), tmp_path)
    model.set_attention(attention)
    ids = torch.randint(1, 128, (3, 14))
    valid = torch.ones(3, 14, dtype=torch.bool)
    valid[1, :4], valid[2, :9] = False, False  # rows 1 and 2 are left-padded
    positions = positions_from_padding(valid)
    cache = KVCache(model.config, 3, 14)
    with torch.no_grad():
        full = model(ids, positions, padding_mask(valid, 14))
        model(ids[:, :10], positions[:, :10], padding_mask(valid[:, :10], 10), cache, start=0)
        steps = [model.decode_step(ids[:, t], positions[:, t], valid[:, None, None, : t + 1], cache, start=t)
                 for t in range(10, 14)]
    torch.testing.assert_close(torch.stack(steps, dim=1), full[:, 10:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("fuse", [True, False])
def test_decode_weights_follow_every_update_of_the_parameters(monkeypatch, fuse):
    """The stacked q/k/v and gate/up copies come from the parameters as they are at each call, also
    after a fused AdamW step (which leaves no version-counter trace), so decoding never runs on
    stale weights; unfused (large) models take the same path."""
    import companion.model as model_module

    monkeypatch.setattr(model_module, "FUSE_MAX_PARAMETERS", 10**9 if fuse else 0)
    config = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64)
    model = Qwen3Model(config).init_weights(seed=1)
    ids = torch.randint(0, 64, (2, 6))

    def last_logits():
        cache = KVCache(config, 2, 6)
        with torch.no_grad():
            model(ids[:, :5], cache=cache, start=0)
            return model.decode_step(ids[:, 5], torch.full((2,), 5), None, cache, start=5)

    with torch.no_grad():
        torch.testing.assert_close(last_logits(), model(ids)[:, -1], atol=1e-5, rtol=0)
        assert (model.decode_weights()[0].qkv is not None) == fuse
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, fused=True)
    model(ids).square().mean().backward()
    optimizer.step()
    with torch.no_grad():
        model.blocks[0].attn.k_proj.weight.add_(0.5)  # and a plain in-place update
        torch.testing.assert_close(last_logits(), model(ids)[:, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("rows", [1, 3, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_one_step_is_the_linear(rows, dtype):
    from companion.model import linear_one_step

    h, weight, bias = torch.randn(rows, 48, dtype=dtype), torch.randn(80, 48, dtype=dtype), torch.randn(80, dtype=dtype)
    for b in (None, bias):
        expected = torch.nn.functional.linear(h.float(), weight.float(), None if b is None else b.float())
        got = linear_one_step(h, weight, b)
        assert got.shape == (rows, 80) and got.dtype == dtype and got.is_contiguous()
        tolerance = 1e-5 if dtype == torch.float32 else 0.1  # bf16 keeps about 3 significant digits
        torch.testing.assert_close(got.float(), expected, atol=tolerance, rtol=0.02 if dtype == torch.bfloat16 else 0)


def test_rope_in_four_kernels_is_bit_for_bit_the_rope():
    from companion.model import apply_rope, apply_rope_signed, rope_cos_sin, rope_frequencies

    x = torch.randn(2, 4, 1, 64)
    cos, sin = rope_cos_sin(torch.tensor([[3], [70]]), rope_frequencies(64, 1e6))
    cos, sin = cos[:, None], sin[:, None]
    signed_sin = torch.cat((-sin[..., :32], sin[..., 32:]), dim=-1)
    assert torch.equal(apply_rope_signed(x, cos, signed_sin), apply_rope(x, cos, sin))


def test_unsupported_settings_are_refused():
    base = json.loads(json.dumps(preset("Qwen/Qwen3-0.6B").to_hf_dict()))
    with pytest.raises(UnsupportedConfigError, match="model_type 'llama'"):
        ModelConfig.from_hf_dict({**base, "model_type": "llama"})
    with pytest.raises(UnsupportedConfigError, match="rope scaling of type 'yarn'"):
        ModelConfig.from_hf_dict({**base, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(UnsupportedConfigError, match="use_sliding_window"):
        ModelConfig.from_hf_dict({**base, "use_sliding_window": True})
    with pytest.raises(UnsupportedConfigError, match="hidden_act 'gelu'"):
        ModelConfig.from_hf_dict({**base, "hidden_act": "gelu"})
    with pytest.raises(UnsupportedConfigError, match="attention_bias=true is not implemented for qwen3"):
        ModelConfig.from_hf_dict({**base, "attention_bias": True})
    with pytest.raises(UnsupportedConfigError, match="missing required keys"):
        ModelConfig.from_hf_dict({"model_type": "qwen3"})


def test_config_round_trip_through_transformers(tmp_path, shared_data):
    from transformers import AutoConfig

    for name in ["Qwen/Qwen3-0.6B", "Qwen/Qwen3-8B", "Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-3B"]:
        config = preset(name)
        config.save_json(tmp_path)
        hf = AutoConfig.from_pretrained(tmp_path)
        assert hf.model_type == config.model_type
        assert hf.num_key_value_heads == config.num_key_value_heads
        assert ModelConfig.from_hf_dict(hf.to_dict()) == config
    qwen25 = ModelConfig.from_json(shared_data / "qwen2.5-0.5b" / "config.json")
    assert qwen25.qkv_bias and not qwen25.qk_norm and qwen25.head_dim == 64
    assert qwen25 == preset("qwen2.5-0.5b").replace(torch_dtype="bfloat16")
