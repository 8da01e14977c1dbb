"""scripts/continual_seeds.py: a continual experiment's task curves, mean ± s.d. over seeds."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "continual_seeds.py"
spec = importlib.util.spec_from_file_location("continual_seeds", SCRIPT)
continual_seeds = importlib.util.module_from_spec(spec)
spec.loader.exec_module(continual_seeds)


def _experiment(folder: Path, seed: int, runs: dict[str, list[float | None]]) -> Path:
    """Run folders LABEL/task-T with one finished epoch each (None: a task not finished)."""
    for label, accuracies in runs.items():
        for t, accuracy in enumerate(accuracies):
            task = folder / label / f"task-{t + 1}"
            task.mkdir(parents=True)
            (task / "config.json").write_text(json.dumps({"seed": seed, "epochs": 1}))
            rows = [] if accuracy is None else [{"epoch": 1, "test_accuracy": accuracy}]
            (task / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_mean_and_spread_over_seeds_equal_hand_values(tmp_path):
    a = _experiment(tmp_path / "x", 0, {"net": [0.9, 0.8, 0.7], "mlp": [0.9, 0.5]})
    b = _experiment(tmp_path / "x-seed-1", 1, {"net": [0.7, 0.6, None], "mlp": [0.8, 0.4]})
    table = continual_seeds.summary([a, b])
    assert table["net"]["seeds"] == [0, 1] and table["mlp"]["seeds"] == [0, 1]
    net = table["net"]["tasks"]
    assert [c["mean"] for c in net] == pytest.approx([80.0, 70.0, 70.0])
    assert [c["n"] for c in net] == [2, 2, 1]  # seed 1 has not finished task 3
    assert net[0]["sd"] == pytest.approx(2**0.5 * 10)  # s.d. of 90 and 70
    assert table["mlp"]["tasks"][1]["mean"] == pytest.approx(45.0)


def test_bad_input_gives_one_error_line(tmp_path):
    a = _experiment(tmp_path / "a", 0, {"net": [0.9]})
    b = _experiment(tmp_path / "b", 0, {"net": [0.8]})
    for args, message in [
        ([str(a), str(b)], "seed 0 of net appears in two of the folders given"),
        ([str(tmp_path / "nope")], "is not a folder"),
        ([str(tmp_path)], "no finished task in those folders"),
    ]:
        done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
        assert done.returncode == 1 and done.stderr.strip().startswith("error:"), done.stderr
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
