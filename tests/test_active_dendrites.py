"""Active dendrites (Iyer et al. 2022): the dendritic layer against a direct per-unit
computation, gradients only to the winning segment, kWTA keeping exactly k units, the
fixed sparsity mask through training, and cached segment responses equal to uncached."""

from __future__ import annotations

import math

import pytest
import torch

import apical
from apical.active_dendrites import (
    DendriticLayer,
    active_dendrites,
    gate_responses,
    kwta,
    segment_responses,
    winning_response,
    winning_segments,
)
from apical.errors import ConfigError
from apical.models import build_model
from apical.optim import SparseRowsAdam


def _direct(x, context, weight, bias, segments, k, mode):
    """y_i = a_i * sigmoid(d_i*) one unit and one example at a time (Iyer 2022, Eqs. 1-2);
    segment j of unit i is row i k + j."""
    n, units = x.shape[0], weight.shape[0]
    out = torch.empty(n, units, dtype=torch.float64)
    for e in range(n):
        for i in range(units):
            a = float(bias[i]) + sum(
                float(weight[i, j]) * float(x[e, j]) for j in range(x.shape[1])
            )
            d = [float(segments[i * k + s] @ context[e]) for s in range(k)]
            if mode == "absmax":
                win = max(range(len(d)), key=lambda s: (abs(d[s]), -s))  # first of the largest
            else:
                win = max(range(len(d)), key=lambda s: (d[s], -s))
            out[e, i] = float(a) / (1 + math.exp(-d[win]))
    return out


@pytest.mark.parametrize("mode", ["absmax", "max"])
def test_the_dendritic_layer_is_the_per_unit_computation(mode):
    torch.manual_seed(0)
    layer = DendriticLayer(
        6, 5, context_size=4, segments=3, density=None, sparsity=0.0, mode=mode
    ).double()
    x, context = torch.randn(7, 6, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64)
    # a negative winner under absmax: the segment of largest |d| has d < 0
    with torch.no_grad():
        layer.segments[:3] = torch.stack([context[0], -3 * context[0], 0 * context[0]])
    d = segment_responses(layer.segments, 3, context)
    assert d[0, 0, 1] < 0 and d[0, 0, 1].abs() == d[0, 0].abs().max()
    a = layer.linear(x)
    with torch.no_grad():
        want = _direct(x, context, layer.linear.weight, layer.linear.bias, layer.segments, 3, mode)
    for cache in (True, False):
        gated = a * torch.sigmoid(gate_responses(layer.segments, 3, context, mode, cache))
        torch.testing.assert_close(gated, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer(x, context), torch.relu(want), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["absmax", "max"])
def test_ties_go_to_the_first_segment_and_only_the_winner_learns(mode):
    # segment responses of one unit: a tie between segments 1 and 2 (and, for absmax,
    # a larger negative one that wins)
    d = torch.tensor([[[0.5, 2.0, 2.0, -3.0 if mode == "absmax" else -1.0]]], requires_grad=True)
    win = winning_response(d, mode)
    assert float(win.detach()) == (-3.0 if mode == "absmax" else 2.0)
    (grad,) = torch.autograd.grad(win.sum(), d)
    expect = [0, 0, 0, 1] if mode == "absmax" else [0, 1, 0, 0]
    assert grad.flatten().tolist() == expect
    # through the layer: the gradient of the segment weights is zero off the winners
    torch.manual_seed(1)
    layer = DendriticLayer(3, 4, context_size=5, segments=6, density=None, sparsity=0, mode=mode)
    x, context = torch.randn(8, 3), torch.randn(1, 5).expand(8, 5)  # one context
    layer(x, context).sum().backward()
    assert layer.segments.grad.is_sparse  # the winners' rows only
    winners = segment_responses(layer.segments, 6, context[:1])[0]
    winners = (winners.abs() if mode == "absmax" else winners).argmax(-1)
    touched = layer.segments.grad.to_dense().abs().sum(-1).reshape(4, 6) > 0  # (units, K)
    assert touched.sum(-1).le(1).all()  # at most one segment per unit
    rows = touched.any(-1)
    assert (touched.float().argmax(-1)[rows] == winners[rows]).all()


def test_cached_segment_responses_equal_uncached():
    torch.manual_seed(2)
    # float64: the cached path re-sums the winning rows, equal up to rounding
    segments = torch.randn(16 * 5, 12, dtype=torch.float64, requires_grad=True)  # 16 units, K 5
    prototypes = torch.randn(3, 12, dtype=torch.float64)
    context = prototypes[torch.tensor([2, 0, 0, 1, 2, 2, 0, 1, 1, 0])]
    for mode in ("absmax", "max"):
        with torch.no_grad():  # without a gradient: the responses gathered, no rows
            torch.testing.assert_close(gate_responses(segments, 5, context, mode, cache=True),
                                       gate_responses(segments, 5, context, mode, cache=False),
                                       rtol=1e-12, atol=1e-12)  # fmt: skip
        cached = gate_responses(segments, 5, context, mode, cache=True)
        plain = gate_responses(segments, 5, context, mode, cache=False)
        torch.testing.assert_close(cached, plain, rtol=1e-12, atol=1e-12)
        (g1,) = torch.autograd.grad(cached.square().sum(), segments)
        (g2,) = torch.autograd.grad(plain.square().sum(), segments)
        assert g1.is_sparse and not g2.is_sparse
        assert g1.coalesce().indices().shape[1] <= 3 * 16  # at most one row per context and unit
        torch.testing.assert_close(g1.to_dense(), g2, rtol=1e-12, atol=1e-12)


def test_the_sparse_path_passes_the_gradient_of_a_learned_context():
    # a context that is itself learned (one distinct row): dL/dc = sum_i dL/dd_i u_ij*
    torch.manual_seed(3)
    segments = torch.randn(16 * 5, 12, dtype=torch.float64, requires_grad=True)
    row = torch.randn(1, 12, dtype=torch.float64, requires_grad=True)
    grads = []
    for cache in (True, False):
        d = gate_responses(segments, 5, row.expand(7, 12), "absmax", cache=cache)
        grads.append(torch.autograd.grad(d.sin().sum(), (segments, row)))
    torch.testing.assert_close(grads[0][0].to_dense(), grads[1][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-12, atol=1e-12)


def test_kept_responses_follow_the_rows_adam_changed_and_nothing_else():
    # a task's steps under one context: after each SparseRowsAdam step only the rows it
    # names are recomputed; the kept responses equal fresh ones, and training with them
    # equals training without them
    torch.manual_seed(4)
    x, context = torch.randn(9, 6, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)
    layers = []
    for keep in (True, False):
        torch.manual_seed(5)
        layer = DendriticLayer(6, 8, context_size=5, segments=4, density=0.5, sparsity=0.5,
                               mode="absmax").double()  # fmt: skip
        layer.kept = layer.kept if keep else None
        opt = SparseRowsAdam(layer.parameters(), lr=0.05)
        for _ in range(6):
            opt.zero_grad()
            layer(x, context.expand(9, 5)).sin().sum().backward()
            opt.step()
            layer.constrain_()
            if keep:
                fresh = (layer.segments @ context[0]).detach()
                kept = layer.kept.responses(layer.segments, context)
                torch.testing.assert_close(kept, fresh, rtol=1e-12, atol=1e-12)
        layers.append(layer)
    assert layers[0].segments.rows_changed.rows.numel() == 8  # one winner per unit
    for a, b in zip(layers[0].parameters(), layers[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # a change that no optimizer recorded: everything recomputed
    layer = layers[0]
    with torch.no_grad():
        layer.segments.add_(1.0)
    kept = layer.kept.responses(layer.segments, context)
    assert torch.equal(kept, (layer.segments @ context[0]).detach())
    # another context: recomputed for it
    other = torch.randn(1, 5, dtype=torch.float64)
    assert torch.equal(layer.kept.responses(layer.segments, other),
                       (layer.segments @ other[0]).detach())  # fmt: skip


def test_kwta_keeps_exactly_k_units_per_example():
    torch.manual_seed(3)
    x = torch.randn(50, 40)
    x[0] = 1.0  # all tied: still exactly k
    x[1] = -torch.rand(40)  # all negative: the k largest are kept even so
    out = kwta(x, 7)
    kept = out != 0  # no entry of x is 0
    assert kept.sum(-1).eq(7).all()
    assert torch.equal(out[kept], x[kept])
    lowest_kept = x.masked_fill(~kept, math.inf).min(-1).values
    highest_dropped = x.masked_fill(kept, -math.inf).max(-1).values
    assert (lowest_kept >= highest_dropped).all()


def test_the_sparsity_mask_stays_fixed_through_training():
    torch.manual_seed(4)
    model = build_model("active_dendrites", (2 * 16,), 3, hidden=[20, 20], context_size=16,
                        segments=2, density=0.25, sparsity=0.5)  # fmt: skip
    masks = [layer.mask.bool() for layer in model.hidden]
    assert all(abs(float(m.float().mean()) - 0.5) < 0.15 for m in masks)
    x, y = torch.randn(64, 32), torch.randint(0, 3, (64,))
    for rule_name in ("backprop", "fa"):
        rule = apical.make_rule(rule_name)
        net = apical.convert(model, rule, x)
        opt = SparseRowsAdam(net.parameters(), lr=0.05)  # sparse segment rows
        before = [layer.linear.weight.detach().clone() for layer in net.hidden]
        for _ in range(5):
            step = rule.directions(net, x, y)
            for name, p in net.named_parameters():
                p.grad = step.directions[name]
            opt.step()
            apical.layers.constrain(net)
        for layer, mask, w0 in zip(net.hidden, masks, before, strict=True):
            w = layer.linear.weight.detach()
            assert torch.equal(layer.mask.bool(), mask)
            assert (w[~mask] == 0).all() and not torch.equal(w[mask], w0[mask])


def test_a_dendritic_network_trains_through_the_trainer_and_masks_hold(tmp_path):
    from apical.train import TrainConfig, train

    config = TrainConfig(
        dataset="xor", model="active_dendrites", epochs=1, batch_size=4, probe_every=0,
        device="cpu", model_options={"hidden": [8], "context_size": 1, "segments": 2,
                                     "density": 0.5, "sparsity": 0.5},
    )  # fmt: skip
    run = train(config, progress=False)
    layer = run.model.hidden[0]
    assert (layer.linear.weight[~layer.mask.bool()] == 0).all()
    assert len(run.history) == 1


def test_bad_options_are_one_line():
    with pytest.raises(ConfigError, match=r"^density must be a number in \(0, 1\], got 0$"):
        build_model("active_dendrites", (20,), 2, context_size=10, density=0)
    with pytest.raises(ConfigError, match="mode must be"):
        build_model("active_dendrites", (20,), 2, context_size=10, mode="min")
    with pytest.raises(apical.ApicalError, match=r"feed \[image \| context\] rows \(set task"):
        active_dendrites((784,), 10)


def test_dense_segment_gradients_equal_the_sparse_rows():
    torch.manual_seed(5)
    x, context = torch.randn(6, 3, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)
    grads = []
    for sparse in (True, False):
        torch.manual_seed(6)
        layer = DendriticLayer(3, 4, context_size=5, segments=3, density=None, sparsity=0,
                               mode="absmax", sparse_segments=sparse).double()  # fmt: skip
        layer(x, context.expand(6, 5)).square().sum().backward()
        grads.append(layer.segments.grad)
    assert grads[0].is_sparse and not grads[1].is_sparse
    torch.testing.assert_close(grads[0].to_dense(), grads[1], rtol=1e-12, atol=1e-12)


def test_winning_segments_names_each_units_winner_per_context():
    model = active_dendrites((4 + 2,), 3, hidden=[4], context_size=2, segments=3, kwta=False)
    layer = model.hidden[0]
    with torch.no_grad():  # unit u, segment j: rows u*3 + j; context e0 or e1
        layer.segments.zero_()
        for u in range(4):
            layer.segments[u * 3 + 0] = torch.tensor([1.0, 0.0])  # wins under e0
            layer.segments[u * 3 + (1 if u < 3 else 2)] = torch.tensor([0.0, -2.0])  # e1
    (winners,) = winning_segments(model, torch.eye(2))
    assert winners.tolist() == [[0, 0, 0, 0], [1, 1, 1, 2]]


@pytest.mark.parametrize("options", [{}, {"kwta": False}, {"dendrites": False}])
def test_linearised_burstprop_through_the_gating_is_scaled_backprop(options):
    # NN 2021's identity (tests/test_burstprop.py) through the gate: with the linearised
    # burst function and Y = W^T, every direction of a layer at depth D below the output,
    # the winning segments' included, is p_b (beta/4)^D times the summed cross-entropy
    # gradient (the gate and the kWTA mask are unit-local slopes, model page §3)
    torch.manual_seed(7)
    beta = 1.5
    model = active_dendrites((6 + 4,), 3, hidden=[12, 10], context_size=4, segments=3,
                             density=0.3, **options).double()  # fmt: skip
    prototypes = torch.randn(2, 4, dtype=torch.float64)
    x = torch.cat([torch.randn(9, 6, dtype=torch.float64), prototypes[torch.arange(9) % 2]], 1)
    y = torch.randint(0, 3, (9,))
    rule = apical.make_rule("burstprop", loss="cross_entropy", linearize=True, beta=beta)
    net = apical.convert(model, rule, x)
    for module in net.modules():
        if getattr(module, "feedback", None) is not None:
            module.feedback.copy_(module.weight)
        if getattr(module, "recurrent", None) is not None:
            module.recurrent.normal_(0, 2.0)  # any Z
    step = rule.directions(net, x, y)
    params = dict(net.named_parameters())
    loss = torch.nn.functional.cross_entropy(net(x), y, reduction="sum")
    exact = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
    depth = {"out": 0, "hidden.1": 1, "hidden.0": 2}
    assert set(step.directions) == set(params)
    for name, direction in step.directions.items():
        layer = "out" if name.startswith("out.") else ".".join(name.split(".")[:2])
        factor = 0.2 * (beta / 4) ** depth[layer]
        want = exact[name].to_dense() if exact[name].is_sparse else exact[name]
        got = direction.to_dense() if direction.is_sparse else direction
        torch.testing.assert_close(got, factor * want, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("rule", ["backprop", "fa", "sign_symmetry", "dfa", "kolen_pollack"])
def test_the_backward_through_kwta_works_from_the_winners_alone(rule, monkeypatch):
    # the layers under kWTA send their error back from its nonzeros (apical.layers
    # .sparse_linear_backward): the same directions as the dense products, and for
    # backprop the same as autograd through the plain nn.Linear model
    import apical.layers as layers

    torch.manual_seed(11)
    model = active_dendrites((20 + 6,), 4, hidden=[200, 150], context_size=6, segments=3,
                             density=0.05).double()  # fmt: skip
    x = torch.cat([torch.randn(16, 20), torch.randn(1, 6).expand(16, 6)], 1).double()
    y = torch.randint(0, 4, (16,))
    net = apical.convert(model, apical.make_rule(rule), x[:2])
    calls = []
    sparse = layers.sparse_linear_backward
    monkeypatch.setattr(layers, "sparse_linear_backward", lambda *a: calls.append(1) or sparse(*a))
    got = apical.make_rule(rule).directions(net, x, y).directions
    assert len(calls) == 2  # both hidden layers (kWTA keeps 10 of 200 and 8 of 150 units)
    monkeypatch.setattr(layers, "SPARSE_GRAD_DENSITY", -1.0)  # the dense products
    want = apical.make_rule(rule).directions(net, x, y).directions
    if rule == "backprop":
        loss = torch.nn.functional.cross_entropy(model(x), y)
        params = dict(model.named_parameters())
        want = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
    assert set(got) == set(want)
    for name in got:
        g, w = got[name], want[name]
        g, w = (t.to_dense() if t.is_sparse else t for t in (g, w))
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-14, msg=name)
