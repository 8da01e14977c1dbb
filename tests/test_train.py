"""The trainer: the same seed gives the same weights, an interrupted run resumed from its
checkpoint ends with exactly the uninterrupted run's weights, a NaN stops the run naming
epoch and step with the last checkpoint intact, and optimizer groups/clipping are honoured."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from apical.errors import ApicalError
from apical.train import TrainConfig, load_config_data, train


def _cfg(tmp_path=None, **kw) -> TrainConfig:
    base = dict(
        dataset="digits", model="mlp", model_options={"hidden": [32]}, rule="fa",
        epochs=3, batch_size=64, lr=0.05, probe_every=10, probe_size=64, device="cpu",
        run_dir=str(tmp_path) if tmp_path is not None else None,
    )  # fmt: skip
    return TrainConfig.from_dict({**base, **kw})


def _weights(run):
    return {k: v.detach().clone() for k, v in run.model.state_dict().items()}


@pytest.mark.parametrize("rule", ["fa", "sign_symmetry"])
def test_same_seed_same_result(rule):
    opts = {"random_magnitudes": True} if rule == "sign_symmetry" else {}
    a = train(_cfg(rule=rule, rule_options=opts), progress=False)
    b = train(_cfg(rule=rule, rule_options=opts), progress=False)
    c = train(_cfg(rule=rule, rule_options=opts, seed=1), progress=False)
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["1.weight"], wc["1.weight"])
    assert a.history == [{**r, "seconds": a.history[i]["seconds"]} for i, r in enumerate(b.history)]


RESUME_OPTIONS = {
    "kolen_pollack": {},
    "sign_symmetry": {"random_magnitudes": True},
    # a relaxing shell (apical.energy.Relaxing) around the net, random-sign nudging
    "equilibrium_propagation": {"free_steps": 8, "nudged_steps": 4, "nudging": "random_sign"},
}


@pytest.mark.parametrize("rule", list(RESUME_OPTIONS))
def test_resume_gives_the_uninterrupted_weights(tmp_path, rule):
    opts = RESUME_OPTIONS[rule]
    kw = dict(rule=rule, rule_options=opts, optimizer="adam", lr=0.003, weight_decay=1e-3)
    full = train(_cfg(tmp_path / "full", **kw), progress=False)
    train(_cfg(tmp_path / "cut", epochs=2, **kw), progress=False)  # "interrupted" after 2
    resumed = train(_cfg(tmp_path / "cut", **kw), resume=True, progress=False)
    wf, wr = _weights(full), _weights(resumed)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    rows = [json.loads(s) for s in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in full.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert resumed.probes == full.probes


def test_run_folder_contents(tmp_path):
    run = train(_cfg(tmp_path, epochs=2), progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["rule"] == "fa"
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["step"] == run.history[-1]["step"]
    assert {"model", "optimizer", "rng", "torch_rng"} <= set(ckpt)
    assert {"rule", "shuffle"} <= set(ckpt["rng"])
    probes = (tmp_path / "probes.jsonl").read_text().splitlines()
    # the checkpoint holds state and how many rows belong to it, not the rows themselves
    assert ckpt["rows"] == {"metrics": 2, "probes": len(probes)} and "history" not in ckpt
    assert json.loads(probes[0])["step"] == 0
    last = json.loads(probes[-1])
    assert last["images"] == last["step"] * run.config.batch_size > 0
    assert 0 < last["mean_hidden_angle"] < 90
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_probe_rows_count_the_classes_predicted_on_the_probe_batch():
    run = train(_cfg(epochs=1, probe_every=0, probe_epochs=True), progress=False)
    data = load_config_data(run.config)
    pick = torch.Generator().manual_seed(run.config.seed + 4)  # the trainer's probe draw
    order = torch.randperm(len(data.x_train), generator=pick)
    run.model.eval()
    with torch.no_grad():
        out = run.model(data.x_train[order[: run.config.probe_size]])
    assert run.probes[-1]["step"] == run.history[-1]["step"]
    assert run.probes[-1]["classes_predicted"] == len(out.argmax(-1).unique()) > 1
    assert run.history[-1]["val_classes_predicted"] > 1


def test_evaluating_every_other_epoch_trains_the_same_run(tmp_path):
    every = train(_cfg(tmp_path / "every", epochs=3), progress=False)
    sparse = train(_cfg(tmp_path / "sparse", epochs=2, eval_every=2), progress=False)
    assert sparse.history[0]["test_accuracy"] is None and sparse.history[0]["val_loss"] is None
    measured = {k: v for k, v in sparse.history[1].items() if k != "seconds"}
    assert measured == {k: v for k, v in every.history[1].items() if k != "seconds"}
    # how often a run is measured is not what the run is: it resumes with another value,
    # and its last epoch is always measured
    resumed = train(_cfg(tmp_path / "sparse", epochs=3, eval_every=5), resume=True,
                    progress=False)  # fmt: skip
    assert resumed.history[-1]["test_accuracy"] == every.history[-1]["test_accuracy"]
    wa, wb = _weights(every), _weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_refuses_a_different_config(tmp_path):
    train(_cfg(tmp_path, epochs=1), progress=False)
    with pytest.raises(ApicalError, match="differs in lr"):
        train(_cfg(tmp_path, lr=0.1), resume=True, progress=False)
    with pytest.raises(ApicalError, match="nothing to resume"):
        train(_cfg(tmp_path / "empty"), resume=True, progress=False)


def test_nan_stops_with_epoch_and_step_and_keeps_the_checkpoint(tmp_path):
    from apical.data import load_dataset

    data = load_dataset("digits", val_size=0.1, seed=0)
    train(_cfg(tmp_path, epochs=1), progress=False, data=data)
    good = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    # one poisoned training example; find the step of epoch 2 whose batch holds it
    poisoned = data.x_train.clone()
    poisoned[17] = float("nan")
    bad = dataclasses.replace(data, x_train=poisoned)
    shuffle = torch.Generator().manual_seed(0 + 3)
    torch.randperm(len(poisoned), generator=shuffle)  # epoch 1
    position = torch.randperm(len(poisoned), generator=shuffle).tolist().index(17)
    expected = good["step"] + position // 64 + 1
    with pytest.raises(ApicalError, match=f"NaN or inf at epoch 2, step {expected};") as e:
        train(_cfg(tmp_path, epochs=3), resume=True, progress=False, data=bad)
    assert "last good checkpoint (epoch 1)" in str(e.value)
    after = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert after["epoch"] == 1 and after["step"] == good["step"]
    assert all(torch.equal(after["model"][k], v) for k, v in good["model"].items())


def test_output_learning_rate_and_gradient_clipping():
    run = train(_cfg(epochs=1, output_lr=0.0, rule="backprop", probe_every=0), progress=False)
    torch.manual_seed(0)
    from apical.data import load_dataset
    from apical.train import build

    data = load_dataset("digits", val_size=0.1, seed=0)
    fresh, _ = build(_cfg(), data, torch.device("cpu"))
    # output layer frozen by lr 0, hidden layer moved
    assert torch.equal(run.model[3].weight, fresh[3].weight)
    assert not torch.equal(run.model[1].weight, fresh[1].weight)
    clipped = train(_cfg(epochs=1, grad_clip=1e-6, lr=1.0, momentum=0.0, probe_every=0),
                    progress=False)  # fmt: skip
    moved = (clipped.model[1].weight - fresh[1].weight).norm()
    n_steps = clipped.history[-1]["step"]
    assert moved <= 1e-6 * n_steps * 1.001


def test_clip_grads_scales_a_shared_direction_once():
    """A learned feedback tensor's .grad is its weight's direction itself (no copy): clipping
    must equal clip_grad_norm_ over separate copies."""
    from torch import nn

    from apical.train import clip_grads

    g = torch.tensor([[3.0, 4.0]])
    shared, copies = nn.Linear(2, 1, bias=False), nn.Linear(2, 1, bias=False)
    for net in (shared, copies):
        net.feedback = nn.Parameter(torch.zeros(1, 2))
        net.weight.grad = g.clone()
    shared.feedback.grad = shared.weight.grad
    copies.feedback.grad = g.clone()
    clip_grads(shared, 1.0)
    nn.utils.clip_grad_norm_(copies.parameters(), 1.0)
    torch.testing.assert_close(shared.weight.grad, copies.weight.grad)
    torch.testing.assert_close(shared.weight.grad, g / (50**0.5))  # norm over both: sqrt(50)


def test_bad_config_values():
    with pytest.raises(ApicalError, match="unknown config key lerning_rate"):
        TrainConfig.from_dict({"lerning_rate": 0.1})
    with pytest.raises(ApicalError, match="optimizer must be one of 'sgd', 'adam'"):
        train(_cfg(optimizer="lbfgs"), progress=False)
    with pytest.raises(ApicalError, match="lr must be a finite number, got nan"):
        train(_cfg(lr=float("nan")), progress=False)
    with pytest.raises(ApicalError, match="unknown model"):
        train(_cfg(model="transformer"), progress=False)


def test_xor_is_learned_by_feedback_alignment():
    run = train(
        TrainConfig(dataset="xor", model_options={"hidden": [8]}, rule="fa", epochs=300,
                    batch_size=4, lr=0.2, probe_every=0, device="cpu"),
        progress=False,
    )  # fmt: skip
    assert run.history[-1]["test_accuracy"] == 1.0


def test_cosine_schedule_survives_an_interruption(tmp_path):
    def interrupt(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tmp_path, epochs=2, schedule="cosine"), progress=False, on_epoch=interrupt)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    # T_max = 2 epochs: after one epoch lr = 0.05 * (1 + cos(pi / 2)) / 2
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.025)
    resumed = train(_cfg(tmp_path, epochs=2, schedule="cosine"), resume=True, progress=False)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    full = train(_cfg(tmp_path / "full", epochs=2, schedule="cosine"), progress=False)
    wr, wf = _weights(resumed), _weights(full)
    assert all(torch.equal(wr[k], wf[k]) for k in wf)


def test_an_adam_run_saved_before_adam_was_fused_resumes(tmp_path):
    """A checkpoint whose Adam groups say fused=None (written before the trainer fused
    Adam) resumes; its optimizer keeps running as it was saved."""
    cfg = dict(dataset="xor", epochs=1, batch_size=4, probe_every=0, device="cpu",
               optimizer="adam", lr=0.01, run_dir=str(tmp_path / "r"))  # fmt: skip
    train(TrainConfig(**cfg), progress=False)
    path = tmp_path / "r" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    for group in state["optimizer"]["param_groups"]:
        group["fused"] = None
    torch.save(state, path)
    run = train(TrainConfig(**{**cfg, "epochs": 2}), resume=True, progress=False)
    assert [r["epoch"] for r in run.history] == [1, 2]


def test_cpu_denormals_read_as_zero_while_training_and_not_after():
    tiny = 1e-40  # below float32's normal range (1.18e-38)
    seen = []
    train(_cfg(epochs=1), progress=False,
          on_epoch=lambda row: seen.append(torch.tensor([tiny]).item()))  # fmt: skip
    assert seen == [0.0]
    assert torch.tensor([tiny]).item() == pytest.approx(tiny, rel=0.01)


def test_a_fresh_process_trains_without_numpy_warning_of_flushed_limits():
    """Modules imported while denormals are flushed (scikit-learn's, for the digits) would
    warn that NumPy's smallest subnormal is zero unless its limits were read before."""
    code = ("from apical.train import TrainConfig, train; train(TrainConfig(dataset='digits', "
            "model='mlp', rule='fa', epochs=1, probe_every=0), progress=False)")  # fmt: skip
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "subnormal" not in done.stderr
