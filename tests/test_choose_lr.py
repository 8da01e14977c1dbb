"""scripts/choose_lr.py --scales: a learning-rate sweep as one replicated run gives each
factor the validation error of the run trained alone at its scaled rates."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from apical.train import TrainConfig, train

SCRIPT = Path(__file__).parents[1] / "scripts" / "choose_lr.py"
spec = importlib.util.spec_from_file_location("choose_lr", SCRIPT)
choose_lr = importlib.util.module_from_spec(spec)
spec.loader.exec_module(choose_lr)
EXPERIMENT = """kind = "train"
name = "sweep-check"
title = "t"
source = "s"
claim = "c"

[base]
dataset = "digits"
model = "burstprop_mlp"
model_options = { hidden = [24] }
loss = "mse"
batch_size = 32
epochs = 5
probe_every = 0
seed = 3

[[runs]]
label = "burstprop"
rule = "burstprop"
rule_options = { learn_feedback = true }
optimizer = "decoupled_sgd"
lr = 0.05
output_lr = 0.02
weight_decay = 1e-6
"""


def _choose(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_each_scale_gets_the_validation_error_of_its_run_alone(tmp_path):
    path = tmp_path / "sweep-check.toml"
    path.write_text(EXPERIMENT)
    done = _choose(str(path), "--scales", "0.5,4", "--epochs", "2", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["scales"] == [0.5, 4.0] and set(out["val_error"]) == {"burstprop"}
    for scale in (0.5, 4.0):
        alone = train(TrainConfig(
            dataset="digits", model="burstprop_mlp", model_options={"hidden": [24]},
            loss="mse", rule="burstprop", rule_options={"learn_feedback": True},
            optimizer="decoupled_sgd", lr=0.05 * scale, output_lr=0.02 * scale,
            weight_decay=1e-6, batch_size=32, epochs=2, probe_every=0, seed=3,
        ), progress=False)  # fmt: skip
        want = 100 * (1 - alone.history[-1]["val_accuracy"])
        assert out["val_error"]["burstprop"][str(scale)] == pytest.approx(want, abs=1e-9)
    errors = out["val_error"]["burstprop"]
    assert out["best_scale"]["burstprop"] == min(errors, key=errors.get)
    assert errors["0.5"] != errors["4.0"]  # the two rates did train differently


@pytest.mark.parametrize(("args", "message"), [
    (["--scales", "0.5,4", "--asha"], "leave out --ray/--asha"),
    (["--scales", "1,x"], "--scales '1,x': give comma-separated positive numbers"),
    (["--lrs", "0.1,-1"], "--lrs '0.1,-1': give comma-separated positive numbers"),
])  # fmt: skip
def test_bad_sweeps_are_one_error_line(tmp_path, args, message):
    path = tmp_path / "sweep-check.toml"
    path.write_text(EXPERIMENT)
    done = _choose(str(path), *args)
    assert done.returncode == 1 and done.stderr.strip().startswith("error:"), done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_run_of_replicas_is_judged_by_their_mean_at_the_last_epoch():
    rows = [{"epoch": 1, "replica": r, "val_accuracy": 0.5} for r in range(3)]
    rows += [{"epoch": 2, "replica": 0, "val_accuracy": 0.96},
             {"epoch": 2, "replica": 1, "val_accuracy": 0.92},
             {"epoch": 2, "replica": 2, "val_accuracy": 0.2, "diverged_step": 7}]  # fmt: skip
    run = SimpleNamespace(diverged=None, history=rows)
    assert choose_lr.final_val_error(run) == pytest.approx((4 + 8 + 100) / 3)
    assert choose_lr.final_val_error(SimpleNamespace(diverged="nan", history=rows)) == 100.0
    one = SimpleNamespace(diverged=None, history=[{"epoch": 1, "val_accuracy": 0.9}])
    assert choose_lr.final_val_error(one) == pytest.approx(10.0)
