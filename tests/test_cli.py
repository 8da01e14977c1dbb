"""The `apical` command: demo prints its table and writes its figure, train/reproduce run,
and a user's mistake prints one line (no traceback) with a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def apical(*args, cwd=None, env_extra=None):
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "apical.cli", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=600,
    )  # fmt: skip


def test_demo_table_and_figure(tmp_path):
    r = apical("demo", "--epochs", "3", "--out", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["rule", "test"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:6]}
    assert set(rows) == {"backprop", "fa", "dfa", "sign_symmetry"}
    assert all(50 < float(v[0]) <= 100 for v in rows.values())  # accuracy after 3 epochs
    assert float(rows["backprop"][2]) == pytest.approx(0.0, abs=1e-3)
    assert 0 < float(rows["fa"][2]) < 90
    png = tmp_path / "demo" / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert summary["fa"]["test_error"] == pytest.approx(100 - float(rows["fa"][0]), abs=0.01)


def test_train_from_toml_and_resume(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        'dataset = "xor"\nrule = "fa"\nepochs = 2\nbatch_size = 4\nlr = 0.1\n'
        "probe_every = 0\n[model_options]\nhidden = [8]\n"
    )
    run_dir = tmp_path / "run"
    r = apical("train", "--config", str(cfg), "--run-dir", str(run_dir), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("epoch") == 2
    r = apical("train", "--resume", "--run-dir", str(run_dir), "--epochs", "4")
    assert r.returncode == 0, r.stderr
    epochs = [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--rule", "hebbian"], "error: unknown rule 'hebbian'; known: backprop"),
        (["train", "--dataset", "mnist", "--data-dir", "/nonexistent"],
         "error: data directory /nonexistent does not exist"),
        (["train", "--hidden", "500,x"], "error: --hidden takes comma-separated sizes"),
        (["train", "--config", "/nonexistent.toml"], "error: config file /nonexistent.toml not"),
        (["train", "--resume"], "error: --resume needs --run-dir"),
        (["train", "--device", "cuda:0", "--dataset", "xor"], "error: device cuda"),
        (["reproduce", "no-such-paper"], "error: unknown experiment 'no-such-paper'; known: "),
        (["reproduce", "fa-mnist", "--run", "nope"],
         "error: experiment fa-mnist has no run 'nope'; its runs: "),
        (["reproduce", "spiking-xor", "--run", "a"], "error: --run picks runs of an experiment"),
    ],
)  # fmt: skip
def test_user_mistakes_give_one_line(args, message):
    r = apical(*args)
    if "cuda" in message and "CUDA" not in r.stderr:
        pytest.skip("CUDA is available here")
    assert r.returncode != 0
    assert r.stderr.startswith(message), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_missing_dataset_names_the_file(tmp_path):
    r = apical("train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path))
    assert r.returncode == 2
    assert "train-images-idx3-ubyte.gz not found in" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_rules_and_reproduce_list():
    r = apical("rules")
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert names == [
        "backprop", "fa", "dfa", "sign_symmetry", "kolen_pollack", "burstprop", "burstccn",
        "node_perturbation", "segregated_dendrites", "microcircuit", "predictive_coding",
        "equilibrium_propagation", "contrastive_hebbian",
    ]  # fmt: skip
    r = apical("reproduce", "--list")
    assert "fa-mnist (train):" in r.stdout and "published" in r.stdout
    assert "sweep-depth (sweep; presets: cpu, tiny):" in r.stdout


def test_help_everywhere():
    for cmd in ([], ["demo"], ["train"], ["rules"], ["reproduce"]):
        r = apical(*cmd, "--help")
        assert r.returncode == 0 and "Usage: " in r.stdout


def test_train_burstprop_with_rule_options(tmp_path):
    r = apical(
        "train", "--dataset", "digits", "--model", "burstprop_mlp", "--hidden", "32",
        "--rule", "burstprop", "--loss", "mse", "--rule-option", "learn_feedback=true",
        "--rule-option", "recurrent_lr=0.001", "--optimizer", "decoupled_sgd", "--lr", "0.05",
        "--output-lr", "0.01", "--epochs", "2", "--batch-size", "32", "--device", "cpu",
        "--run-dir", str(tmp_path),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["rule_options"] == {"learn_feedback": True, "recurrent_lr": 0.001}
    assert r.stdout.count("epoch") == 2
    r = apical("train", "--rule", "fa", "--rule-option", "oops")
    assert r.stderr.startswith("error: --rule-option takes KEY=VALUE")


def test_train_model_options_and_config_fields(tmp_path):
    r = apical(
        "train", "--dataset", "digits", "--model", "mlp", "--model-option", "hidden=[16]",
        "--model-option", "activation=relu", "--set", "val_size=100", "--set",
        "standardize=false", "--set", "lr=9.0", "--lr", "0.05", "--epochs", "1",
        "--device", "cpu", "--run-dir", str(tmp_path),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_options"] == {"hidden": [16], "activation": "relu"}
    assert (config["val_size"], config["standardize"], config["lr"]) == (100, False, 0.05)
    r = apical("train", "--set", "lerning_rate=0.1")
    assert r.returncode != 0 and r.stderr.startswith("error: unknown config key lerning_rate")
