"""Qwen3 from scratch in one file: config, model, KV cache, greedy generation, and reading/writing
Hugging Face-format folders (config.json + model.safetensors) with HF parameter names.

Shapes: B batch, T new tokens, S = start + T key positions, C hidden, H query heads, K key/value
heads, D head dim, F intermediate, V vocabulary, L layers.

Every piece is the one studied in a sibling folder (../rmsnorm, ../rope, ../grouped_query_attention,
../kv_cache, ../glu_feed_forward, ../transformer_block), repeated here so that this file stands alone.
Only torch is needed: even the safetensors format is read and written by hand below.
"""
from __future__ import annotations

import ctypes
import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# ---- configuration --------------------------------------------------------------------------------


@dataclass
class Qwen3Config:
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
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    @classmethod
    def from_hf(cls, hf: dict) -> "Qwen3Config":
        """Read a transformers config.json dict, refusing settings this file does not implement."""
        if hf.get("model_type") != "qwen3":
            raise ValueError(f"expected model_type 'qwen3', got {hf.get('model_type')!r}")
        scaling = hf.get("rope_scaling") or {}
        rope = hf.get("rope_parameters") or {}  # transformers >= 5 nests rope_theta here
        rope_type = scaling.get("rope_type", scaling.get("type")) or rope.get("rope_type", "default")
        problems = {
            "rope scaling": rope_type != "default",
            "attention_bias": bool(hf.get("attention_bias")),
            "sliding window": bool(hf.get("use_sliding_window")),
            "hidden_act other than silu": hf.get("hidden_act", "silu") != "silu",
        }
        unsupported = [name for name, bad in problems.items() if bad]
        if unsupported:
            raise ValueError(f"config.json asks for {', '.join(unsupported)}, which this model does not implement")
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=hf["num_hidden_layers"],
            num_attention_heads=hf["num_attention_heads"],
            num_key_value_heads=hf.get("num_key_value_heads", hf["num_attention_heads"]),
            head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=float(hf.get("rope_theta", rope.get("rope_theta", 10_000.0))),
            max_position_embeddings=hf.get("max_position_embeddings", 40960),
            tie_word_embeddings=hf.get("tie_word_embeddings", False),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
        )

    def to_hf(self, dtype: torch.dtype = torch.float32) -> dict:
        """A config.json that transformers' Qwen3ForCausalLM reads as this model."""
        return {
            "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads, "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim, "hidden_act": "silu", "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta, "rope_scaling": None,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings, "attention_bias": False, "attention_dropout": 0.0,
            "use_sliding_window": False, "sliding_window": None,
            "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id,
            "torch_dtype": str(dtype).removeprefix("torch."), "use_cache": True,
        }


# ---- building blocks --------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()  # statistics in fp32, whatever the model dtype
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (T,) -> cos, sin (T, D), fp32, half-split layout (pair i is dims i and i + D/2)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float()
                                / head_dim))
    angles = positions.float()[:, None] * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class KVCache:
    """Keys and values of every layer, (L, B, K, max_len, D) each; the caller passes `start`."""

    def __init__(self, config: Qwen3Config, batch_size: int, max_len: int, dtype=torch.float32, device=None):
        shape = (config.num_hidden_layers, batch_size, config.num_key_value_heads, max_len, config.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)

    def update(self, layer: int, k, v, start: int):
        end = start + k.shape[2]
        if end > self.keys.shape[3]:
            raise IndexError(f"the cache holds {self.keys.shape[3]} positions; asked to write up to {end}")
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class Attention(nn.Module):
    """Grouped-query attention with QK-norm and RoPE."""

    def __init__(self, config: Qwen3Config):
        super().__init__()
        C, D = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, D
        self.q_proj = nn.Linear(C, self.num_heads * D, bias=False)
        self.k_proj = nn.Linear(C, self.num_kv_heads * D, bias=False)
        self.v_proj = nn.Linear(C, self.num_kv_heads * D, bias=False)
        self.o_proj = nn.Linear(self.num_heads * D, C, bias=False)
        self.q_norm = RMSNorm(D, config.rms_norm_eps)
        self.k_norm = RMSNorm(D, config.rms_norm_eps)

    def forward(self, x, cos, sin, cache: KVCache | None = None, layer: int = 0, start: int = 0):
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, T, self.num_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v, start)
        S = k.shape[2]
        mask = None
        if 1 < T < S:  # new queries are the last T of S positions: offset the causal triangle
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1,
                                             enable_gqa=self.num_heads != self.num_kv_heads)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))


class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: Qwen3Config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class TransformerBlock(nn.Module):
    def __init__(self, config: Qwen3Config):
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = FeedForward(config)

    def forward(self, x, cos, sin, cache=None, layer=0, start=0):
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, layer, start)
        return x + self.mlp(self.mlp_norm(x))


# ---- the model --------------------------------------------------------------------------------------


class Qwen3Model(nn.Module):
    """Token ids (B, T) -> logits (B, T, V)."""

    def __init__(self, config: Qwen3Config):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_hidden_layers))
        self.final_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:  # one matrix both reads tokens in and scores them out
            self.lm_head.weight = self.embed.weight

    def init_weights(self, std: float = 0.02, seed: int | None = None) -> "Qwen3Model":
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                elif isinstance(module, RMSNorm):
                    module.weight.fill_(1.0)
        return self

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None, start: int = 0,
                last_only: bool = False) -> torch.Tensor:
        """``input_ids`` are the tokens at positions start .. start + T - 1 (no padding)."""
        T = input_ids.shape[1]
        positions = torch.arange(start, start + T, device=input_ids.device)
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta)  # fp32 (T, D)
        x = self.embed(input_ids)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, layer, start)
        x = self.final_norm(x)
        return self.lm_head(x[:, -1:] if last_only else x)


@torch.no_grad()
def generate(model: Qwen3Model, input_ids: torch.Tensor, max_new_tokens: int, use_cache: bool = True,
             eos_token_id: int | None = None) -> torch.Tensor:
    """Greedy decoding of a batch of equal-length prompts: (B, T) -> (B, T + max_new_tokens).

    A row that has produced ``eos_token_id`` keeps producing it (no padding bookkeeping needed).
    """
    tokens = input_ids
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    cache = KVCache(model.config, input_ids.shape[0], input_ids.shape[1] + max_new_tokens,
                    dtype=model.embed.weight.dtype, device=input_ids.device) if use_cache else None
    logits = model(input_ids, cache=cache, start=0, last_only=True)[:, -1]  # prefill
    for step in range(max_new_tokens):
        next_token = logits.argmax(dim=-1)
        if eos_token_id is not None:
            next_token = torch.where(done, torch.full_like(next_token, eos_token_id), next_token)
            done |= next_token == eos_token_id
        tokens = torch.cat((tokens, next_token[:, None]), dim=1)
        if step == max_new_tokens - 1 or (eos_token_id is not None and bool(done.all())):
            break
        if use_cache:  # one new token at the position after everything cached
            logits = model(next_token[:, None], cache=cache, start=tokens.shape[1] - 1)[:, -1]
        else:  # recompute the whole sequence
            logits = model(tokens, last_only=True)[:, -1]
    return tokens


# ---- Hugging Face names -----------------------------------------------------------------------------


def hf_names(config: Qwen3Config) -> dict[str, str]:
    """HF parameter name -> this model's parameter name, for every tensor a Qwen3 checkpoint holds."""
    names = {"model.embed_tokens.weight": "embed.weight", "model.norm.weight": "final_norm.weight"}
    if not config.tie_word_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    for i in range(config.num_hidden_layers):
        hf, ours = f"model.layers.{i}.", f"blocks.{i}."
        names[hf + "input_layernorm.weight"] = ours + "attn_norm.weight"
        names[hf + "post_attention_layernorm.weight"] = ours + "mlp_norm.weight"
        for p in ("q", "k", "v", "o"):
            names[hf + f"self_attn.{p}_proj.weight"] = ours + f"attn.{p}_proj.weight"
        for p in ("q", "k"):
            names[hf + f"self_attn.{p}_norm.weight"] = ours + f"attn.{p}_norm.weight"
        for p in ("gate", "up", "down"):
            names[hf + f"mlp.{p}_proj.weight"] = ours + f"mlp.{p}_proj.weight"
    return names


# ---- safetensors, by hand -----------------------------------------------------------------------------
# File layout: 8 bytes (little-endian u64) header length N, N bytes of JSON header
#   {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {..}}
# then the raw little-endian tensor bytes; offsets are relative to the end of the header.

SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}
DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> None:
    header, chunks, offset = {}, [], 0
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        chunks.append(ctypes.string_at(tensor.data_ptr(), nbytes) if nbytes else b"")  # raw memory
        header[name] = {"dtype": DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = metadata
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # pad so tensor data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for chunk in chunks:
            f.write(chunk)


def read_safetensors_header(path: str | Path) -> tuple[dict, int]:
    """The JSON header and the byte offset where tensor data begins."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length)), 8 + length


def load_safetensors(path: str | Path):
    """Yield (name, tensor) one at a time from a memory map, so peak memory stays one tensor."""
    header, base = read_safetensors_header(path)
    header.pop("__metadata__", None)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        for name, info in header.items():
            begin, end = info["data_offsets"]
            dtype = SAFETENSORS_DTYPES[info["dtype"]]
            if end == begin:
                tensor = torch.empty(info["shape"], dtype=dtype)
            else:
                tensor = torch.frombuffer(bytearray(mapped[base + begin: base + end]), dtype=dtype)
            yield name, tensor.reshape(info["shape"])


# ---- HF-format folders ------------------------------------------------------------------------------


def save_hf_folder(model: Qwen3Model, folder: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write config.json and model.safetensors (HF names; a tied lm_head is stored once, as the embedding)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = dtype or model.embed.weight.dtype
    params = dict(model.named_parameters())
    tensors = {hf: params[ours].to(dtype) for hf, ours in hf_names(model.config).items()}
    (folder / "config.json").write_text(json.dumps(model.config.to_hf(dtype), indent=2) + "\n")
    save_safetensors(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():  # sharded checkpoints: the index maps each tensor to its shard
        return sorted({folder / shard for shard in json.loads(index.read_text())["weight_map"].values()})
    single = folder / "model.safetensors"
    if not single.is_file():
        raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {folder}")
    return [single]


def load_hf_folder(folder: str | Path, dtype: torch.dtype = torch.float32, device="cpu") -> Qwen3Model:
    """Build the model from config.json and copy every tensor in, checking names and shapes."""
    folder = Path(folder)
    config = Qwen3Config.from_hf(json.loads((folder / "config.json").read_text()))
    with torch.device("meta"):  # no memory and no random init for weights about to be overwritten
        model = Qwen3Model(config)
    model = model.to(dtype).to_empty(device=device)
    if config.tie_word_embeddings:  # to_empty allocates the two names separately: tie them again
        model.lm_head.weight = model.embed.weight
    params = dict(model.named_parameters())
    names = hf_names(config)
    loaded, unexpected = set(), []
    for path in weight_files(folder):
        for hf_name, tensor in load_safetensors(path):
            if hf_name == "lm_head.weight" and config.tie_word_embeddings:
                continue  # some tied checkpoints store the head anyway; the embedding is it
            ours = names.get(hf_name)
            if ours is None:
                unexpected.append(hf_name)
                continue
            target = params[ours]
            if tuple(tensor.shape) != tuple(target.shape):
                raise ValueError(f"{hf_name}: shape {tuple(tensor.shape)} in the file, {tuple(target.shape)} "
                                 f"expected from config.json")
            with torch.no_grad():
                target.copy_(tensor)
            loaded.add(hf_name)
    missing = sorted(set(names) - loaded)
    if missing or unexpected:
        raise ValueError(f"{folder}: missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}")
    return model.eval()


def parameter_groups(config: Qwen3Config) -> dict[str, int]:
    """Where the parameters are: embeddings, attention, MLP, norms (the tied head counts once)."""
    C, D, H, K, L = (config.hidden_size, config.head_dim, config.num_attention_heads,
                     config.num_key_value_heads, config.num_hidden_layers)
    groups = {
        "embedding": config.vocab_size * C,
        "attention": L * C * D * (2 * H + 2 * K),
        "mlp": L * 3 * C * config.intermediate_size,
        "norms": L * (2 * C + 2 * D) + C,
    }
    if not config.tie_word_embeddings:
        groups["lm_head"] = config.vocab_size * C
    return groups
