"""Shared fixtures: where the real datasets are, and whether their absence fails or skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


def dataset_dir(name: str) -> Path:
    """The folder of a real dataset under $APICAL_DATA; skip (or fail under
    APICAL_REQUIRE_DATA=1) with the reason when it is absent."""
    root = os.environ.get("APICAL_DATA")
    folder = Path(root) / name if root else None
    if folder is not None and folder.is_dir() and any(folder.iterdir()):
        return folder
    reason = f"dataset {name} not found (APICAL_DATA={root!r})"
    if os.environ.get("APICAL_REQUIRE_DATA") == "1":
        pytest.fail(reason + " but APICAL_REQUIRE_DATA=1")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
