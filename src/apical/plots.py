"""Figures from run histories: learning curves and alignment-angle curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_runs(
    runs: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]],
    path: Path,
    title: str = "",
) -> Path:
    """Left: test error (%) per epoch; right: mean hidden-layer angle to backprop (degrees)
    per training step. `runs` maps a label to (history rows, probe rows)."""
    fig, (ax_err, ax_ang) = plt.subplots(1, 2, figsize=(10, 4))
    for label, (history, probes) in runs.items():
        epochs = [0] + [h["epoch"] for h in history]
        errors = [None] + [100 * (1 - h["test_accuracy"]) for h in history]
        ax_err.plot(epochs[1:], errors[1:], marker="o", ms=3, label=label)
        if probes:
            ax_ang.plot(
                [p["step"] for p in probes], [p["mean_hidden_angle"] for p in probes], label=label
            )
    ax_err.set(xlabel="epoch", ylabel="test error (%)", title="learning curves")
    ax_ang.set(
        xlabel="training step", ylabel="angle to backprop (deg)", ylim=(0, 100),
        title="hidden-layer update vs backprop",
    )  # fmt: skip
    ax_ang.axhline(90, color="grey", lw=0.5, ls="--")
    for ax in (ax_err, ax_ang):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
