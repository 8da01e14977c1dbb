"""The energy-based rules against independent references: Z-IL against autograd backprop,
equilibrium propagation against implicit differentiation at the free fixed point, CHL
against backprop as the feedback gain vanishes; predictive coding's inference; batching;
the relaxing shell and its errors."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import apical
from apical.data import Dataset
from apical.energy import equilibrium as ep
from apical.energy import layered
from apical.energy import predictive_coding as pc
from apical.energy.curvature import node_rates, operator_norm
from apical.energy.network import Relaxing
from apical.metrics import angle
from apical.rules.backprop import Backprop


@pytest.fixture(autouse=True)
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _mlp(sizes=(5, 6, 4, 3), act=nn.Sigmoid, out_act=None, seed=0):
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    if out_act is not None:
        layers.append(out_act())
    return nn.Sequential(*layers)


def _conv():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 2 * 2, 3),
    )  # fmt: skip


# -- predictive coding ----------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("build", [_mlp, _conv], ids=["mlp", "conv"])
def test_zil_equals_backprop(build, loss):
    """Song et al. 2020: Z-IL's updates are backprop's gradient exactly."""
    model = build()
    x = torch.rand(7, 1, 8, 8) if build is _conv else torch.rand(7, 5)
    y = torch.randint(0, 3, (7,))
    rule = apical.make_rule("predictive_coding", schedule="zil", loss=loss)
    net = apical.convert(model, rule, x)
    ours = rule.directions(net, x, y).directions
    theirs = Backprop(loss=loss).directions(net, x, y).directions
    assert set(ours) == set(theirs)
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-12, atol=1e-15)


def test_inference_decreases_the_energy_and_rests_at_the_feed_forward_pass():
    net = layered(_mlp((5, 8, 6, 3), nn.Tanh))
    x, y = torch.rand(9, 5), torch.randint(0, 3, (9,))
    beta = torch.ones(9)
    energies, nodes = [], net.feedforward(x)[:-1]
    for _ in range(50):
        energies.append(pc.energy(net, x, nodes, y, beta, "cross_entropy").sum().item())
        nodes, _ = pc.infer(net, x, y, beta, "cross_entropy", 0.05, 1, nodes=nodes)
    assert all(b < a for a, b in itertools.pairwise(energies))
    # without a target (beta = 0) the feed-forward pass is the minimum: inference stays put
    free, _ = pc.infer(net, x, y, torch.zeros(9), "cross_entropy", 0.1, 20)
    for a, b in zip(free, net.feedforward(x)[:-1], strict=False):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _conv_pool_after():
    """Pooling between a convolution and its activation: a stage whose weight layer is not
    its last module (its weight gradient goes through autograd)."""
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.MaxPool2d(2), nn.Tanh(),
        nn.Flatten(), nn.Linear(3 * 4 * 4, 3),
    )  # fmt: skip


@pytest.mark.parametrize("convert", [True, False], ids=["feedback-layers", "torch-layers"])
@pytest.mark.parametrize("build", [_mlp, _conv, _conv_pool_after], ids=["mlp", "conv", "pool"])
def test_inference_steps_and_weight_gradients_equal_autograd_of_the_energy(build, convert):
    """W&B Eqs. 2.9-2.10 written out (each stage's transposed map, the activations'
    derivatives, the layers' local products) equal autograd of F_beta: one inference step
    against x - gamma dF/dx, the stage gradients against dF/dtheta, at relaxed nodes."""
    model = build()
    x = torch.rand(6, 5) if build is _mlp else torch.rand(6, 1, 8, 8)
    y = torch.randint(0, 3, (6,))
    if convert:
        model = apical.convert(model, apical.make_rule("predictive_coding"), x)
    net, beta = layered(model), torch.linspace(0.5, 2.0, 6)
    nodes, _ = pc.infer(net, x, y, beta, "cross_entropy", 0.1, 3)
    stepped = pc.inference_step(net, x, nodes, y, beta, "cross_entropy", 0.1)
    leaves = [n.clone().requires_grad_() for n in nodes]
    total = pc.energy(net, x, leaves, y, beta, "cross_entropy").sum()
    for ours, leaf, grad in zip(stepped, leaves, torch.autograd.grad(total, leaves), strict=True):
        torch.testing.assert_close(ours, leaf.detach() - 0.1 * grad, rtol=1e-12, atol=1e-14)
    weights = torch.rand(6)
    errors = pc.prediction_errors(net, x, nodes, y, beta, "cross_entropy")
    ours = pc.stage_gradients(net, x, nodes, errors, weights)
    weighted = (weights * pc.energy(net, x, nodes, y, beta, "cross_entropy")).sum()
    for stage, grads in zip(net.stages, ours, strict=True):
        params = dict(stage.named_parameters())
        assert set(grads) == set(params)
        theirs = torch.autograd.grad(weighted, list(params.values()), retain_graph=True)
        for name, want in zip(params, theirs, strict=True):
            torch.testing.assert_close(grads[name], want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "conv, size",
    [(nn.Conv2d(3, 4, 3, padding=1), 6), (nn.Conv2d(3, 5, 1), 5),
     (nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2, groups=2), 7),
     (nn.Conv2d(2, 3, 3, padding="same"), 5)],
    ids=["padded", "1x1", "strided-dilated-grouped", "same"],
)  # fmt: skip
def test_operator_norms_of_weight_layers(conv, size):
    """Exact for a linear layer; for a convolution an upper bound of the norm of its dense
    matrix (built column by column), equal for a 1x1 convolution."""
    torch.manual_seed(0)
    linear = nn.Linear(7, 5)
    torch.testing.assert_close(operator_norm(linear, torch.Size([7])),
                               torch.linalg.matrix_norm(linear.weight.detach(), 2), rtol=1e-12,
                               atol=0)  # fmt: skip
    conv = conv.double()
    n = conv.in_channels * size * size
    basis = torch.eye(n).view(n, conv.in_channels, size, size)
    with torch.no_grad():
        columns = nn.functional.conv2d(basis, conv.weight, None, conv.stride, conv.padding,
                                       conv.dilation, conv.groups)  # fmt: skip
    exact = torch.linalg.matrix_norm(columns.flatten(1), 2)
    bound = operator_norm(conv, basis.shape[1:])
    if conv.kernel_size == (1, 1):
        torch.testing.assert_close(bound, exact, rtol=1e-12, atol=0)
    assert exact * (1 - 1e-12) <= bound <= 1.5 * exact, (float(bound), float(exact))


def _quadratic_nets():
    """Nets whose energy is quadratic in the nodes (identity activations, average pooling),
    or piecewise quadratic (ReLU, max-pooling), with weights large enough that inference
    at one rate of 0.4 diverges."""
    torch.manual_seed(3)
    mlp = _mlp((5, 8, 6, 3), nn.Identity)
    conv = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3), nn.Identity(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4, 3),
    )  # fmt: skip
    for net, scale in ((mlp, 3.0), (conv, 5.0)):
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(scale)
    return {"mlp": (mlp, torch.rand(4, 5)), "conv": (conv, torch.rand(4, 1, 8, 8))}


@pytest.mark.parametrize("which", ["mlp", "conv"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_bounded_rates_bound_the_energys_curvature(which, loss):
    """curvature.node_rates: with D = diag(rate per node), D^(1/2) H D^(1/2) <= I for the
    Hessian H of F in the nodes (autograd, one example at a time); inference at those rates
    never raises a quadratic energy, where one rate of 0.4 makes it grow a thousandfold."""
    model, x = _quadratic_nets()[which]
    net, y, beta = layered(model), torch.randint(0, 3, (len(x),)), torch.full((len(x),), 2.0)
    rates = node_rates(net, x, 1e9, beta, loss)
    feedforward = net.feedforward(x)[:-1]
    for i in range(len(x)):
        shapes = [n[i : i + 1].shape for n in feedforward]
        sizes = [s.numel() for s in shapes]

        def f(flat, i=i, shapes=shapes, sizes=sizes):
            nodes = [p.view(s) for p, s in zip(flat.split(sizes), shapes, strict=True)]
            return pc.energy(net, x[i : i + 1], nodes, y[i : i + 1], beta[i : i + 1], loss).sum()

        start = torch.cat([n[i].flatten() for n in feedforward]) + 0.1 * torch.randn(sum(sizes))
        hessian = torch.autograd.functional.hessian(f, start)
        scale = torch.cat([r.expand(s) for r, s in zip(rates, sizes, strict=True)]).sqrt()
        top = torch.linalg.eigvalsh(scale[:, None] * hessian * scale[None, :])[-1]
        assert top <= 1 + 1e-10, float(top)
    energies = {}
    for label, rate in (("bounded", rates.clamp(max=0.4)), ("one rate", 0.4)):
        nodes, trace = feedforward, []
        for _ in range(30):
            nodes, _ = pc.infer(net, x, y, beta, loss, rate, 1, nodes=nodes)
            trace.append(pc.energy(net, x, nodes, y, beta, loss).sum().item())
        energies[label] = trace
    assert energies["one rate"][-1] > 1e3 * energies["one rate"][0]
    if which == "mlp":  # quadratic: never up
        assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(energies["bounded"]))
    assert energies["bounded"][-1] < energies["bounded"][0]


def test_bounded_rate_changes_nothing_where_the_bound_does_not_bind():
    """Small weights: every node's cap lies above the rate, and the rule's directions equal
    those of the one rate; the probes report the rates."""
    model = _mlp((5, 7, 6, 3), nn.Tanh)
    x, y = torch.rand(8, 5), torch.randint(0, 3, (8,))
    plain = apical.make_rule("predictive_coding", steps=6, rate=0.05)
    bounded = apical.make_rule("predictive_coding", steps=6, rate=0.05, bounded_rate=True)
    net = apical.convert(model, plain, x)
    theirs = plain.directions(net, x, y).directions
    step = bounded.directions(net, x, y, diagnose=True)
    for k in theirs:
        torch.testing.assert_close(step.directions[k], theirs[k], rtol=1e-12, atol=1e-15)
    rates = [d["inference_rate"] for d in step.diagnostics.values() if "inference_rate" in d]
    assert len(rates) == 2 and all(float(r) == 0.05 for r in rates)


@pytest.mark.parametrize("nudge", ["positive", "negative", "centred"])
def test_predictive_coding_tends_to_backprop_with_weak_nudging(nudge):
    model = _mlp((5, 7, 6, 3), nn.Tanh)
    x, y = torch.rand(8, 5), torch.randint(0, 3, (8,))
    rule = apical.make_rule("predictive_coding", beta=1e-3, rate=0.1, steps=200, nudge=nudge)
    net = apical.convert(model, rule, x)
    ours = rule.directions(net, x, y).directions
    theirs = Backprop(loss=rule.loss).directions(net, x, y).directions
    for k in theirs:
        assert angle(ours[k], theirs[k]) < 1.0, k


# -- equilibrium propagation ----------------------------------------------------------------
def _implicit_gradient(net, form, x, y, loss, states, params):
    """d loss(s*(theta)) / d theta by implicit differentiation of the fixed-point condition
    R(s, theta) = 0 (R = dF/du for the Hopfield energy, s - rho(dPhi/ds) for the primitive
    form): d loss/d theta = partial loss/d theta - v^T dR/d theta, (dR/ds)^T v = dloss/ds."""
    shapes = [s.shape for s in states]
    sizes = [s.numel() for s in states]

    def unflat(v):
        return [t.reshape(sh) for t, sh in zip(v.split(sizes), shapes, strict=True)]

    def residual(flat):
        s = unflat(flat)
        with torch.enable_grad():
            s = [t if t.requires_grad else t.requires_grad_() for t in s]
            g = torch.autograd.grad(ep.energy(net, form, x, s, None, None, loss).sum(), s,
                                    create_graph=True)  # fmt: skip
        if form == "hopfield":
            return torch.cat([t.flatten() for t in g])
        return torch.cat([(t - net.act(k, -d)).flatten()
                          for k, (t, d) in enumerate(zip(s, g, strict=True))])  # fmt: skip

    flat = torch.cat([s.detach().flatten() for s in states])
    assert residual(flat).abs().max() < 1e-12  # the relaxation reached the fixed point
    jac = torch.autograd.functional.jacobian(residual, flat)
    point = flat.clone().requires_grad_()
    out = ep.output(net, form, x, unflat(point))
    total = apical.losses.get_loss(loss)(out, y)
    dl_ds, *direct = torch.autograd.grad(total, [point, *params], allow_unused=True)
    v = torch.linalg.solve(jac.T, dl_ds)
    with torch.enable_grad():
        r = residual(flat.clone().requires_grad_(False))
        pulled = torch.autograd.grad((r * v).sum(), params, allow_unused=True)
    return [(d if d is not None else 0) - (p if p is not None else 0)
            for d, p in zip(direct, pulled, strict=True)]  # fmt: skip


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("form", ["hopfield", "primitive"])
def test_symmetric_ep_equals_the_gradient_at_the_free_fixed_point(form, loss):
    """Scellier & Bengio 2017 Theorem 1 (and, for the primitive form with an invertible
    activation, the same theorem for F = sum G(s) - Phi(s), G' = rho^-1)."""
    model = _mlp((5, 6, 4, 3), nn.Sigmoid)
    x, y = torch.rand(4, 5), torch.randint(0, 3, (4,))
    rule = apical.make_rule("equilibrium_propagation", form=form, loss=loss, beta=1e-3,
                            free_steps=400, nudged_steps=200)  # fmt: skip
    wrapped = apical.convert(model, rule, x)
    net = layered(wrapped.net)
    params = list(wrapped.parameters())
    states, _ = ep.settle(net, form, x, 400, 0.5, loss)
    reference = _implicit_gradient(net, form, x, y, loss, states, params)
    ours = rule.directions(wrapped, x, y).directions
    for (name, _), ref in zip(wrapped.named_parameters(), reference, strict=True):
        rel = float((ours[name] - ref).norm() / ref.norm())
        assert rel < 1e-2 and angle(ours[name], ref) < 1.0, (name, rel)


def test_one_sided_nudging_has_a_first_order_bias_and_symmetric_a_second_order_one():
    model = _mlp((5, 6, 4, 3), nn.Sigmoid)
    x, y = torch.rand(4, 5), torch.randint(0, 3, (4,))
    exact = apical.make_rule("equilibrium_propagation", form="hopfield", beta=1e-4,
                             free_steps=400, nudged_steps=300)  # fmt: skip
    wrapped = apical.convert(model, exact, x)
    ref = exact.directions(wrapped, x, y).directions["net.0.weight"]

    def error(nudging, beta):
        rule = apical.make_rule("equilibrium_propagation", form="hopfield", beta=beta,
                                nudging=nudging, free_steps=400, nudged_steps=300)  # fmt: skip
        return float((rule.directions(wrapped, x, y).directions["net.0.weight"] - ref).norm())

    one = error("positive", 0.2) / error("positive", 0.1)
    two = error("symmetric", 0.2) / error("symmetric", 0.1)
    assert 1.8 < one < 2.2 and 3.6 < two < 4.4, (one, two)


def test_the_relaxing_shell_answers_at_the_free_fixed_point():
    model = _mlp((5, 6, 4, 3), nn.Sigmoid)  # two hidden layers: the first hears the second
    x = torch.rand(4, 5)
    rule = apical.make_rule("equilibrium_propagation", free_steps=50)
    wrapped = apical.convert(model, rule, x)
    assert isinstance(wrapped, Relaxing)
    net = layered(wrapped.net)
    states, _ = ep.settle(net, "primitive", x, 50, 0.5, "cross_entropy")
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), ep.output(net, "primitive", x, states))
        assert not torch.allclose(wrapped(x), wrapped.net(x))  # not the feed-forward pass


# -- contrastive Hebbian learning -----------------------------------------------------------
@pytest.mark.parametrize("variant", ["chl", "generec"])
def test_chl_with_weak_feedback_and_scaled_rates_tends_to_backprop(variant):
    """Xie & Seung 2003: with gamma small and rates gamma^-(L-l), CHL ~ backprop."""
    model = _mlp((6, 8, 5, 3), nn.Sigmoid)
    x, y = torch.rand(16, 6), torch.randint(0, 3, (16,))
    rule = apical.make_rule("contrastive_hebbian", variant=variant, gamma=0.05,
                            minus_steps=100, plus_steps=100)  # fmt: skip
    wrapped = apical.convert(model, rule, x)
    ours = rule.directions(wrapped, x, y).directions
    theirs = Backprop(loss="mse").directions(wrapped.net, x, y).directions
    for k in theirs:
        assert angle(ours["net." + k], theirs[k]) < 5.0, k
        ratio = float(ours["net." + k].norm() / theirs[k].norm())
        assert 0.8 < ratio < 1.25, (k, ratio)


# -- every rule ----------------------------------------------------------------------------
RULES = {
    "predictive_coding": dict(steps=10, nudge="centred"),
    "equilibrium_propagation": dict(free_steps=20, nudged_steps=5),
    "contrastive_hebbian": dict(minus_steps=10, plus_steps=10),
}


@pytest.mark.parametrize("name", list(RULES))
def test_batched_equals_one_example_at_a_time(name):
    model = _mlp((5, 6, 4, 3), nn.Sigmoid)
    x, y = torch.rand(6, 5), torch.randint(0, 3, (6,))
    rule = apical.make_rule(name, **RULES[name])
    net = apical.convert(model, rule, x)
    batch = rule.directions(net, x, y).directions
    single = [rule.directions(net, x[i : i + 1], y[i : i + 1]).directions for i in range(6)]
    for k in batch:
        torch.testing.assert_close(batch[k], sum(s[k] for s in single) / 6, rtol=1e-10,
                                   atol=1e-13)  # fmt: skip


def test_energy_rules_refuse_what_they_cannot_relax():
    x = torch.rand(2, 4)
    with pytest.raises(apical.ApicalError, match="two weight layers with no activation"):
        apical.convert(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)),
                       apical.make_rule("equilibrium_propagation"), x)  # fmt: skip
    with pytest.raises(apical.ApicalError, match="BatchNorm1d; the energy-based rules take"):
        chain = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Tanh(), nn.Linear(3, 2))
        apical.convert(chain, apical.make_rule("contrastive_hebbian"), x)
    with pytest.raises(apical.ApicalError, match=r"need an nn\.Sequential"):
        apical.make_rule("predictive_coding").directions(nn.Linear(4, 2), x, torch.tensor([0, 1]))
    with pytest.raises(apical.ApicalError, match="set tol = none or compiled = false"):
        apical.make_rule("predictive_coding", compiled=True, tol=1e-4)
    with pytest.raises(apical.ApicalError, match="set bounded_rate = false"):
        apical.make_rule("predictive_coding", schedule="zil", bounded_rate=True)
    with pytest.raises(apical.ApicalError, match='set loss = "mse"'):
        apical.make_rule("contrastive_hebbian", loss="cross_entropy")
    plain = apical.convert(_mlp((4, 3, 2)), apical.make_rule("backprop"), x)
    with pytest.raises(apical.ApicalError, match=r"convert the model with apical\.convert"):
        apical.make_rule("equilibrium_propagation").directions(plain, x, torch.tensor([0, 1]))


@pytest.mark.parametrize("bounded", [False, True], ids=["one-rate", "bounded-rate"])
def test_compiled_inference_equals_eager(bounded):
    """The fixed-step loop compiled as one function (torch.compile) computes what the eager
    loop computes (with the bound binding: weights tripled, rate 0.4)."""
    model = _mlp((5, 7, 6, 3), nn.Tanh)
    if bounded:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(3.0)
    x, y = torch.rand(8, 5), torch.randint(0, 3, (8,))
    options = dict(steps=6, rate=0.4 if bounded else 0.2, bounded_rate=bounded)
    eager = apical.make_rule("predictive_coding", **options)
    net = apical.convert(model, eager, x)
    if bounded:
        assert node_rates(layered(net), x, 0.4, torch.ones(8), eager.loss).amax() < 0.4
    compiled = apical.make_rule("predictive_coding", compiled=True, **options)
    ours, theirs = (r.directions(net, x, y).directions for r in (compiled, eager))
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-10, atol=1e-12)


def _small_task(data, hidden: int, lr: float, momentum: float, epochs: int, step: float,
                seed: int, gamma: float = 1.0) -> float:  # fmt: skip
    """Test accuracy of CHL on a small task after `epochs` full-batch epochs (the settings of
    scripts/chl_small_tasks.py)."""
    from apical.train import TrainConfig, train

    config = TrainConfig.from_dict({
        "dataset": "xor", "model": "mlp", "seed": seed, "device": "cpu",
        "model_options": {"hidden": [hidden], "activation": "sigmoid",
                          "output_activation": "sigmoid"},
        "rule": "contrastive_hebbian", "loss": "mse", "lr": lr, "momentum": momentum,
        "batch_size": len(data.x_train),
        "rule_options": {"gamma": gamma, "minus_steps": 30, "plus_steps": 30,
                         "scale_layers": gamma != 1.0, "step_size": step},
        "epochs": epochs, "eval_every": epochs, "probe_every": 0,
    })  # fmt: skip
    return train(config, progress=False, data=data).history[-1]["test_accuracy"]


def test_contrastive_hebbian_learning_solves_xor():
    """O'Reilly's sanity task through the one trainer (scripts/chl_small_tasks.py runs ten
    seeds: 10 of 10 solved): a 2-4-2 logistic net, full feedback, 500 epochs."""
    from apical.data import load_dataset

    torch.set_default_dtype(torch.float32)
    for seed in (0, 1):
        assert _small_task(load_dataset("xor"), 4, 1.0, 0.0, 500, 1.0, seed) == 1.0, seed


def test_contrastive_hebbian_learning_solves_the_encoder():
    """The 8-3-8 encoder with scripts/chl_small_tasks.py's settings (feedback gain 0.5 with
    Xie & Seung's layer-wise rates, momentum 0.5, 3,000 epochs; ten seeds: 10 of 10), on
    seed 7, the one that full feedback leaves with two patterns merged."""
    torch.set_default_dtype(torch.float32)
    eye = torch.eye(8)
    data = Dataset("encoder-8", eye, torch.arange(8), eye, torch.arange(8), eye,
                   torch.arange(8), 8)  # fmt: skip
    assert _small_task(data, 3, 1.0, 0.5, 3000, 0.5, seed=7, gamma=0.5) == 1.0


def test_predictive_codings_error_signals_approach_backprops_as_the_nudge_shrinks():
    """The probes' delta angles: -eps_l / beta at the relaxed nodes tends to dL/du_l as beta
    goes to 0 (W&B 2017), and the output's signal is dloss/dmu exactly."""
    from apical.metrics import alignment

    torch.manual_seed(0)
    x, y = torch.randn(32, 10, dtype=torch.float64), torch.randint(0, 4, (32,))
    angles = {}
    for beta in (1.0, 1e-4):
        rule = apical.make_rule("predictive_coding", steps=300, rate=0.1, beta=beta)
        layers = [nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 4)]
        net = apical.convert(nn.Sequential(*layers).double(), rule, x)
        rows = alignment(net, rule, x, y, torch.Generator().manual_seed(0))
        angles[beta] = {k: v["delta_angle"] for k, v in rows.items()}
    assert all(a < 0.1 for a in angles[1e-4].values()), angles
    assert angles[1.0]["0"] > 10 * angles[1e-4]["0"]
