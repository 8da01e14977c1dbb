"""Repeated weight tests of trained segregated-dendrite nets (eLife Figs. 6B, 8B: n = 20)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from apical.data import load_dataset
from apical.dendrites.config import dendrite_config
from apical.dendrites.evaluation import (
    load_trained,
    run_config,
    spread,
    weight_test_keys,
    weight_tests,
)
from apical.dendrites.network import SegregatedNet
from apical.errors import ApicalError
from tests.conftest import dataset_dir

ROOT = Path(__file__).resolve().parents[1]


def images(n: int, pixels: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, pixels, generator=g) * (torch.rand(n, pixels, generator=g) < 0.3)


def test_each_repeat_is_its_own_keyed_test_pass():
    # float64: BLAS may round a batch of 60 and one of 25 differently in the last bit
    # (it does on CI's CPU); at that precision a flipped spike (a 1/steps jump in a rate,
    # which the tolerance catches) is vanishingly unlikely.
    net = SegregatedNet(
        dendrite_config(
            n_inputs=40, hidden=(12,), n_outputs=4, test_steps=40, test_window=20, compile=False
        )
    ).double()
    x, y = images(60, 40).double(), torch.arange(60) % 4
    errors = weight_tests(net, x, y, repeats=3)
    for r in range(3):
        keys = weight_test_keys(r, 60)
        whole = net(x, keys)
        halves = torch.cat([net(x[:25], keys[:25]), net(x[25:], keys[25:])])
        torch.testing.assert_close(whole, halves, rtol=1e-12, atol=1e-12)  # batch-independent
        expected = 100.0 * float((whole.argmax(1) != y).double().mean())
        assert errors[r].item() == pytest.approx(expected, abs=1e-12)
    assert not torch.equal(net(x, weight_test_keys(0, 60)), net(x, weight_test_keys(1, 60)))
    assert torch.equal(weight_tests(net, x, y, repeats=3), errors)  # same repeat, same result


def test_rate_mode_repeats_agree_exactly():
    net = SegregatedNet(dendrite_config(n_inputs=40, hidden=(12,), n_outputs=4, mode="rate"))
    x, y = images(50, 40), torch.arange(50) % 4
    errors = weight_tests(net, x, y, repeats=4)
    expected = 100.0 * float((net(x).argmax(1) != y).double().mean())
    assert errors.tolist() == pytest.approx([expected] * 4, abs=1e-12)
    assert spread(errors)["sd"] == 0.0


def test_spread_is_mean_sd_min_max():
    s = spread(torch.tensor([3.0, 4.0, 5.0, 8.0], dtype=torch.float64))
    assert s == pytest.approx({"repeats": 4, "mean": 5.0, "sd": (14 / 3) ** 0.5, "min": 3.0,
                               "max": 8.0})  # fmt: skip


def test_bad_run_folders_and_arguments_give_one_clear_line(tmp_path):
    with pytest.raises(ApicalError, match="not a run folder"):
        run_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model": "mlp"}))
    with pytest.raises(ApicalError, match="not a segregated_dendrites run"):
        run_config(tmp_path)
    net = SegregatedNet(dendrite_config(n_inputs=4, hidden=(3,), n_outputs=2))
    with pytest.raises(ApicalError, match="at least one repeat"):
        weight_tests(net, torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), repeats=0)
    with pytest.raises(ApicalError, match="as many labels as images"):
        weight_tests(net, torch.zeros(2, 4), torch.zeros(3, dtype=torch.long))


def _run_folder(path: Path, net: SegregatedNet, options: dict) -> None:
    path.mkdir()
    config = {"model": "segregated_dendrites", "model_options": options, "val_size": 10000}
    (path / "config.json").write_text(json.dumps(config))
    torch.save({"model": net.state_dict()}, path / "checkpoint.pt")
    (path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')


def test_the_script_tests_a_run_folders_weights(tmp_path):
    dataset_dir("mnist")
    options = {"preset": "original-code", "hidden": [20], "compile": False}
    torch.manual_seed(5)
    net = SegregatedNet(dendrite_config(**options, n_inputs=784, n_outputs=10))
    _run_folder(tmp_path / "run", net, options)
    loaded, _ = load_trained(tmp_path / "run", (1, 28, 28), 10)
    saved = net.state_dict()
    for name, value in loaded.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, saved[name]), name
    out = tmp_path / "tests.json"
    script = ROOT / "scripts" / "dendrite_weight_tests.py"
    args = [str(tmp_path / "run"), "--repeats", "2", "--images", "64", "--json", str(out)]
    r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())["runs"][str(tmp_path / "run")]
    data = load_dataset("mnist", None, val_size=10000, standardize=False)
    x, y = data.x_test[:64].reshape(64, -1), data.y_test[:64]
    assert result["errors"] == weight_tests(net, x, y, repeats=2).tolist()
    assert result["epochs"] == 2 and "test error" in r.stdout
    bad = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                         text=True)  # fmt: skip
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0
    assert "not a run folder" in bad.stderr
