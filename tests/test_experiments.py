"""Experiments: every shipped config parses into valid TrainConfigs, and the verdicts follow
the declared checks (published bound, distance to a reference run, final angle)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from apical.errors import ApicalError
from apical.experiments import experiments, link_shared_runs, parse_experiment, verdicts
from apical.train import Run


def test_every_shipped_experiment_is_valid():
    found = experiments()
    assert "fa-mnist" in found
    for exp in found.values():
        configs = exp.configs(Path("/tmp/x"), epochs=1)
        assert set(configs) == {r.label for r in exp.runs}
        assert all(c.epochs == 1 for c in configs.values())
    fa = found["fa-mnist"]
    cfgs = fa.configs(Path("/tmp/x"))
    assert {c.rule for c in cfgs.values()} == {"backprop", "fa", "dfa"}
    assert all(c.model_options["hidden"] == [500, 500] and c.epochs == 20 for c in cfgs.values())


def test_select_keeps_the_named_runs_in_order():
    exp = experiments()["segregated-dendrites-mnist"]
    picked = exp.select(("0-hidden", "1-hidden"))
    assert [r.label for r in picked.runs] == ["1-hidden", "0-hidden"]
    assert set(picked.configs(Path("/tmp/x"))) == {"1-hidden", "0-hidden"}
    assert exp.select(()) is exp
    with pytest.raises(ApicalError, match="has no run 'nope'; its runs: 1-hidden, 2-hidden"):
        exp.select(("nope",))


def test_verdicts():
    exp = parse_experiment(
        """
name = "t"
title = "t"
source = "s"
claim = "c"
[base]
dataset = "xor"
[[runs]]
label = "bp"
rule = "backprop"
[[runs]]
label = "fa"
rule = "fa"
reference = "bp"
within = 1.0
max_angle = 60.0
[[runs]]
label = "pub"
rule = "fa"
max_error = 4.1
""",
        "inline",
    )
    final = {
        "bp": {"test_error": 2.0, "angle": 0.0},
        "fa": {"test_error": 2.9, "angle": 50.0},
        "pub": {"test_error": 4.2, "angle": math.nan},
    }
    assert verdicts(exp, final) == {"bp": "-", "fa": "pass", "pub": "FAIL"}
    final["fa"]["angle"] = 70.0
    assert verdicts(exp, final)["fa"] == "FAIL"


def test_malformed_experiment():
    with pytest.raises(ApicalError, match="malformed"):
        parse_experiment('name = "x"', "bad.toml")
    with pytest.raises(ApicalError, match="unknown config key"):
        parse_experiment(
            'name="x"\ntitle="t"\nsource="s"\nclaim="c"\n[[runs]]\nlabel="a"\nrul="fa"\n', "b"
        )


def test_a_diverged_run_is_reported_not_fatal(tmp_path):
    from apical.compare import train_all
    from apical.train import TrainConfig

    base = dict(dataset="xor", model_options={"hidden": [4]}, epochs=3, batch_size=4,
                probe_every=0, device="cpu")  # fmt: skip
    configs = {
        "blows-up": TrainConfig(**base, rule="backprop", loss="mse", lr=1e30, momentum=0.0),
        "fine": TrainConfig(**base, rule="fa", lr=0.1),
    }
    said = []
    runs = train_all(configs, progress=False, echo=said.append)
    assert set(runs) == {"fine"}
    assert any(s.startswith("[blows-up] diverged: the loss became NaN or inf") for s in said)


def test_a_shared_run_is_the_named_run_of_the_other_experiment():
    found = experiments()
    out = Path("/tmp/x")
    for name, label, target in (
        ("segregated-dendrites-feedback", "random", "1-hidden"),
        ("segregated-dendrites-coupling", "g_a=0", "2-hidden"),
    ):
        ours = found[name].configs(out / name)[label]
        theirs = found["segregated-dendrites-mnist"].configs(out / "segregated-dendrites-mnist")
        assert ours == theirs[target]
        assert ours.run_dir == str(out / "segregated-dendrites-mnist" / target)


def test_a_shared_run_must_name_a_trained_run_and_bring_no_config():
    head = 'name="x"\ntitle="t"\nsource="s"\nclaim="c"\n[[runs]]\nlabel="a"\n'
    with pytest.raises(ApicalError, match=r"run 'a' is the same as y/b .* drop lr$"):
        parse_experiment(head + 'same_as="y/b"\nlr=0.1\n', "b.toml")
    exp = parse_experiment(head + 'same_as="fa-mnist/nope"\n', "b.toml")
    with pytest.raises(ApicalError, match="'fa-mnist/nope', which is not a trained run"):
        link_shared_runs({**experiments(), "x": exp})


def test_the_summary_covers_runs_trained_before_and_not_yet_finished(tmp_path):
    """`apical reproduce X --run A` reports every run of X: the finished ones from their
    folders (so a reference trained earlier still checks its dependants), the rest with why
    they have no verdict."""
    from apical.cli import _experiment_results

    text = """name = "x"\ntitle = "t"\nsource = "s"\nclaim = "c"
[base]\ndataset = "xor"\nrule = "backprop"\nepochs = 3
[[runs]]\nlabel = "ref"\nmax_error = 10.0
[[runs]]\nlabel = "near"\nreference = "ref"\nwithin = 1.0
[[runs]]\nlabel = "half"\n[[runs]]\nlabel = "never"\n"""
    exp = parse_experiment(text, "x.toml")
    configs = exp.configs(tmp_path / "x")

    def write(label: str, errors: list[float]) -> None:
        folder = tmp_path / "x" / label
        folder.mkdir(parents=True)
        rows = [{"epoch": i + 1, "test_accuracy": 1 - e / 100, "val_accuracy": 0.5,
                 "seconds": 1.0} for i, e in enumerate(errors)]  # fmt: skip
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    write("ref", [20.0, 12.0, 8.0])  # finished before
    write("near", [30.0, 10.0, 9.5])  # its folder, but "trained now" below
    write("half", [40.0])
    now = {"near": Run(configs["near"], None, [{"epoch": 3, "test_accuracy": 0.905,
                       "val_accuracy": 0.5, "seconds": 2.0}], [])}  # fmt: skip
    results, final, verdict = _experiment_results(exp, configs, ["near"], now)
    assert set(results) == {"ref", "near", "half"}
    assert final["ref"]["test_error"] == pytest.approx(8.0)
    assert final["near"]["test_error"] == pytest.approx(9.5) and final["near"]["seconds"] == 2.0
    assert verdict == {"ref": "pass", "near": "FAIL", "half": "epoch 1 of 3", "never": "not run"}
    _, _, verdict = _experiment_results(exp, configs, ["near", "never"], {})
    assert verdict["near"] == "diverged" and verdict["never"] == "diverged"
