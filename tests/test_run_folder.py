"""Run folders never lose or mix a run: one writer at a time, no silent overwrite, a resumed
config must match (epochs aside, where the result is the same as a run that long from the
start), kill -9 at any moment leaves a loadable checkpoint and no temporary file after the
next start, SIGTERM saves within the epoch and the run resumes exactly, and rows are JSON
with null for missing values."""

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
from apical.run_folder import RunFolder, atomic_write, differences, read_rows
from apical.train import TrainConfig, train


def _cfg(run_dir=None, **kw) -> TrainConfig:
    base = dict(dataset="digits", model="mlp", model_options={"hidden": [16]}, rule="fa",
                epochs=3, batch_size=64, lr=0.05, probe_every=0, device="cpu",
                run_dir=None if run_dir is None else str(run_dir))  # fmt: skip
    return TrainConfig.from_dict({**base, **kw})


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _apical(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "apical.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)  # fmt: skip


def _train_args(run: Path, hidden: str, batch: str, epochs: str, probe: str) -> list[str]:
    """`apical train` on digits with a plain MLP into the run folder `run`."""
    return ["train", "--dataset", "digits", "--hidden", hidden, "--batch-size", batch,
            "--epochs", epochs, "--probe-every", probe, "--device", "cpu", "--run-dir",
            str(run)]  # fmt: skip


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_rows_are_json_with_null_for_missing_values(tmp_path):
    train(_cfg(tmp_path, epochs=1), progress=False)  # no probes: no angle
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text
    row = json.loads(text.splitlines()[0], parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert row["mean_hidden_angle"] is None and 0 < row["test_accuracy"] <= 1


def test_a_finished_run_is_never_overwritten(tmp_path):
    train(_cfg(tmp_path, epochs=2), progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ApicalError, match=r"already holds a finished run \(2 epochs\); continue"):
        train(_cfg(tmp_path, epochs=2, lr=0.1), progress=False)
    proc = _apical("train", "--dataset", "digits", "--epochs", "1", "--run-dir", str(tmp_path))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and _one_error_line(err) == (
        f"error: {tmp_path} already holds a finished run (2 epochs); continue it with "
        "--resume, or choose another folder"
    )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_resume_refuses_a_changed_config_naming_the_fields(tmp_path):
    train(_cfg(tmp_path, epochs=1), progress=False)
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(ApicalError, match=r"differs in lr \(0.05 there, 0.1 now\), seed \(0 there"):
        train(_cfg(tmp_path, lr=0.1, seed=1), resume=True, progress=False)
    assert (tmp_path / "config.json").read_text() == before
    with pytest.raises(ApicalError, match="nothing to resume: no run in"):
        train(_cfg(tmp_path / "empty"), resume=True, progress=False)
    # where the data lives and what runs it are not what the run is
    train(_cfg(tmp_path, epochs=1, data_dir="/elsewhere"), resume=True, progress=False)


@pytest.mark.parametrize("schedule", ["constant", "step"])
def test_an_extended_run_equals_one_configured_that_long(tmp_path, schedule):
    kw = dict(schedule=schedule, step_every=1, step_factor=0.5, optimizer="adam", lr=0.003)
    full = train(_cfg(tmp_path / "full", epochs=4, **kw), progress=False)
    train(_cfg(tmp_path / "short", epochs=2, **kw), progress=False)
    extended = train(_cfg(tmp_path / "short", epochs=4, **kw), resume=True, progress=False)
    assert _same(_weights(full.model), _weights(extended.model))
    saved = json.loads((tmp_path / "short" / "config.json").read_text())
    assert saved["epochs"] == 4  # the folder now says what it holds
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in full.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in extended.history]


def test_a_cosine_run_cannot_be_extended(tmp_path):
    train(_cfg(tmp_path, epochs=2, schedule="cosine"), progress=False)
    with pytest.raises(
        ApicalError,
        match="its cosine schedule anneals over epochs = 2, so a run "
        "of 4 epochs would have had other learning rates",
    ):
        train(_cfg(tmp_path, epochs=4, schedule="cosine"), resume=True, progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 2
    train(_cfg(tmp_path / "constant", epochs=2), progress=False)
    with pytest.raises(ApicalError, match="has trained 2 epochs already; resume with epochs >= 2"):
        train(_cfg(tmp_path / "constant", epochs=1), resume=True, progress=False)
    assert json.loads((tmp_path / "constant" / "config.json").read_text())["epochs"] == 2


def test_a_run_that_saves_nothing_leaves_no_folder(tmp_path):
    from apical.errors import DivergedError

    folder = tmp_path / "run"
    with pytest.raises(DivergedError, match="no checkpoint was written"):
        train(_cfg(folder, lr=1e30, loss="mse", rule="backprop", momentum=0.0, epochs=1,
                   batch_size=8), progress=False)  # fmt: skip
    assert not folder.exists()


def test_a_second_writer_is_refused_and_the_first_keeps_its_files(tmp_path):
    """A second `apical train` into a folder being written gets one line naming the
    process that holds it; the first run goes on and its files are its own."""
    run = tmp_path / "run"
    args = _train_args(run, hidden="64", batch="8", epochs="6", probe="0")
    first = _apical(*args)
    deadline = time.time() + 120
    while not (run / "checkpoint.pt").exists():  # wait until it trains, then freeze it
        assert time.time() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)
    try:
        second = _apical(*args[:-2], "--lr", "0.3", "--run-dir", str(run))
        _, err = second.communicate(timeout=120)
        line = _one_error_line(err)
        assert second.returncode == 2
        host = os.uname().nodename
        assert line == (
            f"error: run folder {run} is in use by process {first.pid} on {host}; wait for it "
            "to finish or choose another folder"
        )
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert json.loads((run / "config.json").read_text())["lr"] == 0.05  # the first's config
    assert [r["epoch"] for r in read_rows(run / "metrics.jsonl")] == list(range(1, 7))
    alone = train(_cfg(None, model_options={"hidden": [64]}, rule="backprop", batch_size=8,
                       epochs=6), progress=False)  # fmt: skip
    saved = RunFolder(run).checkpoint()
    assert _same(saved["model"], _weights(alone.model))
    assert not (run / ".lock").exists()


def test_kill_9_during_checkpoint_writes_never_leaves_a_torn_run(tmp_path):
    """Killed (SIGKILL) in the middle of a checkpoint write, again and again: the checkpoint
    always loads, the next start removes the temporary file of the killed write, and the
    run resumed to its end equals the uninterrupted run."""
    run = tmp_path / "run"
    args = _train_args(run, hidden="1024,1024", batch="8", epochs="12", probe="0")
    stale: set[Path] = set()
    for _ in range(4):
        resume = ["--resume"] if (run / "config.json").exists() else []
        proc = _apical(*args, *resume)
        deadline = time.time() + 120
        while not (writing := set(run.glob(".checkpoint.pt.tmp-*")) - stale):
            assert time.time() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.001)
        proc.kill()  # a 9 MB checkpoint is being written
        proc.wait()
        assert not stale & set(run.glob(".*")), "the last kill's temporary file was not removed"
        stale = writing & set(run.glob(".*"))
        if (run / "checkpoint.pt").exists():
            state = RunFolder(run).checkpoint()
            assert 1 <= state["epoch"] <= 12 and set(state["model"]) == {
                "1.weight", "1.bias", "3.weight", "3.bias", "5.weight", "5.bias"}  # fmt: skip
    assert stale, "no kill landed in a write"
    proc = _apical(*args, "--resume")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert not list(run.glob(".*")), list(run.glob(".*"))  # no temporary file, no lock
    alone = train(_cfg(None, model_options={"hidden": [1024, 1024]}, rule="backprop",
                       batch_size=8, epochs=12), progress=False)  # fmt: skip
    assert _same(RunFolder(run).checkpoint()["model"], _weights(alone.model))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_within_the_epoch_and_the_run_resumes_exactly(tmp_path, sig):
    run = tmp_path / "run"
    args = _train_args(run, hidden="64", batch="4", epochs="3", probe="40")
    proc = _apical(*args, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout.readline().startswith("epoch   1")  # in epoch 2 now
    time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    line = _one_error_line(err)
    assert proc.returncode == 130
    name = signal.Signals(sig).name
    assert line.startswith(f"stopped: interrupted by {name} in epoch 2, after step ")
    assert line.endswith(f"the run is saved in {run}; continue it with --resume")
    state = RunFolder(run).checkpoint()
    assert state["epoch"] == 1 and 0 < state["batch"] < 360  # within epoch 2
    proc = _apical(*args, "--resume")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    alone = train(_cfg(tmp_path / "alone", model_options={"hidden": [64]}, rule="backprop",
                       batch_size=4, probe_every=40), progress=False)  # fmt: skip
    assert _same(RunFolder(run).checkpoint()["model"], _weights(alone.model))
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in alone.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"}
                     for r in read_rows(run / "metrics.jsonl")]  # fmt: skip
    assert read_rows(run / "probes.jsonl") == alone.probes


def test_rows_written_after_the_checkpoint_are_dropped_on_resume(tmp_path):
    folder = RunFolder(tmp_path)
    with folder.writer():
        folder.begin({"a": 1}, resume=False)
        folder.save({"step": 2}, {"metrics": [{"epoch": 1}, {"epoch": 2}]})
        folder.write_rows("metrics", [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}])  # then killed
    with folder.writer():
        assert folder.begin({"a": 1}, resume=True)
        state, rows = folder.restore()
    assert state == {"step": 2} and rows == {"metrics": [{"epoch": 1}, {"epoch": 2}]}
    assert folder.rows() == [{"epoch": 1}, {"epoch": 2}]


def test_stale_temporary_files_go_and_writes_are_atomic(tmp_path):
    (tmp_path / ".checkpoint.pt.tmp-abc").write_bytes(b"x" * 1000)
    (tmp_path / ".keep-me").write_text("not ours")
    with RunFolder(tmp_path).writer():
        assert not (tmp_path / ".checkpoint.pt.tmp-abc").exists()
    assert (tmp_path / ".keep-me").exists()
    atomic_write(tmp_path / "f.json", b"{}")
    assert (tmp_path / "f.json").read_bytes() == b"{}"
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_folder_named_relative_or_absolute_is_the_same_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "task-1").mkdir(parents=True)
    saved = {"init_from": str(tmp_path / "runs" / "task-1"), "lr": 0.1}
    assert differences(saved, {"init_from": "runs/task-1", "lr": 0.1}) == []
    assert differences(saved, {"init_from": "runs/task-2", "lr": 0.1}) == ["init_from"]
    assert differences(saved, {"init_from": None, "lr": 0.2}) == ["init_from", "lr"]
