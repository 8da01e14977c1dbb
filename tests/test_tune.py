"""A sweep on Ray Tune trains what the in-process sweep trains, and resumes from its run
folders without training finished points again (apical.tune)."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray Tune is in the dev extra")

ROOT = Path(__file__).resolve().parents[1]
SWEEP = """
kind = "sweep"
name = "tune-check"
title = "four points"
source = "tests"
claim = "the same rows on Ray"
seeds = [0]
width = 16
[base]
dataset = "digits"
val_size = 0.2
epochs = 2
batch_size = 64
probe_every = 0
probe_epochs = true
probe_size = 32
[axes]
depth = [1, 2]
variant = ["fa", "backprop"]
[variants.fa]
rule = "fa"
lr = 0.05
[variants.backprop]
rule = "backprop"
lr = 0.1
"""
LABELS = ["depth1-fa", "depth1-backprop", "depth2-fa", "depth2-backprop"]


def rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "tune-check" / "results.csv") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def apical(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "apical.cli", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # fmt: skip


def finished(folder: Path) -> list[str]:
    """The points whose run folder holds both epochs' rows."""
    done = []
    for label in LABELS:
        metrics = folder / "tune-check" / label / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().split("\n")) == 3:
            done.append(label)
    return done


def test_a_ray_sweep_gives_the_in_process_rows_and_resumes_only_what_is_left(tmp_path):
    (tmp_path / "sweep.toml").write_text(SWEEP)
    exp = str(tmp_path / "sweep.toml")
    here = apical("reproduce", exp, "--out", str(tmp_path / "here"))
    assert here.wait(timeout=300) == 0, here.stderr.read()
    # two trials at a time (1 CPU each), stopped once two points have finished
    first = apical("reproduce", exp, "--out", str(tmp_path / "ray"), "--ray")
    deadline = time.time() + 240
    while len(finished(tmp_path / "ray")) < 2 and time.time() < deadline:
        time.sleep(0.1)
    assert first.poll() is None, first.stderr.read()
    done_before = finished(tmp_path / "ray")
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=120) != 0
    assert len(done_before) >= 2 and len(finished(tmp_path / "ray")) < 4
    stamps = {x: (tmp_path / "ray" / "tune-check" / x / "checkpoint.pt").stat().st_mtime_ns
              for x in done_before}  # fmt: skip
    again = apical("reproduce", exp, "--out", str(tmp_path / "ray"), "--ray", "--resume")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    for label in done_before:
        assert f"[{label}] finished (2 epochs)" in err
        path = tmp_path / "ray" / "tune-check" / label / "checkpoint.pt"
        assert path.stat().st_mtime_ns == stamps[label]  # not trained again
    trained = [x for x in LABELS if f"[{x}] rule" in err]
    assert sorted(trained) == sorted(set(LABELS) - set(done_before))
    assert rows(tmp_path / "ray") == rows(tmp_path / "here")
