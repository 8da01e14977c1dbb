"""Metrics: angles and sign agreement on hand-made vectors, and the alignment probe
(backprop aligned with itself, FA's feedback angle and norm ratio, buffers untouched)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import apical
from apical.metrics import (
    accuracy,
    alignment,
    angle,
    evaluate,
    predicted_classes,
    sign_agreement,
)


def test_angle_on_hand_made_vectors():
    a = torch.tensor([1.0, 2.0, -3.0])
    assert angle(a, a) == pytest.approx(0.0, abs=1e-6)
    assert angle(a, 2.5 * a) == pytest.approx(0.0, abs=1e-6)
    assert angle(a, -a) == pytest.approx(180.0)
    assert angle(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])) == pytest.approx(90.0)
    assert angle(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])) == pytest.approx(45.0)
    assert math.isnan(angle(a, torch.zeros(3)))
    # tensors of any shape are compared as vectors
    assert angle(torch.eye(2), torch.tensor([[0.0, 1.0], [1.0, 0.0]])) == pytest.approx(90.0)


def test_sign_agreement_of_a_known_pair():
    a = torch.tensor([1.0, -2.0, 3.0, -4.0, 0.0])
    b = torch.tensor([5.0, 1.0, 2.0, -1.0, 0.0])
    assert sign_agreement(a, b) == pytest.approx(4 / 5)
    assert sign_agreement(a, -a) == pytest.approx(1 / 5)  # only the zero agrees


def test_accuracy_and_evaluate():
    out = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert float(accuracy(out, torch.tensor([0, 1, 1]))) == pytest.approx(2 / 3)
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    res = evaluate(model, out, torch.tensor([0, 1, 1]), batch_size=2)
    assert res["accuracy"] == pytest.approx(2 / 3)
    ref = nn.functional.cross_entropy(out, torch.tensor([0, 1, 1])).item()
    assert res["loss"] == pytest.approx(ref, rel=1e-6)
    assert res["classes_predicted"] == 2


def test_classes_predicted_counts_the_output_units_that_ever_win():
    # 4 classes; the rows' winners are 0, 2, 2 (and 1 only in the second batch)
    out = torch.tensor([[5.0, 0, 1, 0], [0, 0, 3, 1], [0, 1, 2, 0], [0, 4, 0, 0]])
    y = torch.tensor([0, 1, 2, 3])
    assert predicted_classes(out[:3]).tolist() == [True, False, True, False]
    model = nn.Identity()
    assert evaluate(model, out[:3], y[:3], batch_size=2)["classes_predicted"] == 2
    assert evaluate(model, out, y, batch_size=3)["classes_predicted"] == 3  # across batches
    # per replica: (R, N, C) outputs give one count each
    two = torch.stack([out, out.flip(-1)])
    assert predicted_classes(two).sum(-1).tolist() == [3, 3]
    assert predicted_classes(two[:, :1]).tolist() == [[True, False, False, False],
                                                      [False, False, False, True]]  # fmt: skip


def _net():
    return nn.Sequential(
        nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)
    )


def test_alignment_of_backprop_with_itself():
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    bp = apical.make_rule("backprop")
    net = apical.convert(_net(), bp, x)
    rows = alignment(net, bp, x, y)
    assert set(rows) == {"0", "3", "5"}
    for row in rows.values():
        assert row["angle"] == pytest.approx(0.0, abs=1e-3)
        assert row["sign_agreement"] == 1.0
        assert row["feedback_angle"] == pytest.approx(0.0, abs=1e-3)
        assert row["feedback_norm_ratio"] == pytest.approx(1.0)


def test_alignment_of_fa_and_probe_leaves_model_untouched():
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    fa = apical.make_rule("fa")
    net = apical.convert(_net(), fa, x)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rows = alignment(net, fa, x, y)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert rows["5"]["angle"] == pytest.approx(0.0, abs=1e-3)  # output layer: exact
    assert 0 < rows["0"]["angle"] < 180
    assert rows["3"]["feedback_angle"] == pytest.approx(
        angle(net[3].feedback, net[3].weight), abs=1e-9
    )
    ratio = (net[5].feedback.norm() / net[5].weight.norm()).item()
    assert rows["5"]["feedback_norm_ratio"] == pytest.approx(ratio)


def test_dfa_hidden_layers_have_no_feedback_angle():
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    dfa = apical.make_rule("dfa")
    net = apical.convert(_net(), dfa, x)
    rows = alignment(net, dfa, x, y)
    assert "feedback_angle" not in rows["3"]
    assert "feedback_angle" in rows["5"]


def test_top_k_accuracy():
    out = torch.tensor([[0.9, 0.5, 0.1, 0.0, -1.0, -2.0], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])
    y = torch.tensor([4, 0])
    assert float(accuracy(out, y)) == 0.0
    assert float(accuracy(out, y, k=5)) == pytest.approx(0.5)  # 4 is 5th in row 0; 0 is 6th
    assert float(accuracy(out, y, k=6)) == 1.0
