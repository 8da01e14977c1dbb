"""Run folders: atomic writes, JSON-lines metrics, checkpoints."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from apical.errors import ApicalError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


Rows = tuple[list[dict], list[dict]]  # a run folder's metrics and probes rows


def folder_rows(run_dir: str | Path | None) -> Rows | None:
    """The metrics and probes rows of a run folder (None when it has no metrics yet)."""
    if run_dir is None or not (Path(run_dir) / "metrics.jsonl").is_file():
        return None
    history = read_jsonl(Path(run_dir) / "metrics.jsonl")
    probes_file = Path(run_dir) / "probes.jsonl"
    return (history, read_jsonl(probes_file) if probes_file.is_file() else []) if history else None


def save_checkpoint(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path, device: torch.device) -> dict:
    if not path.is_file():
        raise ApicalError(f"nothing to resume: no checkpoint at {path}")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a torn or foreign file
        raise ApicalError(
            f"checkpoint {path} is unreadable ({type(e).__name__}); start a new run"
        ) from None
