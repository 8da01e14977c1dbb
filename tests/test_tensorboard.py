"""TensorBoard events repeat the run folder's rows (apical.tensorboard)."""

from __future__ import annotations

import pytest

from apical.errors import ConfigError
from apical.run_folder import RunFolder
from apical.train import TrainConfig, train

pytest.importorskip("tensorboard", reason="the tensorboard extra is in the dev extra")
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)


def events(folder) -> EventAccumulator:
    acc = EventAccumulator(
        str(folder / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0}
    )
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def _cfg(run_dir, **kw) -> TrainConfig:
    fields = dict(dataset="digits", model_options={"hidden": [16]}, rule="fa", lr=0.05,
                  epochs=2, batch_size=64, probe_every=7, probe_epochs=True, probe_size=32,
                  device="cpu", run_dir=None if run_dir is None else str(run_dir),
                  tensorboard=True)  # fmt: skip
    fields.update(kw)
    return TrainConfig.from_dict(fields)


def test_events_hold_the_rows_numbers_also_after_a_resume(tmp_path):
    train(_cfg(tmp_path / "run"), progress=False)
    train(_cfg(tmp_path / "run", epochs=3), resume=True, progress=False)
    folder = RunFolder(tmp_path / "run")
    acc = events(tmp_path / "run")
    rows = folder.rows()
    assert len(rows) == 3
    for key in ("train_loss", "val_accuracy", "test_loss", "seconds"):
        got = scalars(acc, f"metrics/{key}")
        assert got == pytest.approx({r["step"]: r[key] for r in rows}, rel=1e-6), key
    probes = folder.rows("probes")
    assert len(probes) > 3
    for layer in probes[0]["layers"]:
        got = scalars(acc, f"probes/{layer}/angle")
        want = {p["step"]: p["layers"][layer]["angle"] for p in probes}
        assert got == pytest.approx(want, rel=1e-6), layer
    histograms = acc.Tags()["histograms"]
    assert "weights/1.weight" in histograms
    assert [e.step for e in acc.Histograms("weights/1.weight")] == [r["step"] for r in rows]


def test_replicas_get_a_tag_each(tmp_path):
    train(_cfg(tmp_path / "run", seeds=[0, 1], epochs=1, probe_every=0), progress=False)
    acc = events(tmp_path / "run")
    rows = RunFolder(tmp_path / "run").rows()
    for r in (0, 1):
        got = scalars(acc, f"replica{r}/metrics/test_accuracy")
        assert got == pytest.approx({rows[r]["step"]: rows[r]["test_accuracy"]})


def test_tensorboard_without_a_run_folder_is_one_line():
    with pytest.raises(ConfigError, match="set run_dir"):
        _cfg(None)
