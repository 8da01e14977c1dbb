"""Rules: DFA with D = W_out equals backprop on one hidden layer and projects the output
error to conv activations; sign symmetry sends sign(W); Kolen–Pollack gives B W's direction;
every rule is pure (changes no tensor) and the registry names every rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import apical
from apical.rules.sign_symmetry import sign_feedback


def _net():
    return nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 3))


def test_dfa_one_hidden_layer_with_transposed_output_weights_is_backprop():
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    dfa = apical.make_rule("dfa")
    net = apical.convert(_net(), dfa, x)
    assert net[2].feedback.shape == (3, 7)  # (n_outputs, hidden size)
    assert net[0].feedback is None
    net[2].feedback.copy_(net[2].weight)
    ours = dfa.directions(net, x, y).directions
    exact = apical.make_rule("backprop").directions(net, x, y).directions
    for k in exact:
        torch.testing.assert_close(ours[k], exact[k], rtol=0, atol=1e-7)


def test_dfa_projects_output_error_to_conv_activation():
    """conv1 -> relu -> conv2 -> relu -> flatten -> linear: conv2's input (conv1's activation,
    shape (C, H, W)) receives D2^T e reshaped, so dW1 = conv-grad of relu'(a1) * (e D2)."""
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(5 * 3 * 3, 3),
    )  # fmt: skip
    x, y = torch.randn(6, 2, 10, 10), torch.randint(0, 3, (6,))
    dfa = apical.make_rule("dfa")
    net = apical.convert(model, dfa, x)
    assert net[2].feedback.shape == (3, 4 * 8 * 8)
    ours = dfa.directions(net, x, y).directions
    # independent reference
    with torch.no_grad():
        a1 = net[0](x)
        out = net(x)
    e = torch.softmax(out, 1) - nn.functional.one_hot(y, 3).float()
    e = e / len(x)  # gradient of the batch-mean cross entropy w.r.t. the outputs
    delta1 = (a1 > 0).float() * (e @ net[2].feedback).reshape(a1.shape)
    w1 = net[0].weight.detach().clone().requires_grad_(True)
    a1_again = nn.functional.conv2d(x, w1, net[0].bias.detach())
    (ref_w1,) = torch.autograd.grad(a1_again, w1, delta1)
    torch.testing.assert_close(ours["0.weight"], ref_w1, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("scaled", [True, False])
def test_sign_symmetry_feedback_is_sign_of_weights(scaled):
    """B = sign(W) (Liao 2016), by default times W's root mean square entry (‖B‖ = ‖W‖);
    the directions are FA's with that B."""
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    ss = apical.make_rule("sign_symmetry", scaled=scaled)
    net = apical.convert(_net(), ss, x)
    for layer in (net[0], net[2]):
        w = layer.weight.detach()
        rms = w.pow(2).mean().sqrt() if scaled else 1.0
        # the rms is computed another way (a norm): equal to float32 rounding of the scale
        torch.testing.assert_close(
            ss.feedback_matrix(layer), torch.sign(w) * rms, rtol=1e-6, atol=0
        )
        if scaled:
            torch.testing.assert_close(ss.feedback_matrix(layer).norm(), w.norm())
    # the same directions as FA with B set to that matrix
    fa = apical.make_rule("fa")
    fa_net = apical.convert(net, fa, x)
    assert fa_net[0].feedback is None  # reads the data
    fa_net[2].feedback.copy_(ss.feedback_matrix(fa_net[2]))
    ours = ss.directions(net, x, y).directions
    ref = fa.directions(fa_net, x, y).directions
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], rtol=0, atol=0)


def test_sign_symmetry_random_magnitudes_keep_signs_and_redraw_per_batch():
    net = apical.convert(_net(), apical.make_rule("sign_symmetry"), torch.randn(2, 6))
    g = torch.Generator().manual_seed(0)
    b1 = sign_feedback(net[2], True, g, scaled=False)
    b2 = sign_feedback(net[2], True, g, scaled=False)
    assert torch.equal(torch.sign(b1), torch.sign(net[2].weight))
    assert not torch.equal(b1, b2)
    assert b1.abs().mean().item() == pytest.approx((2 / torch.pi) ** 0.5, rel=0.5)


def test_kolen_pollack_feedback_gets_the_weight_direction():
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    kp = apical.make_rule("kolen_pollack")
    net = apical.convert(_net(), kp, x)
    assert isinstance(net[2].feedback, nn.Parameter)
    d = kp.directions(net, x, y).directions
    assert "0.feedback" not in d  # the first layer reads the data and has no feedback
    torch.testing.assert_close(d["2.feedback"], d["2.weight"], rtol=0, atol=0)


def test_kolen_pollack_weight_decay_shrinks_w_minus_b_geometrically():
    """Same increment for W and B: W - B evolves as (1 - lr*wd)^t under SGD (Akrout 2019)."""
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    kp = apical.make_rule("kolen_pollack")
    model = nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 3))
    net = apical.convert(model, kp, x)
    lr, wd = 0.1, 0.05
    opt = torch.optim.SGD(apical.param_groups(net, lr, output_lr=0.02), lr=lr, weight_decay=wd)
    gap2 = (net[2].weight - net[2].feedback).detach().clone()
    gap4 = (net[4].weight - net[4].feedback).detach().clone()
    steps = 25
    params = dict(net.named_parameters())
    for _ in range(steps):
        for k, v in kp.directions(net, x, y).directions.items():
            params[k].grad = v
        opt.step()
    assert not torch.equal(net[2].weight, model[2].weight)  # it did learn
    torch.testing.assert_close(net[2].weight - net[2].feedback, gap2 * (1 - lr * wd) ** steps)
    torch.testing.assert_close(net[4].weight - net[4].feedback, gap4 * (1 - 0.02 * wd) ** steps)


@pytest.mark.parametrize("decay_biases", [False, True])
def test_kolen_pollack_leaves_biases_undecayed_unless_asked(decay_biases):
    """Akrout et al. 2019 decay weights and feedback, not biases: with a zero direction
    (lr 0 is not allowed, so the directions are zeroed) only the decay acts."""
    kp = apical.make_rule("kolen_pollack", decay_biases=decay_biases)
    net = apical.convert(_net(), kp, torch.randn(2, 6))
    groups = apical.param_groups(net, 0.1, bias_decay=kp.decays_biases)
    opt = torch.optim.SGD(groups, lr=0.1, weight_decay=0.5)
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for k, p in net.named_parameters():
        factor = 1.0 if k.endswith("bias") and not decay_biases else 1 - 0.1 * 0.5
        torch.testing.assert_close(p.detach(), before[k] * factor, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "name", [n for n, cls in apical.RULES.items() if cls.model_class is None]
)  # rules with their own model are tested in their own modules (test_dendrites.py)
def test_rules_are_pure(name):
    chains = ("burstprop", "burstccn", "node_perturbation", "predictive_coding",
              "equilibrium_propagation", "contrastive_hebbian")  # fmt: skip
    if name in chains:  # sequential chains without BatchNorm (BurstCCN: logistic units)
        hidden = nn.Sigmoid() if name == "burstccn" else nn.ReLU()
        model = nn.Sequential(
            nn.Conv2d(1, 3, 3), hidden, nn.Flatten(), nn.Linear(3 * 6 * 6, 4), nn.Sigmoid()
        )
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4)
        )
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 4, (5,))
    rule = (
        apical.make_rule(name, random_magnitudes=True)
        if name == "sign_symmetry"
        else (apical.make_rule(name))
    )
    net = apical.convert(model, rule, x)
    before = {k: v.clone() for k, v in net.named_parameters()}
    step = rule.directions(net, x, y, torch.Generator().manual_seed(0))
    for k, v in net.named_parameters():
        assert torch.equal(v, before[k])
        assert v.grad is None
        assert step.directions[k].shape == v.shape
    assert step.outputs.shape == (5, 4)
    assert torch.isfinite(step.loss)


def test_registry_errors_name_the_known_rules():
    with pytest.raises(apical.ApicalError, match="known rules: backprop, fa, dfa"):
        apical.make_rule("hebbian")
    with pytest.raises(
        apical.ApicalError,
        match="unknown rule 'fa' option key sparsity; known keys: feedback, loss",
    ):
        apical.make_rule("fa", sparsity=0.5)
    rule = apical.make_rule("fa", feedback={"sparsity": 0.5, "distribution": "normal"})
    assert rule.feedback.sparsity == 0.5
    with pytest.raises(apical.ApicalError, match="unknown loss"):
        apical.make_rule("fa", loss="hinge")


def test_unconverted_layer_under_fa_gives_a_clear_error():
    net = nn.Sequential(apical.FeedbackLinear(4, 3), apical.FeedbackLinear(3, 2))  # no feedback
    with pytest.raises(apical.ApicalError, match="convert the model"):
        apical.make_rule("fa").directions(net, torch.randn(3, 4), torch.tensor([0, 1, 0]))


def test_mse_loss_directions_match_autograd():
    model = _net()
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    net = apical.convert(model, apical.make_rule("backprop"), x)
    d = apical.make_rule("backprop", loss="mse").directions(net, x, y).directions
    t = nn.functional.one_hot(y, 3).float()
    loss = 0.5 * ((model(x) - t) ** 2).sum(1).mean()
    ref = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(d["0.weight"], ref[0])
