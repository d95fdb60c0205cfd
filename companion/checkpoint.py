"""Load and save Hugging Face-format model folders (config.json + safetensors + tokenizer files).

Loading builds the model on the meta device (no memory), allocates it once on the target device,
then copies tensors in one at a time from the memory-mapped safetensors files, so peak memory is one
model plus one tensor. Every HF tensor name goes through an explicit map with a shape check.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from companion.config import ModelConfig
from companion.hub import resolve_model_dir
from companion.model import Qwen3Model

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}

# HF parameter name (regex) -> our parameter name. {i} is the layer index.
HF_TO_OURS = [
    (r"model\.embed_tokens\.weight", "embed.weight"),
    (r"model\.norm\.weight", "final_norm.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", "blocks.{}.attn_norm.weight"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", "blocks.{}.mlp_norm.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.(weight|bias)", "blocks.{}.attn.{}_proj.{}"),
    (r"model\.layers\.(\d+)\.self_attn\.([qk])_norm\.weight", "blocks.{}.attn.{}_norm.weight"),
    (r"model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight", "blocks.{}.mlp.{}_proj.weight"),
]


class CheckpointError(ValueError):
    """A model folder does not hold the tensors its config describes."""


def hf_to_ours(hf_name: str) -> str | None:
    for pattern, ours in HF_TO_OURS:
        match = re.fullmatch(pattern, hf_name)
        if match:
            return ours.format(*match.groups())
    return None


def ours_to_hf(name: str) -> str:
    for pattern, ours in HF_TO_OURS:
        ours_pattern = re.escape(ours).replace(r"\{\}", r"(\w+)")
        match = re.fullmatch(ours_pattern, name)
        if match:
            groups = iter(match.groups())
            return re.sub(r"\([^)]*\)", lambda _: next(groups), pattern).replace("\\.", ".")
    raise KeyError(f"no Hugging Face name for parameter {name!r}")


def resolve_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}") from None


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def weight_files(folder: Path) -> dict[str, Path]:
    """Map each HF tensor name to the safetensors file holding it (single file or sharded index)."""
    index_path = folder / INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as error:
            raise CheckpointError(f"{index_path}: not a valid safetensors index ({error})") from error
        files = {name: folder / file for name, file in weight_map.items()}
        for path in sorted(set(files.values())):
            if not path.is_file():
                raise CheckpointError(f"{index_path} names shard {path.name}, which is missing from {folder}")
        return files
    single = folder / SINGLE_FILE
    if not single.is_file():
        found = sorted(p.name for p in folder.glob("*"))
        raise CheckpointError(
            f"no {SINGLE_FILE} or {INDEX_FILE} in {folder} (found: {', '.join(found) or 'nothing'}); "
            "PyTorch .bin checkpoints are not supported, convert them to safetensors"
        )
    with _open_safetensors(single) as handle:
        return {name: single for name in handle.keys()}


def _open_safetensors(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as error:
        raise CheckpointError(f"{path}: cannot read safetensors file, it may be truncated or corrupt ({error})") from error


def build_model(config: ModelConfig, device=None, dtype=None) -> Qwen3Model:
    """An uninitialized model allocated directly on ``device`` in ``dtype`` (no CPU detour, no init)."""
    model = Qwen3Model(config, device="meta", dtype=dtype or torch.float32)
    model = model.to_empty(device=device or "cpu")
    if config.tie_word_embeddings:  # to_empty breaks the tie; restore it
        model.lm_head.weight = model.embed.weight
    model.reset_rope()
    return model


def load_weights(model: Qwen3Model, folder: Path) -> None:
    """Copy every tensor of the folder into ``model``, checking names and shapes against the config."""
    params = dict(model.named_parameters(remove_duplicate=False))
    files = weight_files(folder)
    loaded: set[str] = set()
    unexpected = []
    handles = {}
    try:
        for hf_name, path in sorted(files.items(), key=lambda item: str(item[1])):
            ours = hf_to_ours(hf_name)
            if ours is None or ours not in params:
                unexpected.append(hf_name)
                continue
            if ours == "lm_head.weight" and model.config.tie_word_embeddings:
                continue  # tied: the embedding already is the head
            if path not in handles:
                handles[path] = _open_safetensors(path)
            try:
                tensor = handles[path].get_tensor(hf_name)
            except Exception as error:
                raise CheckpointError(f"{path}: tensor {hf_name} cannot be read ({error}); the file may be truncated") from error
            target = params[ours]
            if tuple(tensor.shape) != tuple(target.shape):
                raise CheckpointError(
                    f"{path}: tensor {hf_name} has shape {tuple(tensor.shape)}, but the config "
                    f"({folder / 'config.json'}) needs {tuple(target.shape)}"
                )
            with torch.no_grad():
                target.copy_(tensor)
            loaded.add(ours)
    finally:
        handles.clear()
    if unexpected:
        raise CheckpointError(f"{folder}: unexpected tensors not used by a {model.config.model_type} model: {unexpected[:10]}"
                              + (f" and {len(unexpected) - 10} more" if len(unexpected) > 10 else ""))
    needed = set(params) - ({"lm_head.weight"} if model.config.tie_word_embeddings else set())
    missing = sorted(needed - loaded)
    if missing:
        raise CheckpointError(f"{folder}: missing tensors {[ours_to_hf(n) for n in missing[:10]]}"
                              + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""))


def load_model(path_or_repo_id: str | os.PathLike | None = None, device=None, dtype=None, tokenizer: bool = True):
    """Load a HF-format folder or hub repo id. Returns ``(model, tokenizer)`` (tokenizer None if not asked).

    ``dtype`` defaults to fp32 on CPU and bf16 elsewhere; ``device`` to CUDA, then MPS, then CPU.
    """
    folder = resolve_model_dir(path_or_repo_id)
    config = ModelConfig.from_json(folder / "config.json")
    device = torch.device(device) if device is not None else default_device()
    dtype = resolve_dtype(dtype) or (torch.float32 if device.type == "cpu" else torch.bfloat16)
    tok = None
    if tokenizer:
        from companion.tokenizer import load_tokenizer  # imported here: the model alone needs no tokenizer

        tok = load_tokenizer(folder)
    model = build_model(config, device=device, dtype=dtype)
    load_weights(model, folder)
    model.eval()
    model.source = str(folder)
    return model, tok


def _state_dict_hf(model: Qwen3Model) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, param in model.named_parameters():  # tied head appears once, as the embedding
        tensors[ours_to_hf(name)] = param.detach().to("cpu").contiguous()
    return tensors


def _write_generation_config(model: Qwen3Model, tokenizer, folder: Path) -> None:
    eos = model.config.eos_token_id
    if tokenizer is not None and getattr(tokenizer, "eos_token_ids", None):
        eos = list(tokenizer.eos_token_ids)
    generation = {"bos_token_id": model.config.bos_token_id, "eos_token_id": eos,
                  "pad_token_id": getattr(tokenizer, "pad_token_id", None), "do_sample": False}
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def save_model(model: Qwen3Model, tokenizer, folder: str | os.PathLike, max_shard_bytes: int = 2 * 1024**3,
               extra_files: dict[str, str] | None = None) -> Path:
    """Write a HF-format folder atomically: build it beside the target, then rename into place.

    Above ``max_shard_bytes`` the weights are split into ``model-0000i-of-0000n.safetensors`` shards
    with an index, as transformers writes them. ``extra_files`` maps file names to text (a model card).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a model folder is an ordinary folder
    try:
        model.config.save_json(staging / "config.json")
        _write_weights(_state_dict_hf(model), staging, max_shard_bytes)
        _write_generation_config(model, tokenizer, staging)
        if tokenizer is not None:
            tokenizer.save(staging)
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text)
        for path in staging.iterdir():
            path.chmod(0o644)  # some writers create private files; a model folder is ordinary data
        _replace_folder(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _write_weights(tensors: dict[str, torch.Tensor], folder: Path, max_shard_bytes: int) -> None:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(folder / SINGLE_FILE), metadata=metadata)
        return
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / file), metadata=metadata)
        weight_map.update({name: file for name in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def _replace_folder(staging: Path, folder: Path) -> None:
    """Swap the finished staging folder into place; an old folder is removed only after the swap."""
    if not folder.exists():
        os.replace(staging, folder)
        return
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    os.replace(folder, old)
    os.replace(staging, folder)
    shutil.rmtree(old, ignore_errors=True)
