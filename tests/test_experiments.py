"""The experiment protocol: every shipped file parses and validates (its presets too) under
the kind it declares; a verdict is pass or FAIL only when every declared check was made,
and otherwise says why not ("not checked: ..."); `apical.reproduce` returns that Report
from the run folders, whichever runs were trained now."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import apical
from apical.errors import ApicalError
from apical.experiments import load, parse, shipped
from apical.experiments.train_runs import RUNNER as TRAIN_RUNS

HEAD = 'kind = "train"\nname = "x"\ntitle = "t"\nsource = "s"\nclaim = "c"\n'


def test_every_shipped_experiment_parses_under_its_declared_kind():
    found = shipped()
    kinds = {name: exp.kind for name, exp in found.items()}
    assert kinds["fa-mnist"] == "train" and kinds["sweep-depth"] == "sweep"
    assert kinds["spiking-xor"] == "spiking" and kinds["active-dendrites-pmnist"] == "continual"
    assert len(found) == 27
    assert kinds["active-dendrites-pmnist-100"] == "continual"
    assert kinds["microcircuit-mnist"] == "train"
    for exp in found.values():
        for preset in [None, *exp.presets]:
            exp.with_preset(preset)  # validated again; raises if a preset is broken
        if exp.kind == "train":
            configs = TRAIN_RUNS.configs(exp, Path("/tmp/x") / exp.name, {"epochs": 1})
            assert set(configs) == {r.label for r in exp.spec.runs}
            assert all(c.epochs == 1 for c in configs.values())
    cfgs = TRAIN_RUNS.configs(found["fa-mnist"], Path("/tmp/x/fa-mnist"), {})
    assert {c.rule for c in cfgs.values()} == {"backprop", "fa", "dfa"}
    assert all(c.model_options["hidden"] == [500, 500] and c.epochs == 20 for c in cfgs.values())


def test_a_leading_comment_keeps_the_kind_and_a_missing_kind_is_named():
    text = (Path(apical.__file__).parent / "experiments" / "sweep-depth.toml").read_text()
    commented = "# a note first\n\n" + text
    assert parse(commented, "c.toml").kind == "sweep"
    moved = "\n".join(line for line in text.splitlines() if not line.startswith("kind"))
    with pytest.raises(ApicalError, match=r"c.toml lacks kind; every experiment declares kind"):
        parse(moved, "c.toml")
    with pytest.raises(
        ApicalError, match="unknown experiment kind 'trian'; known: train, continual, sweep"
    ):
        parse(HEAD.replace('"train"', '"trian"'), "c.toml")


def test_malformed_experiments_name_the_file_and_the_problem():
    with pytest.raises(ApicalError, match=r"bad\.toml is not valid TOML"):
        parse("name = ", "bad.toml")
    with pytest.raises(ApicalError, match=r"b\.toml: run 'a': unknown config key rul; known"):
        parse(HEAD + '[[runs]]\nlabel="a"\nrul="fa"\n', "b.toml")
    with pytest.raises(ApicalError, match=r"run 'a': its reference 'bp' is not a run"):
        parse(HEAD + '[[runs]]\nlabel="a"\nreference="bp"\nwithin=1.0\n', "b.toml")
    with pytest.raises(ApicalError, match=r"b\.toml: unknown experiment key extra; known keys"):
        parse(HEAD + 'extra = 1\n[[runs]]\nlabel="a"\n', "b.toml")
    with pytest.raises(ApicalError, match=r"no preset 'gpu'; presets: cpu, tiny"):
        load("sweep-depth").with_preset("gpu")


def test_a_shared_run_is_the_named_run_of_the_other_experiment():
    out = Path("/tmp/x")
    found = shipped()
    theirs = TRAIN_RUNS.configs(found["segregated-dendrites-mnist"],
                                out / "segregated-dendrites-mnist", {})  # fmt: skip
    for name, label, target in (
        ("segregated-dendrites-feedback", "random", "1-hidden"),
        ("segregated-dendrites-coupling", "g_a=0", "2-hidden"),
    ):
        ours = TRAIN_RUNS.configs(found[name], out / name, {})[label]
        assert ours == theirs[target]
        assert ours.run_dir == str(out / "segregated-dendrites-mnist" / target)


def test_a_shared_run_must_name_a_trained_run_and_bring_no_config():
    with pytest.raises(ApicalError, match=r"b\.toml: run 'a': it is the same as y/b .* drop lr$"):
        parse(HEAD + '[[runs]]\nlabel="a"\nsame_as="y/b"\nlr=0.1\n', "b.toml")
    exp = parse(HEAD + '[[runs]]\nlabel="a"\nsame_as="fa-mnist/nope"\n', "b.toml")
    with pytest.raises(ApicalError, match="'fa-mnist/nope', which is not a trained run"):
        TRAIN_RUNS.configs(exp, Path("/tmp/x/x"), {})


def _experiment_file(tmp_path: Path) -> Path:
    path = tmp_path / "x.toml"
    path.write_text(
        HEAD
        + """[base]
dataset = "xor"
rule = "backprop"
epochs = 3
batch_size = 4
probe_every = 0
model_options = { hidden = [4] }
[[runs]]
label = "ref"
max_error = 10.0
[[runs]]
label = "near"
reference = "ref"
within = 1.0
[[runs]]
label = "angle"
max_angle = 50.0
[[runs]]
label = "half"
[[runs]]
label = "never"
"""
    )
    return path


def _fake_folder(folder: Path, errors: list[float], epochs: int = 3, **config) -> None:
    """A run folder with a config and metrics rows (test errors in %), as train writes."""
    folder.mkdir(parents=True)
    cfg = {
        "dataset": "xor",
        "rule": "backprop",
        "epochs": epochs,
        "batch_size": 4,
        "probe_every": 0,
        "model_options": {"hidden": [4]},
        "run_dir": str(folder),
        **config,
    }
    cfg = apical.train.TrainConfig.from_dict(cfg).to_dict()
    (folder / "config.json").write_text(json.dumps(cfg))
    rows = [{"epoch": i + 1, "test_accuracy": 1 - e / 100, "val_accuracy": 0.5, "seconds": 1.0,
             "mean_hidden_angle": None} for i, e in enumerate(errors)]  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_report_covers_every_run_from_its_folder_and_never_passes_by_default(tmp_path):
    """Finished runs are read from their folders (a reference trained earlier still checks
    its dependants), unfinished ones say how far they got, and a check that cannot be
    made (a missing reference, an angle never probed) gives "not checked", never "pass"."""
    name = str(_experiment_file(tmp_path))
    out = tmp_path / "runs"
    _fake_folder(out / "x" / "ref", [20.0, 12.0, 8.0])
    _fake_folder(out / "x" / "near", [30.0, 10.0, 9.5])
    _fake_folder(out / "x" / "angle", [30.0, 10.0, 9.5])
    _fake_folder(out / "x" / "half", [40.0])
    report = apical.reproduce(name, out=out, runs=["ref"], resume=True)
    verdicts = {r.label: r.verdict for r in report.runs}
    assert verdicts == {"ref": "pass", "near": "FAIL", "angle": "not checked: no angle was probed",
                        "half": "epoch 1 of 3", "never": "not run"}  # fmt: skip
    assert report.run("ref").values["test_error"] == pytest.approx(8.0)
    saved = json.loads((out / "x" / "report.json").read_text())
    assert [r["verdict"] for r in saved["runs"]] == list(verdicts.values())
    # the reference missing: its dependant is not checked, whatever its own error
    (out / "x" / "ref" / "metrics.jsonl").unlink()
    (out / "x" / "ref" / "config.json").unlink()
    report = apical.reproduce(name, out=out, runs=["half"], resume=True, epochs=1)
    assert report.run("near").verdict == "not checked: shortened to 1 epochs (declared 3)"
    assert report.notes == ["shortened to 1 epochs: not the published protocol"]
    report = apical.reproduce(name, out=out, runs=["never"], resume=True, epochs=3)
    assert report.notes == []  # the declared length, named: not shortened
    assert report.run("near").verdict == "not checked: reference ref not run"
    assert report.run("never").verdict == "not checked: no bound declared"


def test_replicas_are_reported_by_their_mean_and_spread_and_judged_on_the_mean(tmp_path):
    path = _experiment_file(tmp_path)
    name = str(path)
    path.write_text(path.read_text().replace("epochs = 3\n", "epochs = 3\nseeds = [0, 1, 2]\n"))
    out = tmp_path / "runs"
    folder = out / "x" / "ref"
    _fake_folder(folder, [], seeds=[0, 1, 2])
    rows = [{"epoch": e, "replica": r, "seed": r, "test_accuracy": 1 - err / 100,
             "val_accuracy": 0.9 + r / 100, "seconds": 1.0, "mean_hidden_angle": None}
            for e, errs in [(2, [50.0, 50.0, 50.0]), (3, [8.0, 9.0, 13.0])]
            for r, err in enumerate(errs)]  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ref = apical.reproduce(name, out=out, runs=["ref"], resume=True).run("ref")
    assert ref.values["test_error"] == pytest.approx(10.0)  # not the last replica's 13
    assert ref.values["test_error_sd"] == pytest.approx(7**0.5)  # s.d. of 8, 9, 13
    assert ref.values["seeds"] == 3 and ref.values["val_error"] == pytest.approx(9.0)
    assert ref.verdict == "pass"  # the mean meets max_error 10, though one replica does not


def test_reproduce_trains_into_run_folders_and_refuses_to_overwrite_them(tmp_path):
    name = str(_experiment_file(tmp_path))
    out = tmp_path / "runs"
    report = apical.reproduce(name, out=out, runs=["ref", "near"])
    rows = [json.loads(s) for s in (out / "x" / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert report.run("ref").values["test_error"] == pytest.approx(
        100 * (1 - rows[-1]["test_accuracy"])
    )
    assert report.run("ref").verdict in ("pass", "FAIL")
    before = (out / "x" / "ref" / "checkpoint.pt").read_bytes()
    with pytest.raises(
        ApicalError, match=r"x/ref already holds a finished run \(3 epochs\); add --resume"
    ):
        apical.reproduce(name, out=out, runs=["ref"])
    assert (out / "x" / "ref" / "checkpoint.pt").read_bytes() == before
    again = apical.reproduce(name, out=out, runs=["ref"], resume=True)  # reported, not trained
    assert again.run("ref") == report.run("ref")
    assert (out / "x" / "ref" / "checkpoint.pt").read_bytes() == before


def test_another_seed_trains_into_a_folder_of_its_own(tmp_path):
    name = str(_experiment_file(tmp_path))
    out = tmp_path / "runs"
    apical.reproduce(name, out=out, runs=["ref"])
    apical.reproduce(name, out=out, runs=["ref"], seed=7)
    configs = [json.loads((out / d / "ref" / "config.json").read_text()) for d in ("x", "x-seed-7")]
    assert [c["seed"] for c in configs] == [0, 7]
    rows = [(out / d / "ref" / "metrics.jsonl").read_text() for d in ("x", "x-seed-7")]
    assert rows[0] != rows[1]  # another initialisation, another run
    with pytest.raises(ApicalError, match=r"--seed sets the seed .* lists its seeds in its file"):
        apical.reproduce("spiking-xor", out=out, seed=1)


def test_a_diverged_run_is_reported_and_the_others_still_run(tmp_path):
    path = tmp_path / "d.toml"
    path.write_text(
        HEAD.replace('"x"', '"d"', 1)
        + """[base]
dataset = "xor"
epochs = 3
batch_size = 4
probe_every = 0
model_options = { hidden = [4] }
[[runs]]
label = "blows-up"
rule = "backprop"
loss = "mse"
lr = 1e30
momentum = 0.0
[[runs]]
label = "fine"
rule = "fa"
lr = 0.1
"""
    )
    said = []
    report = apical.reproduce(str(path), out=tmp_path / "runs", echo=said.append)
    assert report.run("blows-up").verdict == "diverged"
    assert report.run("fine").values["test_error"] is not None
    assert any(s.startswith("[blows-up] diverged: the loss became NaN or inf") for s in said)
    kept = (tmp_path / "runs" / "d" / "blows-up" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in kept] == [1]  # the last good epoch stays


def test_export_copies_the_report_figure_and_every_runs_rows_and_probes(tmp_path):
    """What docs keep of an experiment: report.json, the figure, and per run its metrics
    rows and, where it probed, its probe rows (the figure's angle panels are drawn from
    them), equal to the run folder's."""
    path = _experiment_file(tmp_path)
    path.write_text(
        path.read_text().replace("probe_every = 0\n", "probe_every = 0\nprobe_epochs = true\n")
    )
    out, docs = tmp_path / "runs", tmp_path / "docs"
    apical.reproduce(str(path), out=out, runs=["ref", "angle"], export=docs)
    kept = docs / "x"
    assert json.loads((kept / "report.json").read_text())["name"] == "x"
    assert (kept / "curves.png").read_bytes()[:4] == b"\x89PNG"
    for label in ("ref", "angle"):
        for stream in ("metrics", "probes"):
            exported = (kept / label / f"{stream}.jsonl").read_text()
            assert exported == (out / "x" / label / f"{stream}.jsonl").read_text()
            assert len(exported.splitlines()) == (3 if stream == "metrics" else 4)
    assert sorted(p.name for p in kept.iterdir()) == ["angle", "curves.png", "ref", "report.json"]
