"""Feedback layers: exact gradients outside a rule, B = W gives autograd's gradient under FA,
and feedback tensors are drawn as their FeedbackInit says (once, buffer or parameter)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import apical
from apical import FeedbackConv2d, FeedbackInit, FeedbackLinear, FeedbackSpec


def _set_feedback_to_weights(model):
    for m in model.modules():
        if isinstance(m, apical.layers.FeedbackLayer) and m.feedback is not None:
            m.feedback.copy_(m.weight)


def test_outside_a_rule_linear_is_nn_linear():
    ref = nn.Linear(7, 5)
    layer = apical.convert(ref, apical.make_rule("fa"), torch.randn(2, 7))
    x = torch.randn(4, 7, requires_grad=True)
    torch.testing.assert_close(layer(x), ref(x), rtol=0, atol=0)
    g1 = torch.autograd.grad(layer(x).sum(), [x, layer.weight])
    g2 = torch.autograd.grad(ref(x).sum(), [x, ref.weight])
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(
    "conv",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=5, stride=2),
        dict(kernel_size=3, stride=2, padding=1, dilation=2),
        dict(kernel_size=3, padding=1, groups=2),
        dict(kernel_size=3, padding="same"),
        dict(kernel_size=(5, 3), padding="valid"),
    ],
)
def test_fa_with_feedback_equal_to_weights_is_backprop_conv(conv):
    model = nn.Sequential(
        nn.Conv2d(4, 6, **conv), nn.Tanh(), nn.Conv2d(6, 4, 3), nn.Tanh(),
        nn.Flatten(), nn.LazyLinear(3),
    )  # fmt: skip
    x, y = torch.randn(5, 4, 16, 16), torch.randint(0, 3, (5,))
    model(x)  # materialise the lazy layer
    fa = apical.make_rule("fa")
    net = apical.convert(model, fa, x)
    _set_feedback_to_weights(net)
    ours = fa.directions(net, x, y).directions
    exact = apical.make_rule("backprop").directions(net, x, y).directions
    assert ours.keys() == exact.keys()
    for k in exact:
        torch.testing.assert_close(ours[k], exact[k], rtol=1e-5, atol=1e-6)


def test_fa_with_feedback_equal_to_weights_is_backprop_linear():
    model = nn.Sequential(
        nn.Linear(9, 8), nn.Sigmoid(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4)
    )
    x, y = torch.randn(11, 9), torch.randint(0, 4, (11,))
    fa = apical.make_rule("fa")
    net = apical.convert(model, fa, x)
    _set_feedback_to_weights(net)
    ours = fa.directions(net, x, y).directions
    exact = {
        n: g
        for n, g in zip(
            [n for n, _ in model.named_parameters()],
            torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(model.parameters())),
            strict=True,
        )
    }
    for k in exact:
        torch.testing.assert_close(ours[k], exact[k], rtol=0, atol=1e-7)


def test_fa_differs_from_backprop_with_random_feedback():
    model = nn.Sequential(nn.Linear(9, 8), nn.Tanh(), nn.Linear(8, 4))
    x, y = torch.randn(11, 9), torch.randint(0, 4, (11,))
    fa = apical.make_rule("fa")
    net = apical.convert(model, fa, x)
    ours = fa.directions(net, x, y).directions
    exact = apical.make_rule("backprop").directions(net, x, y).directions
    torch.testing.assert_close(ours["2.weight"], exact["2.weight"])  # output layer: exact
    assert not torch.allclose(ours["0.weight"], exact["0.weight"], atol=1e-3)


def test_feedback_is_a_buffer_when_fixed_and_a_parameter_when_learned():
    fixed = FeedbackLinear(5, 3, feedback=FeedbackSpec())
    learned = FeedbackLinear(5, 3, feedback=FeedbackSpec(learn=True))
    assert fixed.feedback.shape == (3, 5)
    assert "feedback" in dict(fixed.named_buffers())
    assert "feedback" not in dict(fixed.named_parameters())
    assert "feedback" in dict(learned.named_parameters())
    before = fixed.feedback.clone()
    fixed(torch.randn(2, 5))
    assert torch.equal(fixed.feedback, before)  # never re-drawn in forward


@pytest.mark.parametrize("dist", ["uniform", "normal"])
def test_feedback_init_scale_and_sparsity(dist):
    g = torch.Generator().manual_seed(1)
    b = FeedbackInit(distribution=dist, scale=0.5).draw((400, 500), g)
    assert abs(b.mean().item()) < 0.01
    assert b.std().item() == pytest.approx(0.5, rel=0.01)
    default = FeedbackInit(distribution=dist).draw((400, 500), g)
    assert default.std().item() == pytest.approx(1 / math.sqrt(3 * 500), rel=0.01)
    sparse = FeedbackInit(distribution=dist, scale=0.5, sparsity=0.8).draw((400, 500), g)
    assert (sparse == 0).double().mean().item() == pytest.approx(0.8, abs=0.005)
    # survivors x5: second moment scale^2 / (1 - sparsity)
    assert sparse.pow(2).mean().item() == pytest.approx(0.25 / 0.2, rel=0.03)
    plain = FeedbackInit(distribution=dist, scale=0.5, sparsity=0.8, rescale=False).draw(
        (400, 500), g
    )
    assert plain.pow(2).mean().item() == pytest.approx(0.25 * 0.2, rel=0.03)


def test_feedback_init_rejects_bad_options():
    with pytest.raises(apical.ApicalError, match="sparsity"):
        FeedbackInit(sparsity=1.0)
    with pytest.raises(apical.ApicalError, match="distribution"):
        FeedbackInit(distribution="cauchy")


def test_conv_layer_shape_of_feedback_and_transposed_path():
    layer = FeedbackConv2d(3, 8, 5, stride=2, feedback=FeedbackSpec())
    assert layer.feedback.shape == layer.weight.shape
    x = torch.randn(2, 3, 32, 32)
    g = torch.randn(2, 8, 14, 14)
    sent = layer.through(layer.feedback, x)(g)
    ref = torch.nn.grad.conv2d_input(x.shape, layer.feedback, g, stride=2)
    torch.testing.assert_close(sent, ref)
    assert sent.shape == x.shape


def test_uneven_same_padding_is_refused():
    with pytest.raises(apical.ApicalError, match="pads unevenly"):
        FeedbackConv2d(2, 2, 4, padding="same")


def test_the_sparse_backward_is_the_dense_one_over_the_nonzeros():
    from apical.layers import SPARSE_GRAD_DENSITY, Through, sparse_linear_backward

    torch.manual_seed(3)
    n, n_in, n_out = 7, 9, 60
    grad = torch.randn(n, n_out, dtype=torch.float64)
    grad *= torch.rand(n, n_out) < 0.06  # about 5 % nonzero
    grad[2] = 0  # an example with no error and a unit with none: empty bags sum to zero
    grad[:, 5] = 0
    grad[0, :3] = torch.tensor([1.5, -2.0, 0.25], dtype=torch.float64)
    assert 0 < grad.count_nonzero() <= SPARSE_GRAD_DENSITY * grad.numel()
    x = torch.randn(n, 2 * n_in, dtype=torch.float64)[:, ::2]  # a strided input
    m = torch.randn(n_out, n_in, dtype=torch.float64)
    gx, gw, gb = sparse_linear_backward(grad, x, Through(m), True, True, True)
    torch.testing.assert_close(gw, grad.T @ x, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gx, grad @ m, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gb, grad.sum(0), rtol=0, atol=0)
    assert gx[2].abs().max() == 0 and gw[5].abs().max() == 0
    # a send_back without a matrix gets delta itself; only what is asked for is computed
    gx2, gw2, gb2 = sparse_linear_backward(grad, x, lambda g: 2 * g[:, :n_in], True, False, False)
    assert gw2 is None and gb2 is None and torch.equal(gx2, 2 * grad[:, :n_in])
    dense = torch.randn(n, n_out, dtype=torch.float64)  # no zeros: the dense products
    assert sparse_linear_backward(dense, x, Through(m), True, True, True) is None
