"""Checkpoints of a GRPO run: HF-format model folders that also hold the trainer's state.

``<out_dir>/checkpoints/step-000040/`` is a normal model folder (``companion.load_model`` and
``transformers`` load it; they ignore the extra file) plus ``trainer_state.pt``: optimizer moments,
scheduler, every random state (torch, Python, the sampling generator) and the position in the
data. The folder is assembled under a temporary name and renamed into place, so a run killed at
any moment leaves either the previous checkpoint or the new one, never half of one. ``latest``
names the newest complete checkpoint.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from companion.checkpoint import save_model

STATE_FILE = "trainer_state.pt"
STEP_FOLDER = re.compile(r"^step-(\d+)$")


def checkpoint_root(out_dir) -> Path:
    return Path(out_dir) / "checkpoints"


def save_checkpoint(model, tokenizer, state: dict, out_dir, step: int, keep: int = 2) -> Path:
    root = checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    staging = root / f".step-{step:06d}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    save_model(model, tokenizer, staging)
    torch.save(state, staging / STATE_FILE)
    _fsync_folder(staging)
    if final.exists():  # the same step saved again (a rerun): swap, then remove the old one
        old = root / f".step-{step:06d}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)
    _write_atomically(root / "latest", final.name + "\n")
    _prune(root, keep)
    return final


def save_reference(ref_model, tokenizer, out_dir) -> Path:
    """The frozen reference weights, saved once so that a resumed run can rebuild its KL term."""
    return save_model(ref_model, tokenizer, Path(out_dir) / "reference")


def complete_checkpoints(out_dir) -> list[Path]:
    """Finished checkpoint folders, oldest first (partial ones never match the name pattern)."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_FOLDER.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(STEP_FOLDER.match(p.name).group(1)))


def latest_checkpoint(out_dir) -> Path | None:
    root = checkpoint_root(out_dir)
    pointer = root / "latest"
    if pointer.is_file():
        folder = root / pointer.read_text().strip()
        if (folder / STATE_FILE).is_file():
            return folder
    found = complete_checkpoints(out_dir)
    return found[-1] if found else None


def load_state(folder) -> dict:
    return torch.load(Path(folder) / STATE_FILE, weights_only=False)


def _prune(root: Path, keep: int) -> None:
    if keep <= 0:
        return
    for folder in complete_checkpoints(root.parent)[:-keep]:
        shutil.rmtree(folder, ignore_errors=True)
    for leftover in root.glob(".step-*.partial-*"):
        if not leftover.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(leftover, ignore_errors=True)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fsync_folder(folder: Path) -> None:
    """Flush the files to disk before the rename makes the folder visible as complete."""
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
