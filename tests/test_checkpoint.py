import json
import shutil

import pytest
import torch
from hf_helpers import save_hf, tiny_hf_model
from safetensors.torch import load_file, save_file

from companion.checkpoint import CheckpointError, hf_to_ours, load_model, ours_to_hf, save_model
from companion.hub import resolve_model_dir


def test_name_map_is_a_bijection_over_a_real_state_dict():
    hf = tiny_hf_model("qwen2")
    for name in hf.state_dict():
        assert ours_to_hf(hf_to_ours(name)) == name


@pytest.mark.parametrize("family,tied", [("qwen3", True), ("qwen3", False), ("qwen2", True)])
def test_save_then_transformers_loads_identical_logits(tmp_path, family, tied):
    from transformers import AutoModelForCausalLM

    hf = tiny_hf_model(family, tied=tied, seed=3)
    save_hf(hf, tmp_path / "src")
    ours, _ = load_model(tmp_path / "src", device="cpu", tokenizer=False)
    save_model(ours, None, tmp_path / "out")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = torch.randint(0, 128, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, ours(ids), atol=1e-5, rtol=0)
        torch.testing.assert_close(reloaded(ids).logits, hf(ids).logits, atol=1e-5, rtol=0)
    ours_again, _ = load_model(tmp_path / "out", device="cpu", tokenizer=False)
    for (name, a), (_, b) in zip(ours.named_parameters(), ours_again.named_parameters()):
        assert torch.equal(a, b), name


def test_sharded_save_writes_an_index_that_both_loaders_read(tmp_path):
    from transformers import AutoModelForCausalLM

    hf = tiny_hf_model("qwen3", seed=4)
    save_hf(hf, tmp_path / "src")
    ours, _ = load_model(tmp_path / "src", device="cpu", tokenizer=False)
    save_model(ours, None, tmp_path / "sharded", max_shard_bytes=40_000)
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    assert not (tmp_path / "sharded" / "model.safetensors").exists()
    again, _ = load_model(tmp_path / "sharded", device="cpu", tokenizer=False)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "sharded").eval()
    ids = torch.randint(0, 128, (1, 7))
    with torch.no_grad():
        torch.testing.assert_close(again(ids), ours(ids), atol=0, rtol=0)
        torch.testing.assert_close(reloaded(ids).logits, ours(ids), atol=1e-5, rtol=0)


def test_bf16_load_and_save_keep_dtype(tmp_path):
    hf = tiny_hf_model("qwen3", seed=5)
    save_hf(hf, tmp_path / "src")
    ours, _ = load_model(tmp_path / "src", device="cpu", dtype="bf16", tokenizer=False)
    assert ours.dtype == torch.bfloat16 and ours.inv_freq.dtype == torch.float32
    save_model(ours, None, tmp_path / "out")
    tensors = load_file(tmp_path / "out" / "model.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    ids = torch.randint(0, 128, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).float(), hf(ids).logits, atol=0.1, rtol=0.05)


def test_save_is_atomic_and_replaces_an_existing_folder(tmp_path, monkeypatch):
    hf = tiny_hf_model("qwen3")
    save_hf(hf, tmp_path / "src")
    ours, _ = load_model(tmp_path / "src", device="cpu", tokenizer=False)
    target = tmp_path / "model"
    save_model(ours, None, target)
    before = (target / "model.safetensors").read_bytes()

    import companion.checkpoint as checkpoint

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(checkpoint, "_write_generation_config", crash)
    with pytest.raises(KeyboardInterrupt):
        save_model(ours, None, target)
    assert (target / "model.safetensors").read_bytes() == before  # the old folder is untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


# ---- error cases: each names the file and the tensor -------------------------------------------

@pytest.fixture
def hf_folder(tmp_path):
    return save_hf(tiny_hf_model("qwen3"), tmp_path / "model")


def rewrite_tensors(folder, change):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_missing_tensor_is_named(hf_folder):
    rewrite_tensors(hf_folder, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensors \['model.layers.1.mlp.up_proj.weight'\]"):
        load_model(hf_folder, tokenizer=False)


def test_unexpected_tensor_is_named(hf_folder):
    rewrite_tensors(hf_folder, lambda t: t.update({"model.layers.0.self_attn.rotary.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensors .*model.layers.0.self_attn.rotary.weight"):
        load_model(hf_folder, tokenizer=False)


def test_misshaped_tensor_names_file_tensor_and_shapes(hf_folder):
    rewrite_tensors(hf_folder, lambda t: t.update({"model.norm.weight": torch.ones(63)}))
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor model.norm.weight has shape \(63,\), but the config .* needs \(64,\)"):
        load_model(hf_folder, tokenizer=False)


def test_truncated_safetensors_is_reported(hf_folder):
    path = hf_folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model.safetensors.*truncated"):
        load_model(hf_folder, tokenizer=False)


def test_missing_weights_and_config_are_reported(hf_folder):
    (hf_folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no model.safetensors or model.safetensors.index.json in .*model"):
        load_model(hf_folder, tokenizer=False)
    (hf_folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config file not found: .*config.json"):
        load_model(hf_folder, tokenizer=False)


def test_missing_shard_is_reported(tmp_path):
    hf = tiny_hf_model("qwen3")
    ours_folder = save_hf(hf, tmp_path / "src")
    ours, _ = load_model(ours_folder, tokenizer=False)
    save_model(ours, None, tmp_path / "sharded", max_shard_bytes=40_000)
    shard = sorted((tmp_path / "sharded").glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"names shard {shard.name}, which is missing"):
        load_model(tmp_path / "sharded", tokenizer=False)


def test_missing_tokenizer_is_reported(hf_folder):
    with pytest.raises(Exception, match=r"tokenizer.json"):
        load_model(hf_folder)


def test_repo_id_without_network_explains_how_to_use_a_local_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(OSError, match=r"(?s)could not download 'Qwen/Qwen3-0.6B'.*pass that local folder"):
        resolve_model_dir("Qwen/Qwen3-0.6B")
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        resolve_model_dir(tmp_path / "nowhere" / "deeper" / "x")


def test_load_never_holds_two_copies(hf_folder, monkeypatch):
    """Every tensor is copied straight from the file into the model's single allocation."""
    import companion.checkpoint as checkpoint

    built = []
    original = checkpoint.build_model

    def spy(*args, **kwargs):
        model = original(*args, **kwargs)
        built.append({n: p.data_ptr() for n, p in model.named_parameters()})
        return model

    monkeypatch.setattr(checkpoint, "build_model", spy)
    model, _ = load_model(hf_folder, tokenizer=False)
    assert built and {n: p.data_ptr() for n, p in model.named_parameters()} == built[0]


def test_saved_folder_is_readable_by_everyone(tmp_path):
    hf = tiny_hf_model("qwen3")
    ours, _ = load_model(save_hf(hf, tmp_path / "src"), tokenizer=False)
    folder = save_model(ours, None, tmp_path / "out")
    assert folder.stat().st_mode & 0o777 == 0o755
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {
        "config.json": 0o644, "model.safetensors": 0o644, "generation_config.json": 0o644}
