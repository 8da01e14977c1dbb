"""Replicas: R networks in one model compute what each computes alone; the trainer's
seeds and lr_scales train them side by side as independent runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import apical
from apical.errors import ApicalError, DivergedError
from apical.metrics import evaluate
from apical.replicas import replica, replicate
from apical.train import TrainConfig, train

RULES = [
    ("backprop", {"loss": "mse"}),
    ("fa", {"loss": "cross_entropy"}),
    ("burstprop", {"learn_feedback": True, "recurrent": True}),
    ("burstprop", {"loss": "cross_entropy", "recurrent": True}),
    ("burstccn", {"q": "independent"}),
]


def _net(out_act: bool) -> nn.Sequential:
    layers = [nn.Flatten(), nn.Linear(12, 9), nn.Sigmoid(), nn.Linear(9, 7), nn.Sigmoid()]
    layers.append(nn.Linear(7, 4))
    if out_act:
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


def _models(name, opts, n=3):
    rule = apical.make_rule(name, **opts)
    out_act = rule.loss == "mse"
    models = []
    for s in range(n):
        torch.manual_seed(s)
        gen = torch.Generator().manual_seed(s + 100)
        models.append(apical.convert(_net(out_act), rule, torch.randn(2, 3, 4), generator=gen))
    return rule, models


def _assert_each_replica_alone(rule, models, x, y, rtol: float, atol: float,
                               increments_atol: float) -> None:  # fmt: skip
    """The replicated model's step is, per replica r, models[r]'s step on x[r], y[r]:
    directions, buffer increments, the `apical` diagnostics and the loss."""
    together = rule.directions(replicate(models), x, y)
    assert together.loss.shape == (len(models),)
    for r, model in enumerate(models):
        alone = rule.directions(model, x[r], y[r])
        assert set(alone.directions) == set(together.directions)
        for key, d in alone.directions.items():
            torch.testing.assert_close(together.directions[key][r], d, rtol=rtol, atol=atol)
        for key, z in alone.dense_increments().items():
            got = together.dense_increments()[key][r]
            torch.testing.assert_close(got, z, rtol=rtol, atol=increments_atol)
        for layer, diag in alone.diagnostics.items():
            got = together.diagnostics[layer]["apical"][r]
            torch.testing.assert_close(got, diag["apical"], rtol=rtol, atol=0)
        torch.testing.assert_close(together.loss[r], alone.loss)


@pytest.mark.parametrize(("name", "opts"), RULES)
def test_each_replica_gets_the_step_it_gets_alone(name, opts):
    rule, models = _models(name, opts)
    x, y = torch.randn(3, 5, 3, 4), torch.randint(0, 4, (3, 5))
    _assert_each_replica_alone(rule, models, x, y, rtol=1e-5, atol=1e-7, increments_atol=1e-9)


def test_replica_round_trip_and_evaluation():
    _, models = _models("fa", {})
    stacked = replicate(models)
    assert stacked[1].weight.shape == (3, 9, 12) and stacked[1].feedback is None
    assert stacked[3].feedback.shape == (3, 7, 9)
    x, y = torch.randn(20, 3, 4), torch.randint(0, 4, (20,))
    together = evaluate(stacked, x, y, batch_size=7, replicas=3)
    for r, model in enumerate(models):
        back = replica(stacked, r)
        for (k, a), b in zip(back.state_dict().items(), model.state_dict().values(), strict=True):
            assert torch.equal(a, b), k
        alone = evaluate(model, x, y, batch_size=7)
        assert together["accuracy"][r] == alone["accuracy"]
        assert together["classes_predicted"][r] == alone["classes_predicted"]
        assert together["loss"][r] == pytest.approx(alone["loss"], rel=1e-6)


CONV_RULES = [
    ("backprop", {"loss": "mse"}),
    ("fa", {}),
    ("dfa", {}),
    ("sign_symmetry", {}),
    ("kolen_pollack", {}),
    ("burstprop", {"learn_feedback": True, "recurrent": True, "recurrent_conv": True}),
    ("burstccn", {"q": "independent"}),
]


def _conv_net(pool: bool) -> nn.Sequential:
    """Two conv layers (a strided one, or max pooling between), then two linear ones."""
    first = [nn.Conv2d(2, 4, 3), nn.Sigmoid()]
    if pool:
        return nn.Sequential(*first, nn.MaxPool2d(2), nn.Conv2d(4, 3, 3), nn.Sigmoid(),
                             nn.Flatten(), nn.Linear(3, 5), nn.Sigmoid(), nn.Linear(5, 3),
                             nn.Sigmoid()).double()  # fmt: skip
    return nn.Sequential(*first, nn.Conv2d(4, 3, 3, stride=2), nn.Sigmoid(), nn.Flatten(),
                         nn.Linear(12, 5), nn.Sigmoid(), nn.Linear(5, 3),
                         nn.Sigmoid()).double()  # fmt: skip


@pytest.mark.parametrize(("name", "opts"), CONV_RULES)
def test_each_conv_replica_gets_the_step_it_gets_alone(name, opts):
    """The replicas' grouped convolution computes each replica's step (float64: to
    rounding), directions, buffer increments (burstprop's conv Z) and loss."""
    rule = apical.make_rule(name, **opts)
    pool = name not in ("burstprop", "burstccn")  # their chains have no pooling
    models = []
    for s in range(3):
        torch.manual_seed(s)
        gen = torch.Generator().manual_seed(s + 100)
        example = torch.randn(2, 2, 8, 8, dtype=torch.float64)
        models.append(apical.convert(_conv_net(pool), rule, example, generator=gen))
    x = torch.randn(3, 6, 2, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (3, 6))
    _assert_each_replica_alone(rule, models, x, y, rtol=1e-9, atol=1e-15, increments_atol=1e-15)


def test_a_conv_replica_round_trips():
    rule = apical.make_rule("fa")
    models = [apical.convert(_conv_net(True), rule, torch.randn(2, 2, 8, 8).double())
              for _ in range(2)]  # fmt: skip
    stacked = replicate(models)
    assert stacked[0].weight.shape == (2, 4, 2, 3, 3)
    x = torch.randn(5, 2, 8, 8, dtype=torch.float64)
    out = stacked(x.expand(2, *x.shape))
    for r, model in enumerate(models):
        back = replica(stacked, r)
        assert type(back[2]) is nn.MaxPool2d
        for (k, a), b in zip(back.state_dict().items(), model.state_dict().values(), strict=True):
            assert torch.equal(a, b), k
        torch.testing.assert_close(out[r], model(x), rtol=1e-12, atol=1e-14)


def test_what_mixes_the_replicas_does_not_replicate():
    rule = apical.make_rule("fa")
    bn = apical.convert(
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                      nn.Linear(8, 2)),
        rule,
        torch.randn(2, 1, 4, 4),
    )  # fmt: skip
    with pytest.raises(ApicalError, match="module '1' is a BatchNorm2d"):
        replicate([bn, bn])


def test_conv_seeds_train_side_by_side_as_they_train_alone():
    kw = dict(model="convnet", model_options={"channels": [4, 6], "hidden": 16},
              rule="fa", rule_options={}, optimizer="sgd", loss="cross_entropy", lr=0.05,
              weight_decay=0.0, epochs=1)  # fmt: skip
    together = train(_cfg(seeds=[3, 4], **kw), progress=False)
    for seed in (3, 4):
        alone = train(_cfg(seeds=[seed], **kw), progress=False)
        got = _strip(next(h for h in together.history if h["seed"] == seed))
        for k, v in _strip(alone.history[-1]).items():  # float rounding of grouped kernels
            assert got[k] == pytest.approx(v, rel=1e-4, abs=1e-9), k


def test_augmented_conv_seeds_train_side_by_side_as_they_train_alone():
    """Each replica draws its crops and flips from its own seed's generator."""
    kw = dict(model="convnet", model_options={"channels": [4, 6], "hidden": 16},
              rule="fa", rule_options={}, optimizer="sgd", loss="cross_entropy", lr=0.05,
              weight_decay=0.0, epochs=1, augment="crop_flip")  # fmt: skip
    together = train(_cfg(seeds=[3, 4], **kw), progress=False)
    for seed in (3, 4):
        alone = train(_cfg(seeds=[seed], **kw), progress=False)
        got = _strip(next(h for h in together.history if h["seed"] == seed))
        for k, v in _strip(alone.history[-1]).items():
            assert got[k] == pytest.approx(v, rel=1e-4, abs=1e-9), k
    plain = train(_cfg(seeds=[3, 4], **{**kw, "augment": "none"}), progress=False)
    assert plain.history[0]["train_loss"] != together.history[0]["train_loss"]


def _cfg(**kw) -> TrainConfig:
    base = dict(
        dataset="digits", model="burstprop_mlp", model_options={"hidden": [24, 24]},
        loss="mse", rule="burstprop", rule_options={"learn_feedback": True},
        optimizer="decoupled_sgd", lr=0.05, output_lr=0.02, weight_decay=1e-6,
        epochs=2, batch_size=32, probe_every=0, probe_epochs=True, probe_size=64,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _strip(row):
    return {k: v for k, v in row.items() if k not in ("seconds", "replica")}


def test_seeds_train_side_by_side_as_they_train_alone():
    together = train(_cfg(seeds=[3, 4], lr_scales=[1.0, 2.0]), progress=False)
    assert [(r["epoch"], r["seed"], r["lr_scale"]) for r in together.history] == [
        (1, 3, 1.0), (1, 4, 2.0), (2, 3, 1.0), (2, 4, 2.0)
    ]  # fmt: skip
    for r, (seed, scale) in enumerate([(3, 1.0), (4, 2.0)]):
        alone = train(_cfg(seeds=[seed], lr_scales=[scale]), progress=False)
        rows = [_strip(h) for h in together.history if h["seed"] == seed]
        for got, want in zip(rows, map(_strip, alone.history), strict=True):
            assert got.keys() == want.keys()
            for k, v in want.items():  # equal up to float rounding of batched kernels
                assert got[k] == pytest.approx(v, rel=1e-4, abs=1e-9), k
        assert together.probes[-2 + r]["classes_predicted"] == alone.probes[-1]["classes_predicted"]
        assert together.probes[-2 + r]["layers"]["1"]["apical"] == pytest.approx(
            alone.probes[-1]["layers"]["1"]["apical"], rel=1e-4
        )


def test_an_lr_scale_is_the_scaled_learning_rate():
    scaled = train(_cfg(seeds=[5], lr_scales=[2.0], epochs=1), progress=False)
    direct = train(_cfg(seeds=[5], lr=0.1, output_lr=0.04, epochs=1), progress=False)
    for k, v in _strip(direct.history[-1]).items():
        if k != "lr_scale":
            assert scaled.history[-1][k] == pytest.approx(v, rel=1e-5, abs=1e-9), k


def test_a_diverging_replica_is_marked_and_the_others_go_on():
    kw = dict(rule="backprop", rule_options={}, optimizer="sgd", weight_decay=0.0, epochs=1,
              model="mlp", model_options={"hidden": [24], "activation": "relu"},
              loss="cross_entropy")  # fmt: skip
    run = train(_cfg(seeds=[0, 0], lr_scales=[1.0, 1e38], **kw), progress=False)
    ok, bad = run.history
    assert bad["diverged_step"] >= 1
    alone = train(_cfg(seeds=[0], lr_scales=[1.0], **kw), progress=False).history[-1]
    assert "diverged_step" not in ok
    assert ok["val_accuracy"] == alone["val_accuracy"]
    assert ok["train_loss"] == pytest.approx(alone["train_loss"], rel=1e-5)
    with pytest.raises(DivergedError, match="NaN or inf"):
        train(_cfg(seeds=[0, 1], lr_scales=[1e38, 1e38], **kw), progress=False)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"seeds": [0], "lr_scales": [1.0, 2.0]}, "lr_scales has 2 entries for 1 seeds"),
        ({"seeds": [0], "lr_scales": [2.0], "optimizer": "adam"}, "lr_scales needs optimizer"),
        ({"seeds": [], "lr_scales": None}, "seeds must be a non-empty list"),
        ({"lr_scales": [2.0]}, "lr_scales needs seeds"),
        (
            {"seeds": [0], "lr_scales": [float("nan")]},
            r"lr_scales must be a list \(each a finite number\)",
        ),
        ({"train_size": 10**6}, "train_size 1000000 is not between 1 and"),
    ],
)
def test_bad_replica_settings_name_the_problem(kw, message):
    with pytest.raises(ApicalError, match=message):
        train(_cfg(**kw), progress=False)
