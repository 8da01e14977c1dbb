"""Property-based fuzzing of what a user hands apical: random values of the wrong type or
range and random unknown keys for the config fields, through the validator and through
`apical train`; random truncations and byte flips of IDX, CIFAR-10 and checkpoint files.
Every case ends in a valid run or in one `error:` line with exit status 2 (ApicalError in
Python), never a traceback, and nothing outside the run folder is touched.

A fixed seed and about a minute by default; APICAL_FUZZ=long runs many more examples.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apical import cli
from apical.data import load_dataset
from apical.errors import ApicalError
from apical.train import TrainConfig, train
from tests.test_bad_input import xor_config
from tests.test_data import make_idx_set, write_cifar

LONG = os.environ.get("APICAL_FUZZ") == "long"
FUZZ = settings(
    max_examples=3000 if LONG else 300,
    derandomize=not LONG,  # the same cases on every run of CI
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Values of every JSON type, including the awkward ones.
ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = [f for f in TrainConfig.__dataclass_fields__]
# Fields whose every valid value trains the xor set fast (the CLI fuzz keeps the rest fixed).
CHEAP = [
    "lr",
    "output_lr",
    "momentum",
    "weight_decay",
    "schedule",
    "step_every",
    "step_factor",
    "grad_clip",
    "seed",
    "val_size",
    "train_size",
    "standardize",
    "optimizer",
    "loss",
    "rule",
    "rule_options",
    "augment",
    "probe_size",
    "probe_epochs",
    "seeds",
    "lr_scales",
    "probe_every",
]
CHOICES = {  # valid values too, so that some cases pass and reach training
    "schedule": st.sampled_from(["constant", "cosine", "step"]),
    "optimizer": st.sampled_from(["sgd", "adam", "adamw", "decoupled_sgd"]),
    "loss": st.sampled_from(["cross_entropy", "mse"]),
    "rule": st.sampled_from(
        [
            "backprop",
            "fa",
            "dfa",
            "sign_symmetry",
            "kolen_pollack",
            "burstprop",
            "node_perturbation",
            "segregated_dendrites",
        ]
    ),
    "augment": st.sampled_from(["none", "crop_flip"]),
}


def value_for(field: str) -> st.SearchStrategy:
    good = CHOICES.get(field, st.floats(0.001, 0.9) | st.integers(0, 5))
    return st.one_of(good, ANY)


@FUZZ
@given(
    picked=st.dictionaries(st.sampled_from(FIELDS), st.none(), max_size=6).flatmap(
        lambda keys: st.fixed_dictionaries({k: value_for(k) for k in keys})
    ),
    unknown=st.dictionaries(
        st.text(min_size=1, max_size=6).filter(lambda k: k not in FIELDS), ANY, max_size=1
    ),
)
def test_the_validator_accepts_or_names_the_problem(picked, unknown):
    try:
        config = TrainConfig.from_dict({**picked, **unknown})
    except ApicalError as e:
        assert "\n" not in str(e) and str(e)
        return
    assert not unknown
    config.check()  # what it accepted is valid through and through


@FUZZ
@given(
    picked=st.dictionaries(st.sampled_from(CHEAP), st.none(), max_size=4).flatmap(
        lambda keys: st.fixed_dictionaries({k: value_for(k) for k in keys})
    )
)
def test_apical_train_runs_or_refuses_in_one_line(tmp_path_factory, monkeypatch, capsys, picked):
    import json

    work = tmp_path_factory.mktemp("fuzz")
    monkeypatch.chdir(work)
    args = [
        "apical",
        "train",
        "--dataset",
        "xor",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--run-dir",
        "run",
    ]
    for key, value in picked.items():
        text = json.dumps(value, allow_nan=True) if not isinstance(value, str) else value
        args += ["--set", f"{key}={text}"]
    monkeypatch.setattr(sys, "argv", args)
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code == 0:
        assert (work / "run" / "checkpoint.pt").is_file()
    else:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert {p.name for p in work.iterdir()} <= {"run"}  # nothing outside the run folder


def _corrupt(data: bytes, cut: float, flips: list[tuple[float, int]]) -> bytes:
    out = bytearray(data[: max(0, math.floor(len(data) * cut))])
    for where, xor in flips:
        if out:
            out[min(len(out) - 1, int(where * len(out)))] ^= xor
    return bytes(out)


CORRUPTION = dict(
    cut=st.sampled_from([1.0, 1.0, 0.0, 0.1, 0.5, 0.99]),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=3),
)


@FUZZ
@given(
    **CORRUPTION,
    which=st.sampled_from(
        ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "raw-images"]
    ),
)
def test_corrupt_idx_files_load_or_refuse(tmp_path_factory, cut, flips, which):
    root = tmp_path_factory.mktemp("idx")
    make_idx_set(root / "mnist", n_train=12, n_test=4)
    if which == "raw-images":  # corrupt inside a valid gzip: the IDX header and data
        path = root / "mnist" / "train-images-idx3-ubyte.gz"
        with gzip.open(path) as f:
            raw = f.read()
        with gzip.open(path, "wb") as f:
            f.write(_corrupt(raw, cut, flips))
    else:
        path = root / "mnist" / which
        path.write_bytes(_corrupt(path.read_bytes(), cut, flips))
    try:
        data = load_dataset("mnist", root, val_size=2)
    except ApicalError as e:
        assert "\n" not in str(e)
        return
    assert data.x_train.shape[1:] == data.x_test.shape[1:]


@FUZZ
@given(**CORRUPTION)
def test_corrupt_cifar_batches_load_or_refuse(tmp_path_factory, cut, flips):
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    write_cifar(folder, n=4)
    path = folder / "data_batch_2"
    path.write_bytes(_corrupt(path.read_bytes(), cut, flips))
    try:
        load_dataset("cifar10", root, val_size=2)
    except ApicalError as e:
        assert "\n" not in str(e)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "run"
    train(xor_config(folder, model_options={"hidden": [4]}), progress=False)
    return folder


@FUZZ
@given(**CORRUPTION)
def test_corrupt_checkpoints_resume_or_refuse(tmp_path_factory, finished_run, cut, flips):
    import shutil

    folder = tmp_path_factory.mktemp("resume") / "run"
    shutil.copytree(finished_run, folder)
    path = folder / "checkpoint.pt"
    path.write_bytes(_corrupt(path.read_bytes(), cut, flips))
    config = xor_config(folder, epochs=2, model_options={"hidden": [4]})
    try:
        run = train(config, resume=True, progress=False)
    except ApicalError as e:
        assert "\n" not in str(e)
        return
    assert [r["epoch"] for r in run.history] == [1, 2]


def test_a_valid_pickle_of_an_official_shape_still_loads(tmp_path):
    """The restricted unpickler admits what the official batches hold: a protocol-2 pickle
    with bytes keys, a list of labels, file names and a uint8 array."""
    from apical.data import _read_cifar_batch

    batch = {
        b"batch_label": b"training batch 2 of 5",
        b"labels": [1, 2, 3],
        b"data": np.arange(3 * 3072, dtype=np.uint8).reshape(3, 3072),
        b"filenames": [b"a.png", b"b.png", b"c.png"],
    }
    for protocol in (2, 4):
        (tmp_path / "batch").write_bytes(pickle.dumps(batch, protocol=protocol))
        data, labels = _read_cifar_batch(tmp_path / "batch")
        assert np.array_equal(data, batch[b"data"]) and labels.tolist() == [1, 2, 3]
