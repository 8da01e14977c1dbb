"""scripts/final_probes.py: each replica's last probe per layer, mean and s.d. over them."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "final_probes.py"
spec = importlib.util.spec_from_file_location("final_probes", SCRIPT)
final_probes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(final_probes)


def _probe(step: int, replica: int | None, angle: float, apical: float | None = None) -> dict:
    layer = {"angle": angle} | ({} if apical is None else {"apical": apical})
    row = {"step": step, "layers": {"1": layer, "3": {"angle": 0.0}}}
    return row if replica is None else row | {"replica": replica}


def _folder(path: Path, probes: list[dict]) -> Path:
    path.mkdir()
    (path / "probes.jsonl").write_text("".join(json.dumps(p) + "\n" for p in probes))
    return path


def test_last_probe_of_each_replica_and_their_mean_and_sd(tmp_path):
    probes = [_probe(0, r, 90.0, 5.0) for r in range(3)]
    probes += [_probe(10, r, a, ap) for r, (a, ap) in enumerate([(30, 1), (40, 2), (50, 3)])]
    table = final_probes.summary(final_probes.last_probes(_folder(tmp_path / "r", probes)))
    assert table["1"]["angle"] == pytest.approx((40.0, 10.0))  # of 30, 40, 50
    assert table["1"]["apical"] == pytest.approx((2.0, 1.0))
    assert table["3"] == {"angle": (0.0, 0.0)} and "delta_angle" not in table["1"]


def test_a_run_without_replicas_has_no_sd(tmp_path):
    probes = [_probe(0, None, 90.0), _probe(10, None, 35.0)]
    table = final_probes.summary(final_probes.last_probes(_folder(tmp_path / "one", probes)))
    assert table["1"]["angle"] == (35.0, None)


def test_a_folder_without_probes_is_one_error_line(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(_folder(tmp_path / "e", []))],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and done.stderr.startswith("error: no probes in")
    assert len(done.stderr.strip().splitlines()) == 1
