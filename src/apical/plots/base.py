"""Matplotlib without a screen, and the one way figures are written."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from apical.errors import ApicalError
from apical.run_folder import atomic_write

FORMATS = ("png", "pdf", "svg")


def check_figure_path(path: Path) -> Path:
    """A figure file the user names: a known format, in a folder that exists."""
    path = Path(path)
    if path.suffix.lstrip(".").lower() not in FORMATS:
        raise ApicalError(
            f"cannot draw {path}: {path.suffix or 'no suffix'} is not a figure format; "
            f"name a .{', .'.join(FORMATS)} file"
        )
    if not path.parent.is_dir():
        raise ApicalError(
            f"cannot draw {path}: the folder {path.parent} does not exist; create it first"
        )
    return path


def save(fig, path: Path, title: str = "", fontsize: int = 10) -> Path:
    """Title (if any), tight layout, write `path` atomically (its folder created), close."""
    import io

    if Path(path).suffix.lstrip(".").lower() not in FORMATS:
        plt.close(fig)
        check_figure_path(path)
    if title:  # wrapped to the figure's width (about 0.6 em per character)
        width = int(fig.get_figwidth() * 72 / (0.6 * fontsize))
        fig.suptitle(textwrap.fill(title, width), fontsize=fontsize)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    atomic_write(Path(path), buffer.getvalue())
    return Path(path)


__all__ = ["FORMATS", "check_figure_path", "plt", "save"]
