"""Step metrics: printed, appended to a JSONL log, optionally sent to Weights & Biases, and plotted.

Names follow TRL's GRPOTrainer where the meaning is the same (``reward``, ``reward_std``,
``rewards/<name>/mean``, ``frac_reward_zero_std``, ``clip_ratio/region_mean``, ``kl``, ``entropy``,
``completions/mean_length``, ``grad_norm``, ``learning_rate``, ``step_time``, ``num_tokens``), so
curves from both can be read side by side.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

# What the one-line summary of a step shows, with its short label and format.
SUMMARY = (("reward", "reward", ".3f"), ("accuracy", "acc", ".2f"), ("format", "fmt", ".2f"),
           ("kl", "kl", ".4f"), ("entropy", "ent", ".2f"), ("completions/mean_length", "len", ".0f"),
           ("grad_norm", "gnorm", ".3f"), ("tokens_per_second", "tok/s", ".0f"))

# The panels of ``plot_log``: (title, metric names drawn in it).
PANELS = (
    ("reward", ("reward",)),
    ("accuracy / format", ("accuracy", "format")),
    ("reward per function", None),  # filled with every rewards/<name>/mean present
    ("groups with zero reward spread", ("frac_reward_zero_std",)),
    ("KL to reference", ("kl",)),
    ("loss", ("loss", "policy_loss", "kl_loss")),
    ("entropy", ("entropy",)),
    ("completion length", ("completions/mean_length", "completions/p95_length")),
    ("clipped fraction", ("clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean")),
    ("grad norm", ("grad_norm",)),
    ("learning rate", ("learning_rate",)),
    ("completion tokens / s", ("tokens_per_second",)),
)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(torch.quantile(torch.tensor(values, dtype=torch.float64), q))


def format_summary(metrics: dict) -> str:
    parts = [f"step {metrics['step']}"]
    for key, label, fmt in SUMMARY:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not math.isnan(value):
            parts.append(f"{label} {value:{fmt}}")
    return " | ".join(parts)


class MetricsLog:
    """Appends one JSON object per step to ``path``; mirrors it to W&B when ``wandb_project`` is set
    and wandb is installed."""

    def __init__(self, path: str | Path | None, wandb_project: str | None = None, run_config: dict | None = None):
        self.path = Path(path) if path else None
        self.run = None
        if wandb_project:
            try:
                import wandb
            except ImportError:
                print("wandb is not installed; metrics go to the JSONL log only")
            else:
                self.run = wandb.init(project=wandb_project, config=run_config or {})

    def truncate(self, last_step: int) -> None:
        """Drop records after ``last_step`` (a resumed run rewrites them)."""
        if self.path is None or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, metrics: dict) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as handle:
                handle.write(json.dumps(metrics) + "\n")
        if self.run is not None:
            self.run.log(metrics, step=metrics["step"])


def read_log(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_log(path: str | Path, png: str | Path | None = None, smooth: float = 0.0) -> Path:
    """A grid of panels, one per family of metrics, against the step; returns the PNG's path.

    ``path``: a metrics.jsonl file or the run folder holding it. ``smooth`` in [0, 1): an exponential
    moving average drawn over the raw curve.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(path)
    if not records:
        raise ValueError(f"{path}: no metrics recorded yet")
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    png = Path(png) if png else folder / "metrics.png"
    reward_keys = tuple(sorted({k for r in records for k in r if k.startswith("rewards/") and k.endswith("/mean")}))
    panels = [(title, keys if keys is not None else reward_keys) for title, keys in PANELS]
    panels = [(t, [k for k in keys if any(isinstance(r.get(k), (int, float)) for r in records)]) for t, keys in panels]
    panels = [(t, keys) for t, keys in panels if keys]
    columns = 4
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.8 * rows), squeeze=False)
    for axis, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
            steps, values = zip(*points)
            line, = axis.plot(steps, values, alpha=0.35 if smooth else 1.0, label=key)
            if smooth:
                axis.plot(steps, _ema(values, smooth), color=line.get_color())
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
        if len(keys) > 1:
            axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    for axis in axes[-1]:
        axis.set_xlabel("step")
    figure.tight_layout()
    figure.savefig(png, dpi=90)
    plt.close(figure)
    return png


def _ema(values, weight: float) -> list[float]:
    out, last = [], values[0]
    for value in values:
        last = weight * last + (1 - weight) * value
        out.append(last)
    return out
