"""scripts/class_recall.py: per-class recall of a run's checkpoint, per replica."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from apical.train import TrainConfig, train

SCRIPT = Path(__file__).parents[1] / "scripts" / "class_recall.py"
spec = importlib.util.spec_from_file_location("class_recall", SCRIPT)
class_recall = importlib.util.module_from_spec(spec)
spec.loader.exec_module(class_recall)


@pytest.mark.parametrize("seeds", [None, [3, 4]])
def test_recall_per_class_gives_the_runs_accuracy(tmp_path, seeds):
    """Loaded from the checkpoint, each replica's predictions give the test accuracy of its
    last metrics row, and the class-count-weighted mean of the recalls is that accuracy."""
    cfg = TrainConfig(dataset="digits", model="burstprop_mlp", model_options={"hidden": [16]},
                      loss="mse", rule="fa", optimizer="sgd", lr=0.05, epochs=1, batch_size=32,
                      probe_every=0, seeds=seeds, run_dir=str(tmp_path / "run"))  # fmt: skip
    run = train(cfg, progress=False)
    got = class_recall.recall(tmp_path / "run", "test", None)
    assert [r["seed"] for r in got] == (seeds or [0])
    y = class_recall.load_config_data(cfg).y_test
    counts = [int((y == c).sum()) for c in range(10)]
    for r, row in zip(got, run.history[-len(got) :], strict=True):
        assert r["accuracy"] == pytest.approx(row["test_accuracy"], abs=1e-9)
        weighted = sum(n * v for n, v in zip(counts, r["recall"], strict=True)) / sum(counts)
        assert weighted == pytest.approx(r["accuracy"], abs=1e-9)
        assert all(r["recall"][c] == 0 for c in r["never_predicted"])


def test_a_folder_without_a_run_is_one_error_line(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and done.stderr.startswith("error: ")
    assert len(done.stderr.strip().splitlines()) == 1
