"""Dendritic cortical microcircuits (Sacramento, Costa, Bengio & Senn, NeurIPS 2018) as a rule.

Each step presents the batch with its targets to the microcircuit (apical.microcircuit:
the simplified steady-state sweeps, or Euler steps of the membrane equations) and returns
the paper's four plasticity rules (dendritic prediction of somatic activity) as directions
-Delta W. Convention: **batch means** (the paper averages over minibatches of 10).

With `rescale` (the paper's "learning rates rescaled by inverse mixing factors"), each
forward layer's change is divided by kappa_k / c_k (apical.microcircuit.dynamics.
backprop_scales), so that with transposed top-down weights and weak nudging the forward
directions tend to backprop's gradient itself and learning rates compare with backprop's;
W^IP's is scaled so that the interneurons track the layer above (`interneuron_scales`).
`ip_lr`, `pi_lr` and `top_down_lr` multiply the directions of W^IP, W^PI and B relative to
their layer's learning rate. The learning rate is bounded by the W^IP rule's stability
(docs/models/microcircuit.md §7). `pi_without_target`: the W^PI rule (paper Eq. 8) reads
the presentation without target (one more sweep per step) instead of the one with it,
where a W^PI fast enough to follow a learned B also cancels the target's error signal
(docs/models/microcircuit.md §6).

Diagnostics per layer (probes): `angle` and `sign_agreement` of the forward direction with
backprop's gradient of the output loss (dynamics.output_error) through the bottom-up
network; per hidden layer `apical_target` and `apical_free`, the mean squared apical
potential with and without the target (0 without target in the self-predicting state),
and `top_down_angle`, the angle between B_k and W_{k+1}^T.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
from torch import Tensor, nn

from apical.config import NON_NEGATIVE
from apical.losses import get_loss
from apical.metrics import angle, sign_agreement
from apical.microcircuit import dynamics
from apical.microcircuit.network import Microcircuit
from apical.rules.base import Rule, Step

Ratio = Annotated[float, NON_NEGATIVE]


@dataclass(frozen=True, kw_only=True)
class DendriticMicrocircuit(Rule):
    name: ClassVar[str] = "microcircuit"
    summary: ClassVar[str] = "apical errors cancelled by interneurons (Sacramento et al. 2018)"
    diagnoses: ClassVar[bool] = True
    model_class: ClassVar[type[nn.Module]] = Microcircuit
    probes: ClassVar[str] = "diagnostics"  # its reference needs the settled state
    loss: str = "mse"
    rescale: bool = True
    ip_lr: Ratio = 1.0
    pi_lr: Ratio = 1.0
    top_down_lr: Ratio = 1.0
    pi_without_target: bool = False

    def directions(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator | None = None,
        diagnose: bool = False,
    ) -> Step:
        net = self.own_model(model)
        target = net.target_potentials(y)
        state = net.settle(x, target, generator)
        params = net.params()
        learns = {n for n, p in net.named_parameters() if p.requires_grad}
        inter = range(len(net.interneurons))
        pi_learns = any(f"interneurons.{k}.pi_weight" in learns for k in inter)
        free = net.settle(x, None, generator) if self.pi_without_target and pi_learns else None

        def factor(name: str, f: float) -> float | None:
            return -f if name in learns else None  # directions are -Delta W

        forward = self.forward_scales(net)
        ip = self.interneuron_scales(net)
        upd = dynamics.plasticity(
            net.config,
            params,
            state,
            tuple(factor(f"layers.{k}.weight", s) for k, s in enumerate(forward)),
            tuple(factor(f"interneurons.{k}.ip_weight", self.ip_lr * ip[k]) for k in inter),
            tuple(factor(f"interneurons.{k}.pi_weight", self.pi_lr) for k in inter),
            tuple(factor(f"interneurons.{k}.top_down", self.top_down_lr) for k in inter),
            pi_state=free,
        )
        named = {}
        for k in range(len(net.layers)):
            named[f"layers.{k}.weight"], named[f"layers.{k}.bias"] = upd.weights[k], upd.biases[k]
        for k in inter:
            p = f"interneurons.{k}."
            named[p + "ip_weight"], named[p + "ip_bias"] = upd.ip_weights[k], upd.ip_biases[k]
            named[p + "pi_weight"], named[p + "top_down"] = upd.pi_weights[k], upd.top_down[k]
        directions = {n: d for n, d in named.items() if d is not None}
        outputs = dynamics.rate_function(net.config)(state.basal[-1])
        loss = get_loss(self.loss)(outputs, y)
        diagnostics = self._diagnostics(net, x, target, state, directions) if diagnose else {}
        return Step(loss.detach(), outputs, directions, diagnostics=diagnostics)

    def forward_scales(self, net: Microcircuit) -> tuple[float, ...]:
        if not self.rescale:
            return (1.0,) * len(net.layers)
        return tuple(1 / s for s in dynamics.backprop_scales(net.config, len(net.layers)))

    def interneuron_scales(self, net: Microcircuit) -> tuple[float, ...]:
        """With `rescale`, the scale under which the interneurons track the layer above to
        first order (§6): in the self-predicting state the W^IP_k rule's error is lambda_I
        times layer k+1's forward error, with the same presynaptic rates, so W^IP_k stays
        (c_{k+1} / c_I) W_{k+1} when its direction is scaled by s_{k+1} c_{k+1} / (c_I
        lambda_I), s_{k+1} the forward scale of layer k+1."""
        n = len(net.interneurons)
        if not self.rescale:
            return (1.0,) * n
        m, gains = net.config.mixing, net.config.basal_gains
        forward = self.forward_scales(net)
        return tuple(forward[k + 1] * gains[k + 1] / (m.inter * m.inter_nudge) for k in range(n))

    def _diagnostics(self, net, x, target, state, directions) -> dict[str, dict[str, Tensor]]:
        reference = backprop_gradients(net, x, target)
        free = net.settle(x, None)
        out: dict[str, dict[str, Tensor]] = {}
        n, none = len(net.layers), (None,) * len(net.interneurons)
        unscaled = dynamics.plasticity(net.config, net.params(), state, (-1.0,) * n, none,
                                       none, none).weights  # fmt: skip
        for k in range(n):
            ours, theirs = unscaled[k], reference[k]
            row = {
                "angle": torch.tensor(angle(ours, theirs)),
                "sign_agreement": torch.tensor(sign_agreement(ours, theirs)),
            }
            if k < len(net.interneurons):
                row["apical_target"] = state.apical[k].pow(2).mean()
                row["apical_free"] = free.apical[k].pow(2).mean()
                b, w = net.interneurons[k].top_down, net.layers[k + 1].weight
                row["top_down_angle"] = torch.tensor(angle(b, w.T))
            out[f"layers.{k}"] = row
        return out

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: Step) -> None:
        self.own_model(model).sync_top_down()


def backprop_gradients(net: Microcircuit, x: Tensor, target: Tensor) -> list[Tensor]:
    """Backprop's gradient of the batch-mean output loss (dynamics.output_error) with respect
    to every forward weight, through the bottom-up network (autograd, from the loss's
    gradient at the output potential, dynamics.output_error)."""
    weights = [layer.weight.detach().requires_grad_() for layer in net.layers]
    params = net.params()._replace(weights=tuple(weights))
    with torch.enable_grad():
        _, basal = dynamics.bottom_up(net.config, params, net.flat(x))
        error = dynamics.output_error(net.config, basal[-1], target) / len(x)
        return list(torch.autograd.grad(basal[-1], weights, grad_outputs=error.detach()))
