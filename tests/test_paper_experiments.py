"""The paper experiments run end to end: CIFAR-10 (absent here) on a small synthetic set in
the official file format through the real reader, augmentation, burstprop with Z, the
decoupled optimiser and the run folders; `apical plot` draws the result."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import apical
from apical.augment import crop_flip
from apical.errors import ApicalError
from apical.experiments import load
from apical.experiments.train_runs import RUNNER
from apical.train import train_all
from tests.test_data import write_cifar


def _run(name: str, tmp_path, **overrides):
    """Every run of a shipped experiment on the data in tmp_path, on the CPU."""
    exp = load(name)
    overrides = {"data_dir": str(tmp_path), "device": "cpu", **overrides}
    configs = RUNNER.configs(exp, tmp_path / "runs", overrides)
    return exp, train_all(configs, progress=False, echo=lambda s: None)


def summary(run) -> dict[str, float]:
    last = run.history[-1]
    return {"test_error": 100 * (1 - last["test_accuracy"]),
            "test_top5_error": 100 * (1 - last["test_top5_accuracy"]),
            "angle": run.probes[-1]["mean_hidden_angle"]}  # fmt: skip


def test_cifar10_short_experiment_end_to_end(tmp_path):
    write_cifar(tmp_path / "cifar-10" / "cifar-10-batches-py", n=40)
    _, runs = _run(
        "burstprop-cifar10-short", tmp_path, val_size=40, epochs=2, batch_size=16, probe_every=5
    )
    assert set(runs) == {"burstprop", "burstprop-fixed", "backprop"}
    for label, run in runs.items():
        assert [r["epoch"] for r in run.history] == [1, 2]
        s = summary(run)
        assert 0 <= s["test_error"] <= 100 and math.isfinite(s["angle"])
        assert (tmp_path / "runs" / label / "checkpoint.pt").is_file()
    layers = runs["burstprop"].probes[-1]["layers"]
    assert "apical" in layers["7"]  # the FC hidden layer has Z
    assert runs["burstprop"].model[7].recurrent.shape == (1024, 1024)
    assert runs["burstprop"].model[0].recurrent is None  # conv layers: no Z by default
    assert runs["burstprop-fixed"].model[7].weight.shape == (1480, 2304)  # enlarged FA net
    report = apical.reproduce("burstprop-cifar10-short", out=tmp_path / "exp", resume=True,
                              data_dir=str(tmp_path), device="cpu", val_size=40, epochs=2,
                              batch_size=16, probe_every=5)  # fmt: skip
    assert {r.label: r.verdict for r in report.runs} == dict.fromkeys(
        ("burstprop", "burstprop-fixed", "backprop"), "not checked: shortened to 2 epochs "
        "(declared 20)")  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-m", "apical.cli", "plot", str(tmp_path / "runs")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "runs" / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_crop_flip_is_a_shifted_and_flipped_window():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = crop_flip(x, g, pad=2)
    assert out.shape == x.shape
    g = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(0, 5, (2,), generator=g), torch.randint(0, 5, (2,), generator=g)
    flip = torch.rand(2, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for n in range(2):  # reference, one example at a time
        ref = padded[n, :, dy[n] : dy[n] + 8, dx[n] : dx[n] + 8]
        if flip[n]:
            ref = ref.flip(-1)
        assert torch.equal(out[n], ref)


def test_crop_flip_of_replicas_draws_each_from_its_own_generator():
    x = torch.randn(3, 4, 2, 6, 6)  # (R, N, C, H, W)
    gens = [torch.Generator().manual_seed(s) for s in (5, 6, 5)]
    out = crop_flip(x, gens, pad=2)
    assert out.shape == x.shape
    for r, s in enumerate((5, 6, 5)):
        assert torch.equal(out[r], crop_flip(x[r], torch.Generator().manual_seed(s), pad=2))
    with pytest.raises(ApicalError, match=r"got 2 generators .* one per replica"):
        crop_flip(x, gens[:2])


def test_imagenet_experiment_end_to_end_on_a_tiny_jpeg_tree(tmp_path):
    from tests.test_data import write_image_tree

    write_image_tree(tmp_path / "imagenet", per_class=4)
    _, runs = _run(
        "burstprop-imagenet", tmp_path, val_size=2, epochs=1, batch_size=4, probe_every=2
    )
    for run in runs.values():
        s = summary(run)
        assert s["test_top5_error"] == 0.0  # three classes: the top five hold them all
        assert 0 <= s["test_error"] <= 100
    burst = runs["burstprop"]
    assert burst.model[0].recurrent is None and burst.model[15].feedback.shape == (3, 384)
    assert all(math.isfinite(v["angle"]) for v in burst.probes[-1]["layers"].values())


def test_ep_cifar10_experiment_end_to_end(tmp_path):
    """Laborieux et al.'s protocol through the real reader and augmentation, on a 4-conv net
    of 4 channels per layer and short relaxations (the shipped 128-512 channels and 250
    steps are for a GPU); the network answers at its free fixed point."""
    write_cifar(tmp_path / "cifar-10" / "cifar-10-batches-py", n=40)
    # (the nudge needs one step per layer to reach the first: 6 nudged steps for 5 stages)
    fast = {"form": "primitive", "free_steps": 10, "nudged_steps": 6, "beta": 1.0}
    _, runs = _run(
        "equilibrium-propagation-cifar10", tmp_path, val_size=40, epochs=1, batch_size=16,
        probe_every=2, lr=0.01, output_lr=0.01, model_options={"channels": [4, 4, 4, 4]},
        rule_options=fast,
    )  # fmt: skip
    assert set(runs) == {"symmetric-ce", "one-sided"}
    for run in runs.values():
        s = summary(run)
        assert 0 <= s["test_error"] <= 100 and math.isfinite(s["angle"])
        assert isinstance(run.model, apical.energy.Relaxing)
    first = runs["symmetric-ce"].probes[-1]["layers"]["net.0"]
    assert first["phase_change"] > 0 and first["angle"] < 90  # the target reached layer 1


def test_burstccn_cifar10_experiment_end_to_end(tmp_path):
    """Both feedback variants through the real reader on the NN 2021 conv net (narrow
    channels): symmetric (tied) feedback is W itself throughout, random feedback far from it."""
    write_cifar(tmp_path / "cifar-10" / "cifar-10-batches-py", n=40)
    _, runs = _run(
        "burstccn-cifar10", tmp_path, val_size=40, epochs=1, batch_size=16, probe_every=2,
        model_options={"channels": [4, 4, 4], "fc": 16},
    )  # fmt: skip
    assert set(runs) == {"random-feedback", "symmetric-feedback"}
    for run in runs.values():
        s = summary(run)
        assert 0 <= s["test_error"] <= 100 and math.isfinite(s["angle"])
    first = {k: runs[k].probes[0]["layers"]["2"] for k in runs}  # second conv layer
    assert first["symmetric-feedback"]["feedback_angle"] < 1e-3
    assert first["random-feedback"]["feedback_angle"] > 60
    last = runs["symmetric-feedback"].probes[-1]["layers"]["2"]  # tied: still W after steps
    assert len(runs["symmetric-feedback"].probes) > 1 and last["feedback_angle"] < 1e-3
