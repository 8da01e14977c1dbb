"""Matplotlib without a screen, and the one way figures are written."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from apical.run_folder import atomic_write

FORMATS = ("png", "pdf", "svg")


def save(fig, path: Path, title: str = "", fontsize: int = 10) -> Path:
    """Title (if any), tight layout, write `path` atomically (its folder created), close."""
    import io

    if title:
        fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    atomic_write(Path(path), buffer.getvalue())
    return Path(path)


__all__ = ["FORMATS", "plt", "save"]
