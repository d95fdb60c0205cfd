"""Model configuration: one dataclass for Qwen3 and Qwen2.5, read from and written to HF config.json."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

SUPPORTED_MODEL_TYPES = ("qwen3", "qwen2")
ARCHITECTURES = {"qwen3": "Qwen3ForCausalLM", "qwen2": "Qwen2ForCausalLM"}

# config.json keys that carry no meaning for the forward pass (training or serving hints).
IGNORED_KEYS = {
    "architectures", "attention_dropout", "initializer_range", "torch_dtype", "dtype",
    "transformers_version", "use_cache", "max_window_layers", "use_mrope", "pad_token_id",
    "bos_token_id", "_name_or_path", "model_type", "layer_types", "sliding_window",
    "use_sliding_window", "rope_scaling", "rope_parameters", "rope_theta", "hidden_act",
    "output_attentions", "output_hidden_states", "return_dict", "tie_word_embeddings",
    "head_dim", "attention_bias", "eos_token_id", "quantization_config",
}


class UnsupportedConfigError(ValueError):
    """A config.json asks for something this implementation does not do (so it would be a wrong model)."""


@dataclass
class ModelConfig:
    vocab_size: int = 151936
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 40960
    tie_word_embeddings: bool = True
    model_type: str = "qwen3"
    # Qwen2.5 has a bias on q/k/v and no QK-norm; Qwen3 the opposite. Derived from model_type by default.
    qkv_bias: bool | None = None
    qk_norm: bool | None = None
    eos_token_id: int | list[int] | None = None
    bos_token_id: int | None = None
    torch_dtype: str = "bfloat16"

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedConfigError(
                f"unsupported model_type {self.model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        if self.qkv_bias is None:
            self.qkv_bias = self.model_type == "qwen2"
        if self.qk_norm is None:
            self.qk_norm = self.model_type == "qwen3"
        if self.num_attention_heads % self.num_key_value_heads:
            raise UnsupportedConfigError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )

    @property
    def group_size(self) -> int:
        """How many query heads share one key/value head (grouped-query attention)."""
        return self.num_attention_heads // self.num_key_value_heads

    # ---- Hugging Face config.json -------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, hf: dict, source: str = "config.json") -> "ModelConfig":
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedConfigError(
                f"{source}: unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        _check_supported_settings(hf, source)
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in hf]
        if missing:
            raise UnsupportedConfigError(f"{source}: missing required keys {missing}")
        heads = hf["num_attention_heads"]
        head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
        rope = hf.get("rope_parameters") or {}
        rope_theta = hf.get("rope_theta", rope.get("rope_theta", 10000.0))
        if model_type == "qwen3" and hf.get("attention_bias"):
            # transformers' Qwen3 then also puts a bias on o_proj; no released Qwen3 checkpoint does.
            raise UnsupportedConfigError(f"{source}: attention_bias=true is not implemented for qwen3")
        qkv_bias = model_type == "qwen2"
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=hf["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=hf.get("num_key_value_heads", heads),
            head_dim=head_dim,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta),
            max_position_embeddings=hf.get("max_position_embeddings", 32768),
            tie_word_embeddings=hf.get("tie_word_embeddings", model_type == "qwen2"),
            model_type=model_type,
            qkv_bias=qkv_bias,
            eos_token_id=hf.get("eos_token_id"),
            bos_token_id=hf.get("bos_token_id"),
            torch_dtype=str(hf.get("torch_dtype") or hf.get("dtype") or "bfloat16"),
        )

    def to_hf_dict(self) -> dict:
        """A config.json that transformers' Qwen3ForCausalLM / Qwen2ForCausalLM read as this model."""
        hf = {
            "architectures": [ARCHITECTURES[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": None,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_dropout": 0.0,
            "use_sliding_window": False,
            "sliding_window": None,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": self.torch_dtype,
            "use_cache": True,
        }
        if self.model_type == "qwen3":
            if self.qkv_bias:
                raise UnsupportedConfigError("a qwen3 config.json cannot express a q/k/v bias without an o_proj bias")
            hf["attention_bias"] = False
        elif not self.qkv_bias:
            raise UnsupportedConfigError("qwen2 models always have a q/k/v bias in transformers")
        if self.qk_norm != (self.model_type == "qwen3"):
            raise UnsupportedConfigError(f"qk_norm={self.qk_norm} cannot be expressed as a {self.model_type} config.json")
        return hf

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "ModelConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            hf = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        return cls.from_hf_dict(hf, source=str(path))

    def save_json(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        path.write_text(json.dumps(self.to_hf_dict(), indent=2) + "\n")

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def num_parameters(self) -> int:
        attn = self.hidden_size * self.head_dim * (self.num_attention_heads * 2 + self.num_key_value_heads * 2)
        if self.qkv_bias:
            attn += self.head_dim * (self.num_attention_heads + 2 * self.num_key_value_heads)
        if self.qk_norm:
            attn += 2 * self.head_dim
        mlp = 3 * self.hidden_size * self.intermediate_size
        per_layer = attn + mlp + 2 * self.hidden_size
        embed = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else embed
        return embed + head + self.num_hidden_layers * per_layer + self.hidden_size


def _check_supported_settings(hf: dict, source: str) -> None:
    """Refuse settings that would silently give a different model than the checkpoint was trained as."""
    rope = hf.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = hf.get("rope_scaling")
    if scaling:
        rope_type = scaling.get("rope_type", scaling.get("type"))
    if rope_type not in (None, "default"):
        raise UnsupportedConfigError(
            f"{source}: rope scaling of type {rope_type!r} is not implemented (only plain RoPE); "
            "remove rope_scaling to run at the native context length"
        )
    if hf.get("use_sliding_window"):
        raise UnsupportedConfigError(f"{source}: use_sliding_window=true is not implemented")
    layer_types = hf.get("layer_types") or []
    if any(t != "full_attention" for t in layer_types):
        raise UnsupportedConfigError(f"{source}: layer types {sorted(set(layer_types))} are not implemented")
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise UnsupportedConfigError(f"{source}: hidden_act {act!r} is not implemented (only silu)")
    if hf.get("quantization_config"):
        raise UnsupportedConfigError(f"{source}: quantized checkpoints are not supported")


def _preset(model_type, hidden, intermediate, layers, heads, kv_heads, head_dim, tied, max_pos, eos):
    return ModelConfig(
        vocab_size=151936, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
        tie_word_embeddings=tied, max_position_embeddings=max_pos, model_type=model_type,
        rope_theta=1_000_000.0, bos_token_id=151643, eos_token_id=eos,
    )


PRESETS: dict[str, ModelConfig] = {
    "Qwen/Qwen3-0.6B": _preset("qwen3", 1024, 3072, 28, 16, 8, 128, True, 40960, 151645),
    "Qwen/Qwen3-1.7B": _preset("qwen3", 2048, 6144, 28, 16, 8, 128, True, 40960, 151645),
    "Qwen/Qwen3-4B": _preset("qwen3", 2560, 9728, 36, 32, 8, 128, True, 40960, 151645),
    "Qwen/Qwen3-8B": _preset("qwen3", 4096, 12288, 36, 32, 8, 128, False, 40960, 151645),
    "Qwen/Qwen2.5-0.5B": _preset("qwen2", 896, 4864, 24, 14, 2, 64, True, 32768, 151643),
    "Qwen/Qwen2.5-1.5B": _preset("qwen2", 1536, 8960, 28, 12, 2, 128, True, 32768, 151643),
    "Qwen/Qwen2.5-3B": _preset("qwen2", 2048, 11008, 36, 16, 2, 128, True, 32768, 151643),
}


def preset(name: str) -> ModelConfig:
    """A preset by repo id (``Qwen/Qwen3-0.6B``) or short name (``qwen3-0.6b``)."""
    for key, config in PRESETS.items():
        if name in (key, key.split("/")[1], key.split("/")[1].lower()):
            return dataclasses.replace(config)
    raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
