"""scripts/epoch_table.py: per-epoch test errors and their comparison with a baseline."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "epoch_table.py"
spec = importlib.util.spec_from_file_location("epoch_table", SCRIPT)
epoch_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(epoch_table)


def _run_folder(path: Path, accuracies: list[float]) -> Path:
    path.mkdir()
    rows = [{"epoch": e + 1, "test_accuracy": a} for e, a in enumerate(accuracies)]
    rows.insert(0, {"epoch": 0, "val_accuracy": 0.5})  # a row without test_accuracy is skipped
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_errors_and_comparison_equal_hand_values(tmp_path):
    base = epoch_table.test_errors(_run_folder(tmp_path / "base", [0.90] * 6))
    accuracies = [0.88, 0.91, 0.89, 0.89, 0.89, 0.92]
    run = epoch_table.test_errors(_run_folder(tmp_path / "run", accuracies))
    assert base == pytest.approx({e: 10.0 for e in range(1, 7)})
    s = epoch_table.compare(base, run)
    # differences to the baseline, epoch by epoch: +2, -1, +1, +1, +1, -2
    assert s["epochs"] == 6 and s["worse"] == 4
    assert s["mean_diff"] == pytest.approx(2 / 6)
    assert s["mean_diff_last5"] == pytest.approx(0.0)
    assert s["mean"] == pytest.approx(10 + 2 / 6) and s["base_mean"] == pytest.approx(10.0)


def test_a_run_of_replicas_gives_their_mean_per_epoch(tmp_path):
    folder = tmp_path / "replicas"
    folder.mkdir()
    rows = [{"epoch": e, "replica": r, "test_accuracy": a}
            for e, accs in [(1, [0.90, 0.80, 0.85]), (2, [0.95, 0.91, 0.93])]
            for r, a in enumerate(accs)]  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert epoch_table.test_errors(folder) == pytest.approx({1: 15.0, 2: 7.0})


def test_compare_uses_only_shared_epochs():
    s = epoch_table.compare({1: 5.0, 2: 4.0, 3: 3.0}, {1: 6.0, 2: 4.0})
    assert s["epochs"] == 2 and s["mean_diff"] == pytest.approx(0.5) and s["worse"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing", "missing2"], "no metrics.jsonl in missing"),
        (["base", "run", "--epochs", "1,x"], "--epochs '1,x' is not a comma-separated"),
    ],
)
def test_bad_input_gives_one_error_line(tmp_path, args, message):
    _run_folder(tmp_path / "base", [0.9, 0.9])
    _run_folder(tmp_path / "run", [0.8, 0.8])
    cmd = [sys.executable, SCRIPT, *args]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.strip().startswith(f"error: {message}")
    assert len(out.stderr.strip().splitlines()) == 1
