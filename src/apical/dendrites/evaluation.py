"""Trained segregated-dendrite nets from run folders, and the paper's repeated weight tests.

eLife Figs. 6B, 8B, 8D and 9B give "spreads (min-max) of the results of repeated weight
tests (n = 20)": one trained net, its final weights tested 20 times on the 10,000 test
images, the repeats differing only in their Poisson spikes (§10). Here each
repeat r draws its spikes from keys of its own (`weight_test_keys`), so a repeat's result
does not depend on how the images are batched, and the same repeat gives the same error.

Section numbers (§) refer to docs/models/segregated-dendrites.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from apical.dendrites.network import SegregatedNet, segregated_dendrites
from apical.errors import ApicalError
from apical.keyed import example_keys
from apical.run_folder import RunFolder

# Weight-test keys use the "epoch" slot of example_keys far above any training epoch, so
# they never coincide with a training presentation's draws.
WEIGHT_TEST_EPOCH = 1_000_000


def run_config(run_dir: Path) -> dict[str, Any]:
    """The config.json of a segregated_dendrites run folder (one clear error otherwise)."""
    config = RunFolder(run_dir).config()
    if config is None:
        raise ApicalError(f"{run_dir} is not a run folder (no config.json in it)")
    if config.get("model") != "segregated_dendrites":
        raise ApicalError(f"{run_dir} is not a segregated_dendrites run")
    return config


def load_trained(
    run_dir: Path, input_shape, n_classes: int, compile: bool = False
) -> tuple[SegregatedNet, dict]:
    """The net of a run folder with its checkpoint's weights; its time steps compiled
    with `compile` (which pays for long tests, not for a few presentations)."""
    config = run_config(run_dir)
    options = {**config.get("model_options", {}), "compile": compile}
    net = segregated_dendrites(input_shape, n_classes, **options)
    saved = RunFolder(run_dir).checkpoint("cpu")
    net.load_state_dict(saved["model"])
    return net, config


def weight_test_keys(repeat: int, n: int, device: torch.device | str = "cpu") -> Tensor:
    """Keys (n,) of the test images in repeat `repeat` of the weight tests."""
    return example_keys(repeat, WEIGHT_TEST_EPOCH, torch.arange(n, device=device))


@torch.no_grad()
def weight_tests(net: SegregatedNet, x: Tensor, y: Tensor, repeats: int = 20) -> Tensor:
    """Test error (%) of each of `repeats` test passes of `net` over (x, y): (repeats,)
    float64. Class = largest mean output soma of a test phase (eLife Methods)."""
    if repeats < 1:
        raise ApicalError(f"weight tests need at least one repeat, got {repeats}")
    if len(x) != len(y) or len(x) == 0:
        raise ApicalError(f"weight tests need as many labels as images, got {len(x)} and {len(y)}")
    errors = torch.empty(repeats, dtype=torch.float64)
    for r in range(repeats):
        wrong = net(x, weight_test_keys(r, len(x), x.device)).argmax(1) != y
        errors[r] = 100.0 * wrong.double().mean()
    return errors


def spread(errors: Tensor) -> dict[str, float]:
    """Mean, s.d. (n - 1), min and max of the repeats' test errors (%)."""
    sd = float(errors.std()) if len(errors) > 1 else 0.0
    return {
        "repeats": len(errors),
        "mean": float(errors.mean()),
        "sd": sd,
        "min": float(errors.min()),
        "max": float(errors.max()),
    }
