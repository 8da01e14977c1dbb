"""The rows of a run as TensorBoard events (`tensorboard = true`, `apical train
--tensorboard`), in RUN/tensorboard next to the JSON rows they repeat.

Scalars, against the training step: every number of an epoch's row (`metrics/...`) and of
a probe row, per layer (`probes/LAYER/...`: angle and sign agreement with backprop, and
the rule's own diagnostics); histograms of every parameter at each epoch's end. A
replica's tags begin with `replicaR/`. A resumed run purges the events written after its
checkpoint's step, so the events always belong to the rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from apical.errors import ApicalError


class Board:
    """One run's event writer."""

    def __init__(self, folder: Path, purge_from: int | None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ApicalError(
                "tensorboard is not installed; pip install 'apical[tensorboard]' (or "
                "tensorboard), or train without --tensorboard"
            ) from None
        self.writer = SummaryWriter(str(folder), purge_step=purge_from)

    def epoch(self, rows: list[dict[str, Any]], model: nn.Module) -> None:
        """An epoch's rows (one per replica) and the parameters' histograms."""
        for row in rows:
            for key, value in _numbers(row, skip=("epoch", "step", "replica", "seed")):
                self.writer.add_scalar(f"{_prefix(row)}metrics/{key}", value, row["step"])
        if not rows:
            return
        step, replicas = rows[-1]["step"], len(rows) if "replica" in rows[0] else None
        for name, p in model.named_parameters():
            for r in range(replicas or 1):
                values = p.detach()[r] if replicas else p.detach()
                tag = f"replica{r}/" if replicas else ""
                self.writer.add_histogram(f"{tag}weights/{name}", values.float().cpu(), step)

    def probes(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            prefix, step = _prefix(row), row["step"]
            if row.get("mean_hidden_angle") is not None:
                self.writer.add_scalar(f"{prefix}probes/mean_hidden_angle",
                                       row["mean_hidden_angle"], step)  # fmt: skip
            for layer, values in (row.get("layers") or {}).items():
                for key, value in _numbers(values):
                    self.writer.add_scalar(f"{prefix}probes/{layer}/{key}", value, step)

    def close(self) -> None:
        self.writer.close()


def _prefix(row: dict[str, Any]) -> str:
    return f"replica{row['replica']}/" if "replica" in row else ""


def _numbers(row: dict[str, Any], skip: tuple[str, ...] = ()) -> list[tuple[str, float]]:
    numeric = (int, float)
    return [(k, float(v)) for k, v in row.items()
            if k not in skip and isinstance(v, numeric) and not isinstance(v, bool)]  # fmt: skip
