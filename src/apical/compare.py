"""Train several configs on one dataset and tabulate them: shared by `demo` and `reproduce`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from apical.errors import DivergedError
from apical.train import DATA_FIELDS, Run, TrainConfig, load_config_data, train


def train_all(
    configs: dict[str, TrainConfig],
    *,
    resume: bool = False,
    progress: bool = True,
    echo=print,
) -> dict[str, Run]:
    """Train each config in turn; configs sharing dataset, split and seed load it once.
    A run that diverges (NaN loss) is reported through `echo` and left out of the result,
    so the others still run."""
    cache: dict[tuple, Any] = {}
    runs = {}
    for label, cfg in configs.items():
        key = tuple(getattr(cfg, f) for f in DATA_FIELDS)
        if key not in cache:
            cache[key] = load_config_data(cfg)
        can_resume = resume and cfg.run_dir is not None and _has_checkpoint(cfg)
        echo(
            f"[{label}] rule {cfg.rule}, {cfg.epochs} epochs"
            + (" (resuming)" if can_resume else "")
        )
        try:
            runs[label] = train(cfg, resume=can_resume, progress=progress, data=cache[key])
        except DivergedError as e:
            echo(f"[{label}] diverged: {e}")
    return runs


def _has_checkpoint(cfg: TrainConfig) -> bool:
    return (Path(cfg.run_dir) / "checkpoint.pt").is_file()


def summary(run: Run) -> dict[str, float]:
    """Errors (%), seconds and final angle of a run's last epoch."""
    return history_summary(run.history, run.probes)


def history_summary(history: list[dict[str, Any]], probes: list[dict[str, Any]]) -> dict:
    """Like `summary`, from the rows of a run folder."""
    last = history[-1]
    return {
        "test_error": 100 * (1 - last["test_accuracy"]),
        "val_error": 100 * (1 - last["val_accuracy"]),
        "test_top5_error": 100 * (1 - last.get("test_top5_accuracy", math.nan)),
        "seconds": last["seconds"],
        "angle": probes[-1]["mean_hidden_angle"] if probes else math.nan,
    }


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:.2f}"
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in text]
    return "\n".join(lines)
