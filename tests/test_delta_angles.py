"""The probes' delta angles (NN 2021 Fig. 5c/d): the mean per-example angle between the
error signal a rule delivers to a layer's output and backprop's d loss / d u_l."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import apical
from apical.metrics import alignment, example_angles
from apical.replicas import replica, replicate
from tests.test_burstprop import _convnet, _layers, _mlp


def test_example_angles_on_hand_made_signals():
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0], [3.0, -1.0, 0.5]])
    same = a * torch.tensor([[2.0], [0.5], [7.0]])  # positive multiples
    turned = torch.stack([torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, -2.0]),
                          torch.tensor([1.0, 3.0, 0.0])])  # fmt: skip
    torch.testing.assert_close(example_angles(a, same), torch.zeros(3, dtype=torch.float64),
                               atol=1e-6, rtol=0)  # fmt: skip
    torch.testing.assert_close(example_angles(a, turned), torch.full((3,), 90.0).double())
    torch.testing.assert_close(example_angles(a, -a), torch.full((3,), 180.0).double())
    zero = example_angles(a, torch.zeros_like(a))
    assert torch.isnan(zero).all()
    # images: each example's channels and pixels are one vector
    img = torch.randn(4, 2, 3, 3)
    assert float(example_angles(img, 5 * img).max()) < 1e-5


def _probe(rule, net, x, y):
    return alignment(net, rule, x, y, torch.Generator().manual_seed(0))


def test_backprop_delivers_its_own_errors():
    x, y = torch.randn(16, 6, dtype=torch.float64), torch.randint(0, 3, (16,))
    rule = apical.make_rule("backprop", loss="mse")
    rows = _probe(rule, apical.convert(_mlp(), rule, x), x, y)
    assert set(rows) == {"1", "3", "5"}
    assert all(row["delta_angle"] < 1e-5 for row in rows.values())


@pytest.mark.parametrize(("build", "shape"), [(_mlp, (6,)), (_convnet, (2, 8, 8))])
def test_linearised_burstprop_with_symmetric_feedback_sends_backprops_errors(build, shape):
    """Its error signal at layer l is p_b (beta/4)^(L-l) times backprop's for any Z
    (test_burstprop): the angle is 0 at every layer."""
    x, y = torch.randn(9, *shape, dtype=torch.float64), torch.randint(0, 3, (9,))
    rule = apical.make_rule(
        "burstprop", linearize=True, beta=2.5, recurrent_conv=True, symmetric=True
    )
    net = apical.convert(build(), rule, x)
    for layer in _layers(net):
        if layer.recurrent is not None:
            layer.recurrent.normal_(0, 3.0)
    rows = _probe(rule, net, x, y)
    assert len(rows) == len(_layers(net))
    for name, row in rows.items():
        assert row["delta_angle"] < 1e-5, name
    # with random feedback the hidden errors turn away, the output's does not
    rule = apical.make_rule("burstprop", linearize=True, beta=2.5)
    rows = _probe(rule, apical.convert(build(), rule, x), x, y)
    names = list(rows)
    assert rows[names[-1]]["delta_angle"] < 1e-5
    assert all(rows[n]["delta_angle"] > 10 for n in names[:-1])


def test_feedback_alignments_last_hidden_error_against_a_hand_computation():
    """FA's error at the last hidden layer is (delta_out B) * f'(u), backprop's (delta_out W)
    * f'(u), with the same output delta."""
    torch.manual_seed(1)
    x, y = torch.randn(32, 6, dtype=torch.float64), torch.randint(0, 3, (32,))
    rule = apical.make_rule("fa")
    net = apical.convert(nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double(),
                         rule, x)  # fmt: skip
    rows = _probe(rule, net, x, y)
    u = net[0](x)
    out = net[2](torch.tanh(u)).detach().requires_grad_(True)
    (delta_out,) = torch.autograd.grad(nn.functional.cross_entropy(out, y), out)
    slope = 1 - torch.tanh(u.detach()) ** 2
    ours = (delta_out @ net[2].feedback) * slope
    true = (delta_out @ net[2].weight.detach()) * slope
    expected = float(example_angles(ours, true).mean())
    assert rows["0"]["delta_angle"] == pytest.approx(expected, rel=1e-9)
    assert 0 < expected < 180 and rows["2"]["delta_angle"] < 1e-5


def test_each_replica_has_the_delta_angles_of_its_run_alone():
    x, y = torch.randn(12, 6), torch.randint(0, 3, (12,))
    rule = apical.make_rule("burstprop")
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(apical.convert(_mlp().float(), rule, x))
    stacked = replicate(models)
    rows = _probe(rule, stacked, x.expand(2, *x.shape), y.expand(2, *y.shape))
    for r in (0, 1):
        alone = _probe(rule, replica(stacked, r), x, y)
        for name in alone:
            assert rows[r][name]["delta_angle"] == pytest.approx(alone[name]["delta_angle"],
                                                                 abs=1e-3)  # fmt: skip
        assert not math.isnan(alone["1"]["delta_angle"])
