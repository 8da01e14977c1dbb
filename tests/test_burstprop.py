"""Burstprop (NN 2021): with the linearised burst function and Y = W^T the update of layer l
is exactly p_b (beta/4)^(L-l) times the summed squared-error gradient for any Z, and with the
sigmoid it approaches that as the teacher shrinks once Z has zeroed the apical potential; the
output teachers have their closed forms; the Z rule lowers the apical potential; conv layers on
1x1 inputs equal linear ones; one step equals an independent NumPy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import apical
from apical.errors import ApicalError
from apical.layers import FeedbackLayer
from apical.metrics import angle
from apical.optim import DecoupledMomentumSGD


def _layers(net):
    return [m for m in net.modules() if isinstance(m, FeedbackLayer)]


def _summed_sq_error_grads(net, x, t):
    """Autograd gradient of sum_n 1/2 ||e_L - t||^2 (outside a rule: exact layers)."""
    params = dict(net.named_parameters())
    loss = 0.5 * ((net(x) - t) ** 2).sum()
    return dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))


def _mlp():
    return nn.Sequential(
        nn.Flatten(), nn.Linear(6, 7), nn.Sigmoid(), nn.Linear(7, 5), nn.Sigmoid(),
        nn.Linear(5, 3), nn.Sigmoid(),
    ).double()  # fmt: skip


def _convnet():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.Sigmoid(), nn.Conv2d(4, 3, 3, stride=2), nn.Sigmoid(),
        nn.Flatten(), nn.Linear(12, 5), nn.Sigmoid(), nn.Linear(5, 3), nn.Sigmoid(),
    ).double()  # fmt: skip


@pytest.mark.parametrize(
    ("build", "shape", "depths"),
    [
        (_mlp, (6,), {"1": 2, "3": 1, "5": 0}),
        (_convnet, (2, 8, 8), {"0": 3, "2": 2, "5": 1, "7": 0}),
    ],
)
@pytest.mark.parametrize("beta", [1.0, 2.5])
@pytest.mark.parametrize("rescale", [False, True])
def test_linearised_burstprop_with_symmetric_feedback_is_scaled_backprop(
    build, shape, depths, beta, rescale
):
    """p_b (beta/4)^(L-l) times backprop's gradient; with `rescale`, p_b at every depth."""
    x = torch.randn(9, *shape, dtype=torch.float64)
    y = torch.randint(0, 3, (9,))
    rule = apical.make_rule(
        "burstprop", linearize=True, beta=beta, recurrent_conv=True, symmetric=True,
        rescale=rescale,
    )  # fmt: skip
    net = apical.convert(build(), rule, x)
    for layer in _layers(net):  # any Z: large, random
        if layer.recurrent is not None:
            layer.recurrent.normal_(0, 3.0)
    step = rule.directions(net, x, y)
    exact = _summed_sq_error_grads(net, x, nn.functional.one_hot(y, 3).double())
    for name, depth in depths.items():
        undone = (4 / beta) ** depth if rescale else 1.0  # the rescale's gain
        factor = 0.2 * (beta / 4) ** depth * undone
        for p in ("weight", "bias"):
            key = f"{name}.{p}"
            torch.testing.assert_close(  # rounding scaled alike: atol times the gain
                step.directions[key], factor * exact[key], rtol=1e-10, atol=1e-14 * undone
            )


def _train_z(rule, net, x, y, steps):
    apical_sq = []
    for _ in range(steps):
        step = rule.directions(net, x, y)
        apical_sq.append({k: float(v["apical"]) for k, v in step.diagnostics.items()})
        rule.after_step(net, step)  # only Z changes: no optimizer step
    return apical_sq


def test_after_step_adds_exactly_the_z_increments():
    x = torch.rand(5, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (5,))
    rule = apical.make_rule("burstprop", recurrent_lr=0.01)
    net = apical.convert(_mlp(), rule, x)
    step = rule.directions(net, x, y)
    before = {n: b.clone() for n, b in net.named_buffers() if n.endswith("recurrent")}
    increments = step.dense_increments()
    assert set(increments) == set(before) == {"1.recurrent", "3.recurrent"}
    rule.after_step(net, step)
    for name, z in before.items():
        torch.testing.assert_close(net.get_buffer(name), z + increments[name], rtol=1e-12, atol=0)


def test_z_rule_lowers_the_apical_potential():
    x = torch.rand(16, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    rule = apical.make_rule("burstprop", recurrent_lr=0.01)
    net = apical.convert(_mlp(), rule, x)
    history = _train_z(rule, net, x, y, 200)
    for layer in ("1", "3"):
        values = [h[layer] for h in history]
        assert values[0] > values[50] > values[100] > values[199]
        assert values[199] < 0.2 * values[0]


def test_sigmoid_burstprop_approaches_scaled_backprop_for_a_small_teacher():
    """One example (so Z can cancel u exactly), Z trained until u ~ 0, target a tiny step
    from the output: the sigmoid's slope at 0 is 1/4, so the linearised identity holds."""
    x = torch.rand(1, 6, dtype=torch.float64)
    rule = apical.make_rule("burstprop", recurrent_lr=2.0, symmetric=True)
    net = apical.convert(_mlp(), rule, x)
    e = net(x).detach()
    t = e + 1e-4 * (nn.functional.one_hot(torch.tensor([1]), 3).double() - e)
    history = _train_z(rule, net, x, t, 300)
    assert history[-1]["1"] < 1e-6 and history[-1]["3"] < 1e-6
    step = rule.directions(net, x, t)
    exact = _summed_sq_error_grads(net, x, t)
    for name, depth in {"1": 2, "3": 1, "5": 0}.items():
        key = f"{name}.weight"
        torch.testing.assert_close(
            step.directions[key], 0.2 * 0.25**depth * exact[key], rtol=1e-3, atol=0
        )


def test_output_teacher_logistic_squared_error():
    x = torch.randn(5, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (5,))
    rule = apical.make_rule("burstprop", p_baseline=0.3)
    net = apical.convert(_mlp(), rule, x)
    e = net(x).detach()
    t = nn.functional.one_hot(y, 3).double()
    step = rule.directions(net, x, y)
    # bias direction of the output layer = -sum_n p_b f'(v) (t - e)
    torch.testing.assert_close(step.directions["5.bias"], -(0.3 * e * (1 - e) * (t - e)).sum(0))


def test_output_teacher_softmax_small_kappa():
    rule = apical.make_rule("burstprop", loss="cross_entropy", kappa=1e-5)
    v = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [-30.0, 5.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 2, 0])  # the last target has a ~ 1e-15: the burst probability clips
    from apical.rules.chain import Record, Stage

    stage = Stage("out", None, activation=None)
    b, sent = rule.output_bursts(stage, Record(None, v, v), y)
    a = torch.softmax(v, 1)
    t = nn.functional.one_hot(y, 3).double()
    pb, kappa = 0.2, 1e-5
    # the definition, in float64: b^t = min(p_b [1 + kappa (t - a)/a], 1) a
    bt = torch.clamp(pb * (1 + kappa * (t - a) / a), max=1.0) * a
    torch.testing.assert_close(b, pb * a)
    torch.testing.assert_close(sent, (bt - pb * a) / kappa, rtol=1e-6, atol=1e-12)
    # unclipped entries: exactly p_b (t - a) = -p_b dCE/dv
    ce_grad = a - t
    unclipped = torch.ones_like(a, dtype=torch.bool)
    unclipped[2, 0] = False
    torch.testing.assert_close(sent[unclipped], -pb * ce_grad[unclipped])
    assert sent[2, 0] == pytest.approx((1 - pb) * a[2, 0].item() / kappa)


def test_conv_layers_on_1x1_inputs_equal_linear_layers():
    lin = nn.Sequential(
        nn.Flatten(), nn.Linear(4, 6), nn.Sigmoid(), nn.Linear(6, 5), nn.Sigmoid(),
        nn.Linear(5, 3), nn.Sigmoid(),
    ).double()  # fmt: skip
    conv = nn.Sequential(
        nn.Conv2d(4, 6, 1), nn.Sigmoid(), nn.Conv2d(6, 5, 1), nn.Sigmoid(), nn.Flatten(),
        nn.Linear(5, 3), nn.Sigmoid(),
    ).double()  # fmt: skip
    with torch.no_grad():
        for conv_layer, linear in ((conv[0], lin[1]), (conv[2], lin[3])):
            conv_layer.weight.copy_(linear.weight[:, :, None, None])
            conv_layer.bias.copy_(linear.bias)
        conv[5].load_state_dict(lin[5].state_dict())
    x = torch.randn(7, 4, 1, 1, dtype=torch.float64)
    y = torch.randint(0, 3, (7,))
    rule = apical.make_rule("burstprop", recurrent_conv=True, learn_feedback=True)
    net_l = apical.convert(lin, rule, x)
    net_c = apical.convert(conv, rule, x)
    with torch.no_grad():
        net_c[2].feedback.copy_(net_l[3].feedback[:, :, None, None])
        net_c[5].feedback.copy_(net_l[5].feedback)
        net_c[0].recurrent.copy_(net_l[1].recurrent)
        net_c[2].recurrent.copy_(net_l[3].recurrent)
    sl, sc = rule.directions(net_l, x, y), rule.directions(net_c, x, y)
    pairs = {"1": "0", "3": "2", "5": "5"}
    for ln, cn in pairs.items():
        for p in ("weight", "bias", "feedback"):
            if f"{ln}.{p}" in sl.directions:
                a, b = sl.directions[f"{ln}.{p}"], sc.directions[f"{cn}.{p}"]
                torch.testing.assert_close(b.reshape(a.shape), a)
    for ln, cn in (("1", "0"), ("3", "2")):
        torch.testing.assert_close(
            sc.dense_increments()[f"{cn}.recurrent"], sl.dense_increments()[f"{ln}.recurrent"]
        )


def test_one_step_equals_a_numpy_computation_of_the_equations():
    rng = np.random.default_rng(0)
    n = 4
    model = nn.Sequential(
        nn.Linear(5, 4), nn.Sigmoid(), nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2), nn.Sigmoid()
    ).double()
    x = torch.from_numpy(rng.normal(size=(n, 5)))
    y = torch.tensor([0, 1, 1, 0])
    rule = apical.make_rule("burstprop", p_baseline=0.2, beta=1.5, recurrent_lr=0.1)
    net = apical.convert(model, rule, x)
    with torch.no_grad():
        for layer in _layers(net):
            if layer.recurrent is not None:
                layer.recurrent.copy_(torch.from_numpy(rng.normal(0, 0.5, layer.recurrent.shape)))
    W = [m.weight.detach().numpy() for m in _layers(net)]
    c = [m.bias.detach().numpy() for m in _layers(net)]
    Y = [None] + [m.feedback.numpy().T for m in _layers(net)[1:]]  # Y_l = B_{l+1}^T
    Z = [m.recurrent.numpy() if m.recurrent is not None else None for m in _layers(net)]

    def sig(z):
        return 1 / (1 + np.exp(-z))

    e = [x.numpy()]
    for w, b in zip(W, c, strict=True):
        e.append(sig(e[-1] @ w.T + b))
    t = np.eye(2)[y.numpy()]
    pb, beta = 0.2, 1.5
    b_above = pb * e[3]
    bt_above = pb * e[3] * (1 + (1 - e[3]) * (t - e[3]))  # p^t = p_b [1 + h (t - e)]
    dW = {2: -(bt_above - b_above).T @ e[2]}
    dZ = {}
    for layer in (1, 0):  # hidden layers, top-down (index into W)
        g, gt = b_above @ Y[layer + 1].T, bt_above @ Y[layer + 1].T
        h = 1 - e[layer + 1]
        pre = sig(g) * e[layer + 1]
        u = h * g - pre @ Z[layer].T
        ut = h * gt - pre @ Z[layer].T
        p, pt = sig(beta * u), sig(beta * ut)
        b_above, bt_above = p * e[layer + 1], pt * e[layer + 1]
        dW[layer] = -(bt_above - b_above).T @ e[layer]
        dZ[layer] = 0.1 * u.T @ pre
    step = rule.directions(net, x, y)
    for layer, name in ((0, "0"), (1, "2"), (2, "4")):
        np.testing.assert_allclose(step.directions[f"{name}.weight"].numpy(), dW[layer], rtol=1e-10)
    for layer, name in ((0, "0"), (1, "2")):
        np.testing.assert_allclose(
            step.dense_increments()[f"{name}.recurrent"].numpy(), dZ[layer], rtol=1e-10
        )


def test_learned_feedback_gets_the_weight_direction_and_decays_towards_it():
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    rule = apical.make_rule("burstprop", learn_feedback=True)
    net = apical.convert(_mlp(), rule, x)
    step = rule.directions(net, x, y)
    torch.testing.assert_close(step.directions["3.feedback"], step.directions["3.weight"])
    opt = DecoupledMomentumSGD(apical.param_groups(net, 0.1, 0.01), lr=0.1, momentum=0.8,
                               weight_decay=0.01)  # fmt: skip
    gap = (net[3].weight - net[3].feedback).detach().clone()
    params = dict(net.named_parameters())
    for _ in range(10):
        s = rule.directions(net, x, y)
        for k, v in s.directions.items():
            params[k].grad = v
        opt.step()
    torch.testing.assert_close(net[3].weight - net[3].feedback, gap * 0.99**10)


@pytest.mark.parametrize(("build", "shape"), [(_mlp, (6,)), (_convnet, (2, 8, 8))])
def test_symmetric_feedback_starts_at_w_and_stays_there_when_learned(build, shape):
    x, y = torch.randn(8, *shape, dtype=torch.float64), torch.randint(0, 3, (8,))
    rule = apical.make_rule("burstprop", learn_feedback=True, symmetric=True)
    net = apical.convert(build(), rule, x)
    with_feedback = [m for m in _layers(net) if m.feedback is not None]
    assert len(with_feedback) == len(_layers(net)) - 1  # all but the first layer
    opt = DecoupledMomentumSGD(apical.param_groups(net, 0.1, 0.01), lr=0.1, momentum=0.8,
                               weight_decay=0.01)  # fmt: skip
    params = dict(net.named_parameters())
    start = with_feedback[0].weight.detach().clone()
    for _ in range(5):
        for m in with_feedback:
            assert torch.equal(m.feedback, m.weight)
        for k, v in rule.directions(net, x, y).directions.items():
            params[k].grad = v
        opt.step()
    assert float((with_feedback[0].weight.detach() - start).abs().max()) > 1e-4  # it learned
    for m in with_feedback:
        assert torch.equal(m.feedback, m.weight)
    # the default draws Y on its own
    net = apical.convert(build(), apical.make_rule("burstprop"), x)
    drawn = [m for m in _layers(net) if m.feedback is not None]
    assert not any(torch.equal(m.feedback, m.weight) for m in drawn)


def test_decoupled_sgd_by_hand():
    p = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = DecoupledMomentumSGD([p], lr=0.1, momentum=0.5, weight_decay=0.01)
    g1, g2 = torch.tensor([1.0, 1.0]), torch.tensor([-2.0, 0.5])
    p.grad = g1.double()
    opt.step()
    buf = -0.1 * g1
    expected = torch.tensor([1.0, -2.0]) * 0.99 + buf
    torch.testing.assert_close(p.detach().float(), expected)
    p.grad = g2.double()
    opt.step()
    buf = 0.5 * buf - 0.1 * g2
    expected = expected * 0.99 + buf
    torch.testing.assert_close(p.detach().float(), expected)


def test_non_sequential_models_are_refused():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return torch.sigmoid(self.b(x + torch.sigmoid(self.a(x))))

    x, y = torch.randn(3, 4), torch.tensor([0, 1, 0])
    rule = apical.make_rule("burstprop")
    with pytest.raises(ApicalError, match=r"needs an nn\.Sequential chain.*got a Residual"):
        rule.directions(apical.convert(Residual(), rule, x), x, y)
    pooled = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sigmoid(), nn.MaxPool2d(2), nn.Flatten(),
                           nn.Linear(2, 2), nn.Sigmoid())  # fmt: skip
    x = torch.randn(3, 1, 4, 4)
    with pytest.raises(ApicalError, match="module '2' is a MaxPool2d"):
        rule.directions(apical.convert(pooled, rule, x), x, y)
    with pytest.raises(ApicalError, match="needs a Sigmoid after the output layer"):
        net = apical.convert(nn.Sequential(nn.Linear(4, 2)), rule, torch.randn(3, 4))
        rule.directions(net, torch.randn(3, 4), y)


def test_node_perturbation_estimates_the_gradient():
    """40,000 copies of one example in a batch: the summed estimate is 40,000 noisy estimates
    of that example's gradient; it must point along the exact summed gradient."""
    x = torch.rand(1, 6, dtype=torch.float64).expand(40000, 6)
    y = torch.tensor([2]).expand(40000)
    rule = apical.make_rule("node_perturbation", sigma=1e-3)
    net = apical.convert(_mlp(), rule, x[:2])
    step = rule.directions(net, x, y, torch.Generator().manual_seed(0))
    exact = _summed_sq_error_grads(net, x, nn.functional.one_hot(y, 3).double())
    for key in ("1.weight", "3.weight", "5.weight", "5.bias"):
        assert angle(step.directions[key], exact[key]) < 25
        ratio = step.directions[key].norm() / exact[key].norm()
        assert 0.7 < ratio < 1.4


def test_burstprop_learns_digits():
    from apical.train import TrainConfig, train

    cfg = TrainConfig(
        dataset="digits", model="burstprop_mlp", model_options={"hidden": [64]},
        rule="burstprop", loss="mse", optimizer="decoupled_sgd", lr=0.05, output_lr=0.01,
        momentum=0.8, batch_size=32, epochs=10, probe_every=20, device="cpu",
    )  # fmt: skip
    run = train(cfg, progress=False)
    assert run.history[-1]["test_accuracy"] > 0.85
    last = run.probes[-1]["layers"]["1"]
    assert last["angle"] < 80 and "apical" in last  # fixed random feedback: aligned
