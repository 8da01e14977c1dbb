"""Every bad input ends in one `error:` line naming the input and the fix, exit status 2,
with nothing written or lost; a data or checkpoint file can never run code; and the
defaults that used to fail silently (a validation split of 0, an angle measured epochs ago,
MNIST files read as Fashion-MNIST) now say what they are."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from apical import cli
from apical.errors import ApicalError
from apical.run_folder import RunFolder
from apical.train import TrainConfig, train
from tests.conftest import dataset_dir
from tests.test_data import make_idx_set, write_cifar, write_idx

MARKER = "apical-marker-{}"


def xor_config(folder: Path, **kw) -> TrainConfig:
    """A one-epoch XOR run into `folder` (seconds), fields overridden by `kw`."""
    fields = dict(dataset="xor", epochs=1, batch_size=4, probe_every=0, device="cpu")
    return TrainConfig(**{**fields, **kw, "run_dir": str(folder)})


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`apical ARGS` in this process: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["apical", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error(monkeypatch, capsys, *args: str) -> str:
    """The single error line of a refused command (exit 2, no traceback)."""
    code, _, err = run(monkeypatch, capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert "Traceback" not in err
    return lines[0]


DIGITS = ("train", "--dataset", "digits", "--hidden", "8", "--epochs", "1", "--device", "cpu")
# the same through --set, so that a later --set of the same field is the one that counts
DIGITS_SET = (
    "train",
    "--dataset",
    "digits",
    "--device",
    "cpu",
    "--set",
    "epochs=1",
    "--set",
    'model_options={"hidden": [8]}',
)


# -- 1. a data or checkpoint file cannot run code ------------------------------------------
class _RunsCode:
    """Pickles as a call of os.system: what a malicious file would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_cifar_batch_runs_nothing(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    marker = tmp_path / MARKER.format("cifar")
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": _RunsCode(marker)}))
    cifar = ("train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--epochs", "1")
    line = one_error(monkeypatch, capsys, *cifar)
    assert (
        f"data_batch_1 names {os.system.__module__}.system, which no CIFAR-10 batch holds" in line
    )
    assert "refused without running it" in line and not marker.exists()
    # a global of a module that does not exist is refused before anything is imported
    (folder / "data_batch_1").write_bytes(b"\x80\x02cnosuch.module\nthing\n)R.")
    line = one_error(monkeypatch, capsys, *cifar)
    assert "data_batch_1 names nosuch.module.thing" in line and "nosuch" not in sys.modules


def test_a_crafted_checkpoint_runs_nothing(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "run"
    train(xor_config(folder), progress=False)
    marker = tmp_path / MARKER.format("checkpoint")
    with open(folder / "checkpoint.pt", "wb") as f:
        pickle.dump({"model": _RunsCode(marker)}, f)
    line = one_error(
        monkeypatch, capsys, "train", "--resume", "--run-dir", str(folder), "--epochs", "2"
    )
    assert line == (
        f"error: checkpoint {folder / 'checkpoint.pt'} is unreadable "
        "(UnpicklingError); start a new run"
    )
    assert not marker.exists()


# -- 2. images -------------------------------------------------------------------------
def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares width x height pixels (its data is one empty chunk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("dataset", ["imagefolder", "imagenet"])
def test_a_decompression_bomb_is_refused(tmp_path, monkeypatch, capsys, dataset):
    from tests.test_data import write_image_tree

    write_image_tree(tmp_path / "imagenet", per_class=2)
    _png_header(tmp_path / "imagenet" / "val" / "cat" / "huge.png", 20000, 20000)
    line = one_error(
        monkeypatch,
        capsys,
        "train",
        "--dataset",
        dataset,
        "--data-dir",
        str(tmp_path),
        "--set",
        "val_size=1",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--set",
        "image_size=16",
    )
    assert "huge.png declares more pixels than can be decoded safely" in line
    assert line.endswith("remove it or shrink it")


def test_test_images_of_another_shape_are_named(tmp_path, monkeypatch, capsys):
    make_idx_set(tmp_path / "mnist")
    write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", np.zeros((10, 28, 27)))
    line = one_error(
        monkeypatch,
        capsys,
        "train",
        "--dataset",
        "mnist",
        "--data-dir",
        str(tmp_path),
        "--set",
        "val_size=5",
    )
    assert line == (
        "error: mnist: the test images are 28x27 but the training images 28x28; "
        "the files do not belong together (use the test files of the same set)"
    )


# -- 3. output places ------------------------------------------------------------------
def test_run_folders_that_cannot_be_made(tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert one_error(monkeypatch, capsys, *DIGITS, "--run-dir", str(a_file)) == (
        f"error: {a_file} is a file, not a folder; choose another folder"
    )
    under = a_file / "run"
    assert one_error(monkeypatch, capsys, *DIGITS, "--run-dir", str(under)) == (
        f"error: {under} lies under a file, not a folder; choose another folder"
    )
    unwritable = Path("/proc/apical-run")  # no one, not even root, writes there
    assert one_error(monkeypatch, capsys, *DIGITS, "--run-dir", str(unwritable)) == (
        f"error: cannot create {unwritable} (No such file or directory); choose another folder"
    )
    assert one_error(monkeypatch, capsys, *DIGITS, "--run-dir", "") == (
        "error: run_dir is empty; name a folder, or leave it out to save nothing"
    )
    assert one_error(
        monkeypatch, capsys, "demo", "--epochs", "1", "--out", "/proc/apical-demo"
    ) == (
        "error: cannot create /proc/apical-demo (No such file or directory); choose another folder"
    )
    assert a_file.read_text() == "x"


def test_plot_refuses_an_unknown_format_and_a_missing_folder(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "run"
    train(
        TrainConfig(
            dataset="xor", epochs=1, batch_size=4, probe_every=0, device="cpu", run_dir=str(folder)
        ),
        progress=False,
    )
    line = one_error(monkeypatch, capsys, "plot", str(folder), "--out", str(tmp_path / "x.xyz"))
    assert line.endswith(".xyz is not a figure format; name a .png, .pdf, .svg file")
    missing = Path("/nonexistent-apical/dir/x.png")
    line = one_error(monkeypatch, capsys, "plot", str(folder), "--out", str(missing))
    assert line.endswith("the folder /nonexistent-apical/dir does not exist; create it first")
    assert not Path("/nonexistent-apical").exists()


# -- 4-6. values, types and rule options ------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--momentum=-0.5"], "momentum must be a number in [0, 1), got -0.5"),
        (["--momentum=5"], "momentum must be a number in [0, 1), got 5.0"),
        (["--weight-decay=-1"], "weight_decay must be a non-negative number, got -1.0"),
        (["--lr", "1e300"], "lr must be a number in (0, 3.4e+38), got 1e+300"),
        (["--grad-clip=-1"], "grad_clip must be a positive number, got -1.0"),
        (["--output-lr=-1"], "output_lr must be a number in [0, 3.4e+38), got -1.0"),
        (["--output-lr", "nan"], "output_lr must be a finite number, got nan"),
        (["--set", "lr=true"], "lr must be a number, got True"),
        (["--set", "epochs=1.5"], "epochs must be an integer, got 1.5"),
        (["--set", "batch_size=10.5"], "batch_size must be an integer, got 10.5"),
        (["--set", 'seed="x"'], "seed must be an integer, got 'x'"),
        (
            ["--seed", "99999999999999999999"],
            "seed must be an integer in [0, 4294967296), got 99999999999999999999",
        ),
        (
            ["--schedule", "step", "--set", "step_every=0"],
            "step_every must be an integer >= 1, got 0",
        ),
        (["--set", "image_size=0"], "image_size must be an integer >= 1, got 0"),
        (
            ["--rule", "burstprop", "--rule-option", "learn_feedback=maybe"],
            "learn_feedback must be true or false, got 'maybe'",
        ),
        (
            ["--rule", "fa", "--rule-option", 'loss="mse"'],
            "loss is a config field, not a rule option: set loss (--loss) instead",
        ),
        (
            ["--rule", "fa", "--rule-option", "feedback=5"],
            "feedback must be a table of FeedbackInit fields, got 5",
        ),
        (
            ["--rule", "fa", "--rule-option", 'feedback={"scale":"big"}'],
            "feedback.scale must be a number or none, got 'big'",
        ),
        (["--model-option", "hidden=[0]"], "hidden must be a list (each an integer >= 1), got [0]"),
        (["--set", "val_size=1.0"], "val_size must be a number in [0, 1), got 1.0"),
    ],
)
def test_a_bad_value_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, args, message):
    folder = tmp_path / "run"
    line = one_error(monkeypatch, capsys, *DIGITS_SET, *args, "--run-dir", str(folder))
    assert line == f"error: {message}"
    assert not folder.exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"model_options = 5\n", "model_options must be a table of KEY = VALUE, got 5"),
        (b'rule_options = "fa"\n', "rule_options must be a table of KEY = VALUE, got 'fa'"),
        (b'dataset = "digits"\nrule = "caf\xe9"\n', "is not UTF-8 text; save it as UTF-8"),
        (b"epochs = \n", "is not valid TOML"),
    ],
)
def test_a_bad_config_file_is_one_line(tmp_path, monkeypatch, capsys, text, message):
    path = tmp_path / "run.toml"
    path.write_bytes(text)
    assert message in one_error(monkeypatch, capsys, "train", "--config", str(path))


def test_the_python_api_raises_the_same_config_error():
    import apical

    with pytest.raises(apical.ConfigError, match=r"^momentum must be a number in \[0, 1\), got 5$"):
        TrainConfig.from_dict({"momentum": 5})
    with pytest.raises(apical.ConfigError, match="momentum must be a number in"):
        train(TrainConfig(momentum=5.0), progress=False)  # built directly: checked in train


# -- 7. broken run folders ----------------------------------------------------------------
def _finished(folder: Path, **kw) -> None:
    train(xor_config(folder, **kw), progress=False)


def test_resuming_a_broken_folder_is_one_line(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "run"
    _finished(folder)
    config = folder / "config.json"
    saved = config.read_text()
    config.write_text(saved.replace('"lr": 0.05', '"lr": "abc"'))
    assert one_error(monkeypatch, capsys, "train", "--resume", "--run-dir", str(folder)) == (
        "error: lr must be a number, got 'abc'"
    )
    config.write_text("{not json")
    line = one_error(monkeypatch, capsys, "train", "--resume", "--run-dir", str(folder))
    assert line == f"error: {config} is unreadable (JSONDecodeError); restore or remove it"
    config.write_text(saved)
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    del state["optimizer"]
    torch.save(state, folder / "checkpoint.pt")
    line = one_error(
        monkeypatch, capsys, "train", "--resume", "--run-dir", str(folder), "--epochs", "2"
    )
    assert line.startswith(f"error: the checkpoint of {folder} does not fit this run (KeyError")


def test_resuming_with_the_checkpoint_of_another_model_is_one_line(tmp_path, monkeypatch, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    _finished(a, model_options={"hidden": [8]})
    _finished(b, model_options={"hidden": [4]})
    (a / "checkpoint.pt").write_bytes((b / "checkpoint.pt").read_bytes())
    line = one_error(monkeypatch, capsys, "train", "--resume", "--run-dir", str(a), "--epochs", "2")
    assert line.startswith(f"error: the checkpoint of {a} does not fit this run (RuntimeError")
    assert line.endswith("start a new run")


def test_plot_reports_a_corrupt_folder_and_draws_the_rest(tmp_path, monkeypatch, capsys):
    _finished(tmp_path / "exp" / "good")
    _finished(tmp_path / "exp" / "bad")
    (tmp_path / "exp" / "bad" / "metrics.jsonl").write_text('{"epoch": 1}\n{torn')
    code, out, err = run(monkeypatch, capsys, "plot", str(tmp_path / "exp"))
    assert code == 0 and out.startswith("figure: ")
    assert err.strip() == (
        f"skipped: {tmp_path / 'exp' / 'bad' / 'metrics.jsonl'} line 2 is "
        "not a JSON row; the file is corrupt: restore it or remove the run"
    )
    line = one_error(monkeypatch, capsys, "plot", str(tmp_path / "exp" / "bad"))
    assert line.startswith("error: no training run in") and "line 2 is not a JSON row" in line


# -- 8. memory ---------------------------------------------------------------------------
def test_out_of_memory_says_how_much_was_asked_for(monkeypatch, capsys):
    line = one_error(monkeypatch, capsys, *DIGITS[:3], "--hidden", "1000000,1000000")
    assert line.startswith("error: out of memory: the run asked for 4 TB at once; make the model")


# -- 9-10. defaults that failed silently; IDX messages ------------------------------------
def test_mnist_files_are_not_read_as_fashion_mnist(monkeypatch, capsys):
    mnist = dataset_dir("mnist")
    line = one_error(
        monkeypatch, capsys, "train", "--dataset", "fashion-mnist", "--data-dir", str(mnist)
    )
    assert line == (
        f"error: {mnist / 'train-images-idx3-ubyte.gz'} is the official mnist file, "
        "but dataset fashion-mnist was asked for; point --data-dir (or APICAL_DATA) "
        "at the folder holding fashion-mnist/"
    )


def test_no_validation_split_reports_no_validation(tmp_path, monkeypatch, capsys):
    code, out, err = run(
        monkeypatch, capsys, *DIGITS, "--set", "val_size=0", "--run-dir", str(tmp_path / "run")
    )
    assert code == 0, err
    assert "val acc -" in out.splitlines()[0]
    row = RunFolder(tmp_path / "run").rows()[0]
    assert row["val_accuracy"] is None and row["val_loss"] is None and row["test_accuracy"] > 0


def test_the_epoch_line_says_when_its_angle_was_measured(monkeypatch, capsys):
    # digits: 21 steps per epoch, so with a probe every 100 steps epoch 2 shows step 0's
    code, out, _ = run(monkeypatch, capsys, *DIGITS[:-4], "--epochs", "2", "--rule", "fa")
    lines = out.splitlines()
    assert code == 0 and "(probed at step 0)" in lines[0] and "(probed at step 0)" in lines[1]
    code, out, _ = run(
        monkeypatch,
        capsys,
        *DIGITS[:-4],
        "--rule",
        "fa",
        "--epochs",
        "1",
        "--set",
        "probe_epochs=true",
        "--probe-every",
        "0",
    )
    assert code == 0 and "probed at" not in out and "angle -" not in out


def test_run_files_follow_the_umask(tmp_path):
    _finished(tmp_path / "run")
    mask = os.umask(0)
    os.umask(mask)
    for f in (tmp_path / "run").iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"",
            "holds 0 bytes once unzipped: the file is empty or truncated; download the "
            "official images file again",
        ),
        (
            struct.pack(">II", 0x0801, 3) + b"abc",
            "is not an IDX file of images (magic 0x801, expected 0x803); download the official "
            "images file again",
        ),
    ],
)
def test_empty_and_foreign_idx_files_say_what_to_do(
    tmp_path, monkeypatch, capsys, content, message
):
    make_idx_set(tmp_path / "mnist")
    with gzip.open(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(content)
    line = one_error(
        monkeypatch, capsys, "train", "--dataset", "mnist", "--data-dir", str(tmp_path)
    )
    assert line.endswith(message) and "None" not in line


def test_an_error_inside_apical_still_shows_its_traceback(monkeypatch, capsys):
    """Only a user's mistake is one line: a bug keeps its traceback."""

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "run_training", broken)
    monkeypatch.setattr(sys, "argv", ["apical", *DIGITS])
    with pytest.raises(ZeroDivisionError):
        cli.main()


def test_a_json_row_file_written_by_train_is_strict_json(tmp_path):
    _finished(tmp_path / "run")
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    with pytest.raises(ApicalError, match="nothing to resume"):
        RunFolder(tmp_path / "none").checkpoint()


def test_a_missing_optional_engine_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    """Ray Tune and TensorBoard are extras: without them --ray and --tensorboard say which
    extra to install."""
    from apical.errors import ApicalError
    from apical.train import TrainConfig, train
    from apical.tune import RayOptions, train_on_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    config = TrainConfig(dataset="digits", epochs=1, probe_every=0, device="cpu",
                         run_dir=str(tmp_path / "run"), tensorboard=True)  # fmt: skip
    with pytest.raises(ApicalError, match=r"pip install 'apical\[distributed\]'"):
        train_on_ray({"a": config}, RayOptions(), tmp_path / "ray")
    with pytest.raises(ApicalError, match=r"pip install 'apical\[tensorboard\]'"):
        train(config, progress=False)
