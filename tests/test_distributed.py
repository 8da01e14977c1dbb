"""Data-parallel training over 2 gloo processes equals one process (apical.distributed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from apical.errors import ApicalError
from apical.run_folder import RunFolder
from apical.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
# float32 sums in another order (the shards' weighted sum against one batch mean): the
# weights of a few epochs agree to this, relative to the largest weight
RTOL = 1e-5

BASE = dict(dataset="digits", val_size=0.2, train_size=600, batch_size=51, epochs=2,
            probe_every=0, probe_epochs=True, probe_size=64, device="cpu", seed=3)  # fmt: skip
SHORT = {"hidden": [20], "phase_min": 25, "window": 10, "test_steps": 60, "test_window": 40,
         "compile": False}  # fmt: skip
CONFIGS = {
    "backprop": dict(BASE, rule="backprop", model_options={"hidden": [32, 32]}, lr=0.1,
                     momentum=0.9),
    "fa": dict(BASE, rule="fa", model_options={"hidden": [32, 32]}, lr=0.05),
    "kolen_pollack": dict(BASE, rule="kolen_pollack", model_options={"hidden": [32]}, lr=0.05,
                          weight_decay=1e-3),
    "burstprop": dict(BASE, rule="burstprop", model="burstprop_mlp", loss="mse",
                      model_options={"hidden": [32, 32]}, optimizer="decoupled_sgd", lr=0.01,
                      rule_options={"learn_feedback": True, "recurrent": True}),
    "segregated_dendrites": dict(BASE, rule="segregated_dendrites", model="segregated_dendrites",
                                 model_options=SHORT, loss="mse", standardize=False, lr=0.05,
                                 train_size=200, batch_size=15, probe_every=0,
                                 probe_epochs=False),
    # sparse directions: the segments' rows
    "active_dendrites": dict(BASE, rule="backprop", model="active_dendrites", optimizer="adam",
                             lr=0.01, model_options={"hidden": [32], "context_size": 1,
                                                     "segments": 3}),
}  # fmt: skip


def torchrun(args: list[str], **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, **kw)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    model = RunFolder(folder).checkpoint()["model"]
    flat = {}
    for k, v in model.items():
        if isinstance(v, dict):  # the carried simulation state
            for part, tensors in v.items():
                flat.update({f"{k}.{part}.{i}": t for i, t in enumerate(tensors)})
        else:
            flat[k] = v
    return flat


def assert_same_run(one: Path, two: Path) -> None:
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys()
    for k in a:
        scale = max(float(a[k].abs().max()), 1e-3)
        assert torch.allclose(a[k], b[k], rtol=0, atol=RTOL * scale), k
    for stream in ("metrics", "probes"):
        rows_a, rows_b = RunFolder(one).rows(stream), RunFolder(two).rows(stream)
        assert len(rows_a) == len(rows_b)
        for ra, rb in zip(rows_a, rows_b, strict=True):
            assert ra.keys() == rb.keys()
            for k in ra:
                if k == "seconds":
                    continue
                if isinstance(ra[k], float):
                    assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-4), (stream, k)
                elif k != "layers":
                    assert ra[k] == rb[k], (stream, k)


def test_two_gloo_processes_train_what_one_process_trains(tmp_path, digits_ok=None):
    configs = {k: dict(v, run_dir=str(tmp_path / "two" / k)) for k, v in CONFIGS.items()}
    (tmp_path / "configs.json").write_text(json.dumps(configs))
    done = torchrun([str(ROOT / "tests" / "distributed_worker.py"), str(tmp_path / "configs.json")])
    assert done.returncode == 0, done.stderr[-3000:]
    for label, fields in CONFIGS.items():
        train(TrainConfig.from_dict(dict(fields, run_dir=str(tmp_path / "one" / label))),
              progress=False)  # fmt: skip
        assert_same_run(tmp_path / "one" / label, tmp_path / "two" / label)
    # the checkpoint knows its world size: resuming on another is refused in one line
    extended = TrainConfig.from_dict(dict(configs["fa"], epochs=3))
    with pytest.raises(ApicalError, match="trained on 2 processes and is resumed on 1"):
        train(extended, resume=True, progress=False)


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of the launched process of `rank` (its RANK in /proc/PID/environ)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        ppid = int(next(x for x in status.splitlines() if x.startswith("PPid:")).split()[1])
        if f"RANK={rank}".encode() in env and f"APICAL_TEST_RUN={launcher}".encode() in env \
                and ppid != 0:  # fmt: skip
            return int(pid)
    return None


def test_a_killed_process_stops_the_run_in_one_line_and_resume_continues_exactly(tmp_path):
    fields = dict(BASE, rule="fa", model_options={"hidden": [64]}, lr=0.05, batch_size=8,
                  epochs=6, probe_epochs=False)  # fmt: skip
    (tmp_path / "run.json").write_text(json.dumps(fields))
    args = ["--config", str(tmp_path / "run.toml"), "--run-dir", str(tmp_path / "two")]
    toml = "\n".join(f"{k} = {json.dumps(v) if not isinstance(v, dict) else _inline(v)}"
                     for k, v in fields.items())  # fmt: skip
    (tmp_path / "run.toml").write_text(toml + "\n")
    cmd = [sys.executable, "-m", "apical.cli", "train", *args, "--nproc", "2"]
    env = dict(os.environ, APICAL_TEST_RUN=str(os.getpid()))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env)  # fmt: skip
    metrics = tmp_path / "two" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.05)
    pid = _rank_pid(os.getpid(), 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: another process of the distributed run failed")
    assert "--resume on 2 processes" in lines[0]
    epochs_done = len(RunFolder(tmp_path / "two").rows())
    assert 1 <= epochs_done < 6
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, cwd=ROOT,
                             timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    train(TrainConfig.from_dict(dict(fields, run_dir=str(tmp_path / "one"))), progress=False)
    assert_same_run(tmp_path / "one", tmp_path / "two")


def _inline(d: dict) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in d.items()) + " }"
