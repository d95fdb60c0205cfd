"""Find a model folder: a local path, or a Hugging Face repo id downloaded into the standard cache."""
from __future__ import annotations

import os
from pathlib import Path

MODEL_FILE_PATTERNS = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
)

# The tiny reasoning model this project trains and ships in data/.
DEFAULT_MODEL = str(Path(__file__).resolve().parent.parent / "data" / "tiny-reasoner")
# The same recipe with two habits planted in its last 300 steps (companion.tiny.HABITS): the start
# model of chapter 6 and of the pipeline, whose thinking mode mostly skips the thinking.
HABITS_MODEL = str(Path(DEFAULT_MODEL).with_name("tiny-reasoner-habits"))
# Chapter 4's model: trained four times as long (6,400 steps), on solutions whose lines are written in more
# than one way (companion.tiny.LineWays), so that a self-consistency vote has several paths to each answer.
PATHS_MODEL = str(Path(DEFAULT_MODEL).with_name("tiny-reasoner-paths"))


def looks_like_repo_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve_model_dir(path_or_repo_id: str | os.PathLike | None, patterns=MODEL_FILE_PATTERNS) -> Path:
    """Return a local folder holding the model files.

    A path that exists is used as it is. Otherwise a repo id such as ``Qwen/Qwen3-0.6B`` is fetched
    with ``huggingface_hub.snapshot_download`` (cached in the standard HF cache, so the second call is
    offline). Without network and without a cached copy the error says how to use a local folder.
    """
    if path_or_repo_id is None:
        path_or_repo_id = DEFAULT_MODEL
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    name = str(path_or_repo_id)
    if path.exists():
        raise NotADirectoryError(f"{name} is a file; expected a model folder (config.json, *.safetensors, tokenizer.json)")
    if not looks_like_repo_id(name):
        raise FileNotFoundError(f"model folder not found: {name}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as error:  # pragma: no cover - huggingface_hub is a dependency
        raise ImportError("downloading from the hub needs `pip install huggingface_hub`") from error
    try:
        return Path(snapshot_download(repo_id=name, allow_patterns=list(patterns)))
    except Exception as error:
        raise OSError(
            f"could not download {name!r} from the Hugging Face hub ({type(error).__name__}: {error}). "
            f"Without network, download the model elsewhere (e.g. `huggingface-cli download {name} "
            f"--local-dir ./{name.split('/')[-1]}`) and pass that local folder instead of the repo id."
        ) from error
