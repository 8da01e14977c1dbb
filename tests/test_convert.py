"""apical.convert: every Linear/Conv2d of an arbitrary model (a residual net with BatchNorm)
is swapped, forward weights and outputs are kept, the last layer called is the output layer,
DFA projections are sized from activation shapes, and the original model is untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import apical
from apical.layers import FeedbackLayer


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.block = Block(8)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.head(self.block(self.stem(x)))))


# the energy-based rules relax a layered chain (apical.energy.layered): they refuse a
# residual net (test_energy.py)
ENERGY = {"predictive_coding", "equilibrium_propagation", "contrastive_hebbian"}


@pytest.mark.parametrize("name", [n for n in apical.RULES if n not in ENERGY])
def test_residual_net_with_batchnorm_is_converted(name):
    model = TinyResNet()
    x = torch.randn(4, 3, 16, 16)
    net = apical.convert(model, apical.make_rule(name), x)
    swapped = {n: m for n, m in net.named_modules() if isinstance(m, FeedbackLayer)}
    assert set(swapped) == {"stem", "block.conv1", "block.conv2", "head.2", "fc"}
    assert not any(type(m) in (nn.Linear, nn.Conv2d) for m in net.modules())
    assert [n for n, m in swapped.items() if m.position == "output"] == ["fc"]
    for n, m in swapped.items():
        torch.testing.assert_close(m.weight, model.get_submodule(n).weight, rtol=0, atol=0)
    for mode in (False, True):
        model.train(mode)
        net.train(mode)
        torch.testing.assert_close(net(x), model(x), rtol=0, atol=0)
    # the original model keeps its own layers and was not changed by the conversion
    assert all(type(model.get_submodule(n)) in (nn.Linear, nn.Conv2d) for n in swapped)


def test_only_layers_reading_the_data_go_without_feedback():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    net = apical.convert(model, apical.make_rule("fa"), torch.randn(5, 4))
    assert net[1].feedback.shape == (3, 4)  # its input comes through BatchNorm's parameters
    flat = apical.convert(
        nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), apical.make_rule("fa"), torch.randn(2, 3, 4)
    )
    assert flat[1].feedback is None  # a flattened view of the data is still the data


def test_conversion_leaves_batchnorm_statistics_alone():
    model = TinyResNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apical.convert(model, apical.make_rule("fa"), torch.randn(4, 3, 16, 16), inplace=True)
    after = model.state_dict()
    for k in ("block.bn1.running_mean", "block.bn1.running_var", "block.bn2.num_batches_tracked"):
        assert torch.equal(after[k], before[k])
    assert model.training


def test_dfa_projections_sized_by_activation_shapes():
    net = apical.convert(TinyResNet(), apical.make_rule("dfa"), torch.randn(2, 3, 16, 16))
    assert net.stem.feedback is None  # reads the data: no error is sent there
    assert net.block.conv1.feedback.shape == (5, 8 * 8 * 8)
    assert net.head[2].feedback.shape == (5, 32)
    assert net.fc.feedback.shape == (5, 16)


def test_residual_net_trains_under_every_rule_direction():
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 5, (6,))
    own_model = {n for n, cls in apical.RULES.items() if cls.model_class is not None}
    chains = {"burstprop", "burstccn", "node_perturbation"}  # sequential chains only
    for name in set(apical.RULES) - chains - own_model - ENERGY:
        rule = apical.make_rule(name)
        net = apical.convert(TinyResNet(), rule, x)
        d = rule.directions(net, x, y).directions
        assert all(torch.isfinite(v).all() for v in d.values())
        assert d["stem.weight"].abs().sum() > 0


def test_convert_errors():
    with pytest.raises(apical.ApicalError, match=r"no nn\.Linear or nn\.Conv2d"):
        apical.convert(nn.Sequential(nn.ReLU()), apical.make_rule("fa"), torch.randn(2, 3))
    with pytest.raises(apical.ApicalError, match="padding_mode"):
        apical.convert(
            nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"),
            apical.make_rule("fa"),
            torch.randn(1, 1, 5, 5),
        )
    with pytest.raises(apical.ApicalError, match="example input of shape"):
        apical.convert(nn.Linear(4, 2), apical.make_rule("fa"), torch.randn(2, 5))
    with pytest.raises(apical.ApicalError, match=r"torch\.nn\.Module"):
        apical.convert("model", apical.make_rule("fa"), torch.randn(2, 5))


def test_parameter_roles_and_groups():
    x = torch.randn(2, 3, 16, 16)
    net = apical.convert(TinyResNet(), apical.make_rule("kolen_pollack"), x)
    roles = apical.parameter_roles(net)
    assert roles["fc.weight"] == ("forward", "output")
    assert roles["fc.feedback"] == ("feedback", "output")
    assert roles["stem.bias"] == ("bias", "hidden")
    assert roles["block.bn1.weight"] == ("other", "hidden")
    groups = apical.param_groups(net, lr=0.1, output_lr=0.01)
    by_name = {g["name"]: g for g in groups}
    assert by_name["output"]["lr"] == 0.01 and by_name["hidden"]["lr"] == 0.1
    ids = {id(p) for p in by_name["output"]["params"]}
    assert {id(net.fc.weight), id(net.fc.bias), id(net.fc.feedback)} == ids
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
