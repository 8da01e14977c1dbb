"""Sweeps: the declared grid, the tables of a tiny run, and a row reproduced alone."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from itertools import product

import pytest

import apical
from apical.errors import ApicalError
from apical.experiments import load
from apical.experiments.sweep import (
    LAYER_COLUMNS,
    RESULT_COLUMNS,
    SUMMARY_COLUMNS,
    expand,
)
from apical.train import TrainConfig, train


def test_depth_sweep_expands_to_exactly_the_declared_grid():
    points = expand(load("sweep-depth").spec)
    datasets, depths = ["mnist", "fashion-mnist"], [1, 2, 3, 4, 6, 8]
    variants = ["burstprop", "burstprop-noZ", "fa", "backprop"]
    assert [tuple(p.coords.values()) for p in points] == list(product(datasets, depths, variants))
    for p in points:
        cfg = p.config
        assert cfg.dataset == p.coords["dataset"]
        assert cfg.model_options["hidden"] == [500] * p.coords["depth"]
        assert cfg.seeds == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        assert cfg.lr_scales == [0.3, 1.0, 3.0] * 3
        recurrent = cfg.rule_options.get("recurrent")
        assert (cfg.rule, recurrent) == {
            "burstprop": ("burstprop", True), "burstprop-noZ": ("burstprop", False),
            "fa": ("fa", None), "backprop": ("backprop", None),
        }[p.coords["variant"]]  # fmt: skip


def test_init_sweep_expands_to_exactly_the_declared_grid():
    points = expand(load("sweep-init").spec)
    gains = [0.25, 0.5, 1.0, 2.0, 3.6, 5.0]
    assert len(points) == 6 * 4
    assert [p.config.model_options for p in points[::4]] == [
        {"hidden": [500, 500, 500], "init_gain": g} for g in gains
    ]
    assert len({p.label for p in points}) == len(points)


def _read(path):
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(("name", "axis"), [("sweep-depth", "depth"), ("sweep-init", "gain")])
def test_tiny_sweep_writes_tables_with_the_declared_columns(tmp_path, name, axis):
    out = subprocess.run(
        [sys.executable, "-m", "apical.cli", "reproduce", name, "--preset", "tiny",
         "--out", str(tmp_path), "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    folder = tmp_path / f"{name}-tiny"
    results, layers = _read(folder / "results.csv"), _read(folder / "layers.csv")
    summary = _read(folder / "summary.csv")
    assert list(results[0]) == ["dataset", axis, "variant", *RESULT_COLUMNS]
    assert list(layers[0]) == ["dataset", axis, "variant", *LAYER_COLUMNS]
    assert list(summary[0]) == ["dataset", axis, "variant", *SUMMARY_COLUMNS]
    assert len(results) == 4 * 2 * 2  # points x seeds x lr scales
    hidden = {"sweep-depth": {"1": 1, "2": 2}, "sweep-init": {"0.5": 3, "2.0": 3}}[name]
    assert len(layers) == sum(hidden[r[axis]] for r in results)
    for row in results:
        assert row["diverged"] == "False"
        for key in ("test_error", "val_error", "best_val_error", "lr", "seconds"):
            assert math.isfinite(float(row[key])), key
        assert 0 <= float(row["test_error"]) <= 100
    for row in layers:
        assert 0 <= float(row["angle"]) <= 180
        if row["variant"] == "burstprop":
            assert float(row["apical"]) > 0
        else:
            assert row["apical"] == "nan"
    for point in {r["point"] for r in results}:  # one chosen lr per point, for every seed
        chosen = {r["lr_scale"] for r in results if r["point"] == point and r["chosen"] == "True"}
        assert len(chosen) == 1
    assert len(summary) == 4
    assert (folder / "error.png").stat().st_size > 0 and (folder / "layers.png").stat().st_size
    assert "test err %" in out.stdout


def test_a_recorded_row_is_reproduced_by_its_seed_alone(tmp_path):
    apical.reproduce("sweep-depth", preset="tiny", out=tmp_path)
    point = expand(load("sweep-depth").with_preset("tiny").spec)[1]  # digits, depth 1, backprop
    results = _read(tmp_path / "sweep-depth-tiny" / "results.csv")
    row = next(r for r in results if r["point"] == point.label and r["seed"] == "1"
               and r["lr_scale"] == "3.0")  # fmt: skip
    alone = TrainConfig.from_dict({**point.config.to_dict(), "seeds": [1], "lr_scales": [3.0]})
    final = train(alone, progress=False).history[-1]
    assert 100 * (1 - final["test_accuracy"]) == pytest.approx(float(row["test_error"]), abs=1e-5)
    assert 100 * (1 - final["val_accuracy"]) == pytest.approx(float(row["val_error"]), abs=1e-5)


def _parse(body, origin):
    from apical.experiments import parse_body

    return parse_body("sweep", body, origin)


def test_sweep_mistakes_name_the_problem():
    with pytest.raises(ApicalError, match="no preset 'gpu'; presets: cpu, tiny"):
        load("sweep-depth").with_preset("gpu")
    base = {"seeds": [0]}
    with pytest.raises(ApicalError, match=r"s\.toml: variant 'sgd' has no \[variants\] table"):
        _parse({**base, "axes": {"variant": ["sgd"]}}, "s.toml")
    with pytest.raises(ApicalError, match="every axis needs a non-empty list"):
        _parse({**base, "axes": {"depth": []}}, "s.toml")
    with pytest.raises(ApicalError, match="unknown config key epoch"):
        _parse({**base, "axes": {"epoch": [1]}}, "s.toml")
    with pytest.raises(ApicalError, match=r"experiment file s\.toml: sweep lacks the key seeds"):
        _parse({"axes": {}}, "s.toml")
