"""The appendix demos: every main.py runs and passes its own checks, every appendix imports only what
its folder may use, and each teaching component computes what its counterpart in `companion` does
(fp32, same weights, within 1e-6)."""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from companion import model as cm
from companion.checkpoint import load_model, save_model
from companion.config import ModelConfig

REPO = Path(__file__).resolve().parent.parent
APPENDIXES = REPO / "appendixes"
TOL = 1e-6

# Small sizes keep every demo to a few seconds; the figure code runs too.
DEMO_ARGS = {
    "rmsnorm": ["--dim", "128", "--tokens", "16"],
    "rope": ["--head-dim", "32", "--positions", "64"],
    "grouped_query_attention": ["--heads", "8", "--kv-heads", "2", "--seq", "16", "--head-dim", "16"],
    "kv_cache": ["--hidden", "64", "--layers", "2", "--new-tokens", "12", "--lengths", "8", "16", "--repeats", "1"],
    "glu_feed_forward": ["--hidden", "64", "--intermediate", "192", "--tokens", "8"],
    "transformer_block": ["--seq", "8"],
    "qwen3_model": ["--vocab", "128", "--new-tokens", "6"],
    "bpe_tokenizer": ["--vocab-size", "450"],
}
# What each folder's Python files may import besides the standard library and the folder's own modules.
ALLOWED_IMPORTS = {"torch", "matplotlib"}
ALLOWED_EXTRA = {"bpe_tokenizer": {"regex", "tokenizers"}}


def load_appendix(folder: str, module: str):
    """Import appendixes/<folder>/<module>.py by path (the folders are not packages)."""
    path = APPENDIXES / folder / f"{module}.py"
    name = f"appendix_{folder}_{module}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


# ---- the demos ---------------------------------------------------------------------------------------


def test_every_folder_has_a_readme_a_demo_and_a_test_entry():
    folders = sorted(p.name for p in APPENDIXES.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    assert folders == sorted(DEMO_ARGS)
    for folder in folders:
        readme = (APPENDIXES / folder / "README.md").read_text()
        assert "## Pitfalls" in readme and "## Run it" in readme and f"appendixes/{folder}/main.py" in readme, folder


@pytest.mark.parametrize("folder", sorted(DEMO_ARGS))
def test_imports_stay_inside_the_folder(folder):
    """Standalone: the standard library, torch (matplotlib for plots), and the folder's own files."""
    own = {p.stem for p in (APPENDIXES / folder).glob("*.py")}
    allowed = ALLOWED_IMPORTS | ALLOWED_EXTRA.get(folder, set()) | own | set(sys.stdlib_module_names)
    for path in (APPENDIXES / folder).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.relative_to(REPO)} imports {name}"


@pytest.mark.parametrize("folder", sorted(DEMO_ARGS))
def test_demo_runs_and_passes_its_checks(folder, tmp_path, request):
    args = list(DEMO_ARGS[folder])
    if folder == "bpe_tokenizer":  # also check the encoder on Qwen3's real tokenizer.json
        args += ["--qwen-tokenizer", str(request.getfixturevalue("shared_data") / "qwen3-0.6b" / "tokenizer.json")]
    figure = tmp_path / "figure.png"
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, str(APPENDIXES / folder / "main.py"), *args, "--plot", str(figure)],
                            capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "all checks passed" in result.stdout and "[FAIL]" not in result.stdout, output[-4000:]
    assert figure.is_file() and figure.stat().st_size > 1000


def test_demo_exits_nonzero_when_a_check_fails(tmp_path):
    """The exit status means something: a broken component makes its demo fail."""
    broken = tmp_path / "rmsnorm"
    broken.mkdir()
    source = (APPENDIXES / "rmsnorm" / "rmsnorm.py").read_text()
    assert "+ self.eps)" in source
    (broken / "rmsnorm.py").write_text(source.replace("+ self.eps)", "+ 100 * self.eps + 1e-3)"))
    (broken / "main.py").write_text((APPENDIXES / "rmsnorm" / "main.py").read_text())
    result = subprocess.run([sys.executable, str(broken / "main.py"), "--dim", "64", "--tokens", "4"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 1 and "[FAIL] equals torch.nn.RMSNorm" in result.stdout


# ---- parity with companion.model ---------------------------------------------------------------------


def small_config(**changes) -> ModelConfig:
    values = dict(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, rope_theta=10_000.0, max_position_embeddings=512,
                  tie_word_embeddings=True, model_type="qwen3")
    values.update(changes)
    return ModelConfig(**values)


def randomize_norms(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))


@pytest.mark.parametrize("folder,module", [("rmsnorm", "rmsnorm"), ("transformer_block", "block"),
                                           ("qwen3_model", "qwen3")])
def test_rmsnorm_matches_companion(folder, module):
    ours_cls = load_appendix(folder, module).RMSNorm
    for shape in ((2, 7, 64), (2, 7, 4, 32)):  # hidden states and per-head QK-norm
        ours, theirs = ours_cls(shape[-1], eps=1e-6), cm.RMSNorm(shape[-1], eps=1e-6)
        randomize_norms(ours)
        theirs.load_state_dict(ours.state_dict())
        x = 3 * torch.randn(shape)
        with torch.no_grad():
            assert max_diff(ours(x), theirs(x)) <= TOL
            low = x.to(torch.bfloat16)  # the upcast path: same fp32 statistics, same cast back
            assert max_diff(ours(low), theirs(low)) <= 1e-2


def test_rope_matches_companion():
    rope = load_appendix("rope", "rope")
    block = load_appendix("transformer_block", "block")
    qwen3 = load_appendix("qwen3_model", "qwen3")
    D, theta = 64, 1_000_000.0
    inv_freq = cm.rope_frequencies(D, theta)
    assert max_diff(rope.rope_frequencies(D, theta), inv_freq) == 0
    positions = torch.tensor([[0, 1, 2, 3, 500, 4095], [7, 8, 9, 10, 11, 40000]])  # (B, T)
    cos, sin = cm.rope_cos_sin(positions, inv_freq)
    ours_cos, ours_sin = rope.rope_cos_sin(positions, rope.rope_frequencies(D, theta))
    assert max_diff(ours_cos, cos) == 0 and max_diff(ours_sin, sin) == 0
    x = torch.randn(2, 4, 6, D)  # (B, H, T, D)
    expected = cm.apply_rope(x, cos[:, None], sin[:, None])
    assert max_diff(rope.apply_rope(x, ours_cos[:, None], ours_sin[:, None]), expected) <= TOL
    complex_form = torch.stack([rope.apply_rope_complex(x[b], positions[b], rope.rope_frequencies(D, theta))
                                for b in range(2)])
    assert max_diff(complex_form, expected) <= 1e-5  # a different formula: products summed in another order
    for module in (block, qwen3):  # the copies inside the self-contained folders
        row_cos, row_sin = module.rope_cos_sin(positions[1], D, theta)
        assert max_diff(row_cos, cos[1]) == 0 and max_diff(row_sin, sin[1]) == 0
        assert max_diff(module.apply_rope(x[1:], row_cos, row_sin), expected[1:]) <= TOL


@pytest.mark.parametrize("heads,kv_heads", [(8, 2), (4, 4), (4, 1)])
def test_attention_matches_companion(heads, kv_heads):
    gqa = load_appendix("grouped_query_attention", "gqa")
    B, S, D = 2, 9, 16
    q, k, v = torch.randn(B, heads, S, D), torch.randn(B, kv_heads, S, D), torch.randn(B, kv_heads, S, D)
    valid = torch.ones(B, S, dtype=torch.bool)
    valid[1, :3] = False  # left padding in row 1
    cases = {
        "prefill": (q, None),
        "decode step": (q[:, :, -1:], None),
        "chunk": (q[:, :, -4:], None),
        "padding": (q, cm.padding_mask(valid, S)),
        "padded chunk": (q[:, :, -4:], cm.padding_mask(valid, 4)),
    }
    for name, (queries, mask) in cases.items():
        for reference in (cm.attention_sdpa, cm.attention_written_out):
            expected = reference(queries, k, v, mask)
            for ours in (gqa.attention, gqa.attention_grouped):
                assert max_diff(ours(queries, k, v, mask), expected) <= TOL, (name, reference.__name__, ours.__name__)


def test_swiglu_matches_companion_feed_forward():
    glu = load_appendix("glu_feed_forward", "glu")
    config = small_config()
    theirs = cm.FeedForward(config)
    ours = glu.SwiGLU(config.hidden_size, config.intermediate_size)
    ours.load_state_dict(theirs.state_dict())  # strict: the parameter names agree too
    x = torch.randn(3, 5, config.hidden_size)
    with torch.no_grad():
        assert max_diff(ours(x), theirs(x)) <= TOL
        other = glu.GeGLU(config.hidden_size, config.intermediate_size)
        other.load_state_dict(theirs.state_dict())
        assert max_diff(other(x), theirs(x)) > 1e-3  # the activation matters: this test can tell


@pytest.mark.parametrize("model_type", ["qwen3", "qwen2"])
def test_block_matches_companion(model_type):
    block = load_appendix("transformer_block", "block")
    config = small_config(model_type=model_type)  # qwen2: q/k/v bias and no QK-norm
    theirs = cm.TransformerBlock(config)
    randomize_norms(theirs)
    ours = block.TransformerBlock(block.BlockConfig(
        hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim, rms_norm_eps=config.rms_norm_eps, rope_theta=config.rope_theta,
        qk_norm=config.qk_norm, qkv_bias=config.qkv_bias))
    ours.load_state_dict(theirs.state_dict())
    B, T = 2, 7
    x = torch.randn(B, T, config.hidden_size)
    positions = torch.arange(T).expand(B, T)
    cos, sin = cm.rope_cos_sin(positions, cm.rope_frequencies(config.head_dim, config.rope_theta))
    cos, sin = cos[:, None], sin[:, None]
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[0, :2] = False
    with torch.no_grad():
        for mask in (None, cm.padding_mask(valid, T)):
            assert max_diff(ours(x, cos, sin, mask), theirs(x, cos, sin, mask)) <= TOL
        ours_cos, ours_sin = block.rope_cos_sin(torch.arange(T), config.head_dim, config.rope_theta)
        assert max_diff(ours(x, ours_cos, ours_sin), theirs(x, cos, sin)) <= TOL


def qwen3_config_for(appendix, config: ModelConfig):
    return appendix.Qwen3Config(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim, rope_theta=config.rope_theta,
        max_position_embeddings=config.max_position_embeddings, tie_word_embeddings=config.tie_word_embeddings)


@pytest.mark.parametrize("tied", [True, False])
def test_qwen3_model_folder_loads_in_companion_and_back(tied, tmp_path):
    qwen3 = load_appendix("qwen3_model", "qwen3")
    config = small_config(tie_word_embeddings=tied)
    ours = qwen3.Qwen3Model(qwen3_config_for(qwen3, config)).init_weights(std=0.1, seed=1).eval()
    randomize_norms(ours)
    ids = torch.randint(0, config.vocab_size, (2, 11))

    # appendix writes, companion reads
    qwen3.save_hf_folder(ours, tmp_path / "from_appendix")
    theirs, _ = load_model(tmp_path / "from_appendix", device="cpu", dtype="fp32", tokenizer=False)
    assert theirs.config == ModelConfig.from_json(tmp_path / "from_appendix")
    assert (theirs.lm_head.weight is theirs.embed.weight) == tied
    with torch.no_grad():
        assert max_diff(ours(ids), theirs(ids)) <= TOL
        assert max_diff(ours(ids, last_only=True), theirs(ids, last_only=True)) <= TOL

    # companion writes, appendix reads
    source = cm.Qwen3Model(config).init_weights(seed=2)
    randomize_norms(source)
    source.eval()
    save_model(source, None, tmp_path / "from_companion")
    loaded = qwen3.load_hf_folder(tmp_path / "from_companion")
    with torch.no_grad():
        assert max_diff(loaded(ids), source(ids)) <= TOL


def test_qwen3_model_cached_decoding_matches_companion(tmp_path):
    qwen3 = load_appendix("qwen3_model", "qwen3")
    kv = load_appendix("kv_cache", "kv_cache")
    config = small_config()
    source = cm.Qwen3Model(config).init_weights(seed=3, std=0.1).eval()
    save_model(source, None, tmp_path / "model")
    ours = qwen3.load_hf_folder(tmp_path / "model")
    prompt = torch.randint(0, config.vocab_size, (2, 5))
    tokens = qwen3.generate(ours, prompt, 10, use_cache=True)
    assert torch.equal(tokens, qwen3.generate(ours, prompt, 10, use_cache=False))
    with torch.no_grad():
        reference = source(tokens)  # companion, one uncached pass over the generated sequence
        assert torch.equal(tokens[:, 5:], reference[:, 4:-1].argmax(-1))  # greedy choices agree with companion
        caches = {"appendix": qwen3.KVCache(ours.config, 2, tokens.shape[1]),
                  "companion": cm.KVCache(config, 2, tokens.shape[1]),
                  # the kv_cache folder's cache has companion's update(layer, k, v, start) interface
                  "kv_cache folder": kv.KVCache(config.num_hidden_layers, 2, config.num_key_value_heads,
                                                tokens.shape[1], config.head_dim)}
        models = {"appendix": ours, "companion": source, "kv_cache folder": source}
        for name, cache in caches.items():
            model = models[name]
            steps = [model(tokens[:, :5], cache=cache, start=0)[:, -1]]
            steps += [model(tokens[:, t:t + 1], cache=cache, start=t)[:, -1] for t in range(5, tokens.shape[1] - 1)]
            assert max_diff(torch.stack(steps, 1), reference[:, 4:-1]) <= 1e-5, name
        assert torch.equal(caches["kv_cache folder"].keys, caches["companion"].keys)


def test_qwen3_config_reads_the_real_qwen3_config(shared_data):
    qwen3 = load_appendix("qwen3_model", "qwen3")
    path = shared_data / "qwen3-0.6b" / "config.json"
    ours = qwen3.Qwen3Config.from_hf(json.loads(path.read_text()))
    theirs = ModelConfig.from_json(path)
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "tie_word_embeddings"):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert sum(qwen3.parameter_groups(ours).values()) == theirs.num_parameters()
    with pytest.raises(ValueError, match="rope scaling"):
        qwen3.Qwen3Config.from_hf({**json.loads(path.read_text()), "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})

