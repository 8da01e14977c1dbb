"""The nn.Module shell of the dendritic microcircuit: parameters, initial state, test pass.

`Microcircuit(config)` holds per layer k the forward weights W_k, b_k (`layers.k`, roles
hidden/output) and per hidden layer the interneurons (`interneurons.k`: W^IP, b^IP, W^PI)
and the top-down weights (`interneurons.k.top_down`). Which of them learn is the config's
(fixed tensors are parameters with requires_grad False, so checkpoints hold them all).
`model(x)` is a test presentation: the output rates phi(uhat_N) of the bottom-up sweep
(the class is the arg-max). Training goes through the rule `microcircuit`.

Section numbers (§) refer to docs/models/microcircuit.md.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from apical.errors import ApicalError
from apical.microcircuit import dynamics
from apical.microcircuit.config import MicrocircuitConfig, microcircuit_config
from apical.microcircuit.dynamics import Params


class PyramidalLayer(nn.Module):
    """Forward weight (out, in) and bias (the basal dendrites' synapses and threshold)."""

    def __init__(self, n_in: int, n_out: int, position: str) -> None:
        super().__init__()
        self.position = position
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(n_out))


class Interneurons(nn.Module):
    """A hidden layer's interneurons (one per pyramid of the layer above) and the weights of
    its pyramids' apical dendrites: W^IP (n_above, n), b^IP, W^PI (n, n_above), B (n, n_above)."""

    def __init__(self, n: int, n_above: int) -> None:
        super().__init__()
        self.position = "hidden"
        self.ip_weight = nn.Parameter(torch.zeros(n_above, n))
        self.ip_bias = nn.Parameter(torch.zeros(n_above))
        self.pi_weight = nn.Parameter(torch.zeros(n, n_above))
        self.top_down = nn.Parameter(torch.zeros(n, n_above))


class Microcircuit(nn.Module):
    def __init__(self, config: MicrocircuitConfig) -> None:
        super().__init__()
        config.check()
        self.config = config
        sizes = config.sizes
        n = len(sizes) - 1
        self.layers = nn.ModuleList(
            PyramidalLayer(sizes[k], sizes[k + 1], "output" if k == n - 1 else "hidden")
            for k in range(n)
        )
        self.interneurons = nn.ModuleList(
            Interneurons(sizes[k + 1], sizes[k + 2]) for k in range(n - 1)
        )
        self._initialise()
        for k, layer in enumerate(self.layers):
            layer.requires_grad_(k not in config.frozen)
        for k, inter in enumerate(self.interneurons):
            # the partner of a frozen layer has nothing to track: it stays self-predicting
            inter.ip_weight.requires_grad_(k + 1 not in config.frozen)
            inter.ip_bias.requires_grad_(k + 1 not in config.frozen)
            inter.pi_weight.requires_grad_(config.learn_interneuron_to_pyramid)
            inter.top_down.requires_grad_(config.learn_top_down)

    @torch.no_grad()
    def _initialise(self) -> None:
        """Xavier-normal forward weights (gain `init_gain`), zero biases; top-down weights
        random (Xavier-normal) or the transposed forward weights of the layer above; then
        the self-predicting state if asked (§3)."""
        gain = self.config.init_gain
        for layer in self.layers:
            nn.init.xavier_normal_(layer.weight, gain=gain)
        for k, inter in enumerate(self.interneurons):
            if self.config.top_down == "random":
                nn.init.xavier_normal_(inter.top_down, gain=gain)
            else:
                inter.top_down.copy_(self.layers[k + 1].weight.T)
        if self.config.self_predicting:
            self.make_self_predicting()
        else:
            for inter in self.interneurons:
                nn.init.xavier_normal_(inter.ip_weight, gain=gain)
                nn.init.xavier_normal_(inter.pi_weight, gain=gain)

    @torch.no_grad()
    def make_self_predicting(self) -> None:
        """The self-predicting state (§3): each interneuron's dendritic prediction equals its
        partner pyramid's basal prediction, g_d/(g_l+g_d) W^IP_k = c_{k+1} W_{k+1} (and the
        biases), and W^PI_k = -B_k, so that without a target every apical potential is 0."""
        gains, c_i = self.config.basal_gains, self.config.mixing.inter
        for k, inter in enumerate(self.interneurons):
            above = self.layers[k + 1]
            gain = gains[k + 1] / c_i
            inter.ip_weight.copy_(gain * above.weight)
            inter.ip_bias.copy_(gain * above.bias)
            inter.pi_weight.copy_(-inter.top_down)

    @torch.no_grad()
    def sync_top_down(self) -> None:
        """Transposed top-down weights: B_k = W_{k+1}^T, re-set after every update (and
        W^PI_k = -B_k while W^PI does not learn); random ones never change here."""
        if self.config.top_down != "transposed":
            return
        for k, inter in enumerate(self.interneurons):
            inter.top_down.copy_(self.layers[k + 1].weight.T)
            if not self.config.learn_interneuron_to_pyramid:
                inter.pi_weight.copy_(-inter.top_down)

    def params(self) -> Params:
        inter = self.interneurons
        return Params(
            tuple(layer.weight for layer in self.layers),
            tuple(layer.bias for layer in self.layers),
            tuple(i.ip_weight for i in inter),
            tuple(i.ip_bias for i in inter),
            tuple(i.pi_weight for i in inter),
            tuple(i.top_down for i in inter),
        )

    def flat(self, x: Tensor) -> Tensor:
        x = x.reshape(len(x), -1)
        if x.shape[1] != self.config.n_inputs:
            raise ApicalError(
                f"microcircuit: inputs have {x.shape[1]} values but the network has "
                f"{self.config.n_inputs} inputs; set model_options n_inputs"
            )
        return x

    def target_potentials(self, labels: Tensor) -> Tensor:
        """u_trgt = phi^-1(target rate) per example and output: for class labels the rate
        is `target_high` at the label's unit and `target_low` elsewhere; float targets
        (B, n_outputs) are the target rates themselves (regression)."""
        c, p = self.config, self.layers[0].weight
        if labels.dtype.is_floating_point:
            if labels.shape != (len(labels), c.n_outputs):
                raise ApicalError(
                    f"microcircuit: float targets must be rates of shape (batch, {c.n_outputs}), "
                    f"got {tuple(labels.shape)}"
                )
            rates = labels.to(dtype=p.dtype)
        else:
            hot = nn.functional.one_hot(labels, c.n_outputs).bool()
            rates = torch.where(hot, c.target_high, c.target_low).to(dtype=p.dtype)
        return dynamics.potential_of_rate(c, rates).to(device=p.device)

    @torch.no_grad()
    def settle(self, x: Tensor, target: Tensor | None, generator=None) -> dynamics.State:
        """A presentation under the config's dynamics (target potentials, or None)."""
        x, params = self.flat(x), self.params()
        if self.config.dynamics == "continuous":
            start = dynamics.settle(self.config, params, x, None)
            return dynamics.euler(
                self.config, params, x, target, start=(start.soma, start.inter),
                generator=generator,
            )  # fmt: skip
        return dynamics.settle(self.config, params, x, target)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Output rates phi(uhat_N) of the bottom-up sweep (B, n_outputs)."""
        _, basal = dynamics.bottom_up(self.config, self.params(), self.flat(x))
        return dynamics.rate_function(self.config)(basal[-1])


def microcircuit(input_shape, n_classes: int, **options) -> Microcircuit:
    """The Sacramento et al. 2018 network for inputs of `input_shape` (flattened) and
    `n_classes` outputs; `options` are MicrocircuitConfig fields. Weights are drawn from the
    global generator (the trainer seeds it)."""
    config = microcircuit_config(n_inputs=math.prod(input_shape), n_outputs=n_classes, **options)
    return Microcircuit(config)
