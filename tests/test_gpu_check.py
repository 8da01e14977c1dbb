"""scripts/gpu_check.py: without CUDA its CPU half (every rule trains, finite losses, one
report); with CUDA every rule's weights agree with the CPU's."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from apical.rules import RULES

ROOT = Path(__file__).resolve().parents[1]


def check(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "report.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", str(out), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback, on a CPU machine")
def test_without_cuda_every_rule_trains_on_the_cpu_and_the_report_says_so(tmp_path):
    report = check(tmp_path, "--steps", "2")
    assert report["machine"]["cuda"] is None and report["benchmarks"] == "skipped: no CUDA"
    assert set(report["rules"]) == set(RULES)
    for rule, row in report["rules"].items():
        assert math.isfinite(row["cpu_loss"]) and row["pass"], rule
    assert report["pass"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_rules_agree_with_the_cpu(tmp_path):
    report = check(tmp_path, "--steps", "5", "--budget", "0")
    failed = {r: row for r, row in report["rules"].items() if not row["pass"]}
    assert not failed
