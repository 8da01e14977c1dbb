"""BurstCCN (CCN 2022): with Q = p_b Y the update without a teacher is zero; linearised
with Y = W^T it is p_b times backprop's gradient; one step equals an independent NumPy
computation of its equations; replicas and the probes' delta angles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import apical
from apical.errors import ApicalError, ConfigError
from apical.metrics import alignment
from tests.test_burstprop import _convnet, _mlp


def _grads_of_mean_sq_error(net, x, y):
    params = dict(net.named_parameters())
    t = nn.functional.one_hot(y, 3).to(x.dtype)
    loss = (0.5 * ((net(x) - t) ** 2).sum(-1)).mean()
    return dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))


@pytest.mark.parametrize(("build", "shape"), [(_mlp, (6,)), (_convnet, (2, 8, 8))])
def test_linearised_with_symmetric_feedback_is_half_of_backprop(build, shape):
    torch.manual_seed(0)
    x, y = torch.randn(9, *shape, dtype=torch.float64), torch.randint(0, 3, (9,))
    rule = apical.make_rule("burstccn", linearize=True, symmetric=True)
    net = apical.convert(build(), rule, x)
    step = rule.directions(net, x, y)
    exact = _grads_of_mean_sq_error(net, x, y)
    assert set(step.directions) == set(exact)
    for key, g in exact.items():
        torch.testing.assert_close(step.directions[key], 0.5 * g, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize(("build", "shape"), [(_mlp, (6,)), (_convnet, (2, 8, 8))])
def test_without_a_teacher_the_cancellation_silences_every_update(build, shape):
    torch.manual_seed(1)
    x = torch.randn(9, *shape, dtype=torch.float64)
    rule = apical.make_rule("burstccn")
    net = apical.convert(build(), rule, x)
    for layer in (m for m in net.modules() if getattr(m, "feedback", None) is not None):
        y_path, q_path = layer.feedback[0], layer.feedback[1]
        torch.testing.assert_close(q_path, 0.5 * y_path, rtol=0, atol=0)  # Q = p_b Y
    with torch.no_grad():
        targets = net(x)  # the output is the target: no teaching signal
    step = rule.directions(net, x, targets)
    assert all(float(d.abs().max()) == 0 for d in step.directions.values())
    # Q drawn on its own breaks the cancellation: the net learns from nothing
    rule = apical.make_rule("burstccn", q="independent")
    net = apical.convert(build(), rule, x)
    with torch.no_grad():
        targets = net(x)
    step = rule.directions(net, x, targets)
    assert max(float(d.abs().max()) for d in step.directions.values()) > 1e-3


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.mark.parametrize("q", ["independent", "cancel"])
def test_one_step_equals_an_independent_numpy_computation(q):
    # the reference always sends bursts through Y and events through Q, two products;
    # under "cancel" the rule sums the pathways first (one product)
    torch.manual_seed(2)
    x, y = torch.randn(5, 6, dtype=torch.float64), torch.randint(0, 3, (5,))
    rule = apical.make_rule("burstccn", q=q)
    net = apical.convert(_mlp(), rule, x)
    step = rule.directions(net, x, y)
    layers = [net[1], net[3], net[5]]
    w = [m.weight.detach().numpy() for m in layers]
    c = [m.bias.detach().numpy() for m in layers]
    ys = [None] + [m.feedback[0].numpy() for m in layers[1:]]
    qs = [None] + [m.feedback[1].numpy() for m in layers[1:]]
    a = [x.numpy()]
    for wl, cl in zip(w, c, strict=True):
        a.append(_sigmoid(a[-1] @ wl.T + cl))
    t = np.eye(3)[y.numpy()]
    e = a[-1]
    p = 0.5 * (1 + (t - e) * (1 - e))
    signal = [None, None, (p - 0.5) * e]
    for k in (1, 0):
        u = (p * a[k + 2]) @ ys[k + 1] - a[k + 2] @ qs[k + 1]
        p = _sigmoid(4 * u * (1 - a[k + 1]))
        signal[k] = (p - 0.5) * a[k + 1]
    for k, name in enumerate(("1", "3", "5")):
        dw = -(signal[k].T @ a[k]) / 5  # -dW, batch mean
        db = -signal[k].sum(0) / 5
        np.testing.assert_allclose(step.directions[f"{name}.weight"].numpy(), dw, rtol=1e-12,
                                   atol=1e-15)  # fmt: skip
        np.testing.assert_allclose(step.directions[f"{name}.bias"].numpy(), db, rtol=1e-12,
                                   atol=1e-15)  # fmt: skip


def test_probes_see_backprops_errors_in_the_linear_symmetric_limit():
    x, y = torch.randn(16, 6, dtype=torch.float64), torch.randint(0, 3, (16,))
    rule = apical.make_rule("burstccn", linearize=True, symmetric=True)
    net = apical.convert(_mlp(), rule, x)
    rows = alignment(net, rule, x, y, torch.Generator().manual_seed(0))
    for name, row in rows.items():
        assert row["angle"] < 1e-5 and row["delta_angle"] < 1e-5, name
    assert rows["3"]["feedback_angle"] < 1e-5 and rows["5"]["feedback_angle"] < 1e-5  # Y = W
    assert "apical" in rows["1"] and "apical" in rows["3"]  # the hidden layers' |u|


@pytest.mark.parametrize(("build", "shape"), [(_mlp, (6,)), (_convnet, (2, 8, 8))])
def test_tied_feedback_follows_the_weights_and_symmetric_only_starts_there(build, shape):
    torch.manual_seed(3)
    x, y = torch.randn(9, *shape, dtype=torch.float64), torch.randint(0, 3, (9,))
    nets = {}
    for opt in ("tied", "symmetric"):
        rule = apical.make_rule("burstccn", **{opt: True})
        torch.manual_seed(4)
        net = apical.convert(build(), rule, x)
        sgd = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
        for _ in range(3):
            step = rule.directions(net, x, y)
            for name, p in net.named_parameters():
                p.grad = step.directions[name]
            sgd.step()
            rule.after_step(net, step)
        nets[opt] = net
    for tied, sym in zip(_fed_back(nets["tied"]), _fed_back(nets["symmetric"]), strict=True):
        torch.testing.assert_close(tied.feedback[0], tied.weight, rtol=0, atol=0)  # Y = W
        torch.testing.assert_close(tied.feedback[1], 0.5 * tied.weight, rtol=0, atol=0)
        assert float((sym.feedback[0] - sym.weight.detach()).abs().max()) > 1e-4  # Y stayed at W_0


def _fed_back(net):
    return [m for m in net.modules() if getattr(m, "feedback", None) is not None]


def test_what_burstccn_refuses():
    with pytest.raises(ConfigError, match="set loss = mse"):
        apical.make_rule("burstccn", loss="cross_entropy")
    with pytest.raises(ConfigError, match="give the feedback's scale"):
        apical.make_rule("burstccn", feedback={"scale": None})
    rule = apical.make_rule("burstccn")
    relu = apical.convert(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2),
                                        nn.Sigmoid()), rule, torch.randn(2, 4))  # fmt: skip
    with pytest.raises(ApicalError, match="needs logistic units"):
        rule.directions(relu, torch.randn(2, 4), torch.randint(0, 2, (2,)))
