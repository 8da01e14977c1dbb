"""Predictive coding as a rule (Whittington & Bogacz 2017; Z-IL, Song et al. 2020).

Equations: apical.energy.predictive_coding. Per step the value nodes relax from the
feed-forward pass for `steps` inference steps of rate `rate` with the output energy
beta * loss, then the directions are dF/dtheta / beta at the relaxed nodes: each weight
layer's the local product of its error signal with its input (no backward pass through
the net). Convention: **batch means** (directions of the batch-mean energy, like
backprop's of the batch-mean loss). `nudge`: "positive" (beta > 0: W&B's clamped output),
"negative" (-beta) or "centred" (both, in one batch of 2B, the contrast divided by
2 beta), the three nudging variants of the pcx benchmark (Pinchetti et al. 2024).
`schedule = "zil"`: Z-IL (rate 1, each stage's weights taken after L - l steps:
backprop's gradient exactly; `steps`, `rate`, `beta`, `nudge` unused). `bounded_rate`: each
value node's rate capped at 1 / B_l, the bound of the energy's curvature in that node from
the current weights (apical.energy.curvature), so that inference cannot diverge as the
weights grow; recomputed every learning step, outside the compiled function. `compiled`: the
whole learning step (feed-forward pass, inference, error signals, weight gradients) as
one torch.compile'd function (compiled on the first step, again for each new batch shape;
fastest where per-operation overhead or elementwise work dominates: small nets, conv
nets). The model is the ordinary feed-forward net (its answer is the feed-forward pass),
so backprop and every other rule train the same net.

Diagnostics per layer (probes): `energy`, the stage's mean energy term at the end of
inference (1/2 ||eps_l||^2, the output's beta * loss), `inference_rate` on the hidden layers
with `bounded_rate`, and on the output layer
`inference_steps` (fewer than `steps` only with `tol`); the error signals dF/dmu_l / beta
at the relaxed nodes (-eps_l, the output's dloss/dmu_L) for the probes' delta angles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
from torch import Tensor, nn

from apical.config import AT_LEAST_ONE, POSITIVE
from apical.energy import predictive_coding as pc
from apical.energy.curvature import node_rates
from apical.energy.layered import layered
from apical.energy.network import named_directions, trainable, weight_layer_names
from apical.errors import ConfigError
from apical.losses import get_loss
from apical.rules.base import Rule, Step


@dataclass(frozen=True, kw_only=True)
class PredictiveCoding(Rule):
    name: ClassVar[str] = "predictive_coding"
    summary: ClassVar[str] = "prediction errors relaxed, then local updates (W&B 2017; Z-IL)"
    diagnoses: ClassVar[bool] = True
    steps: Annotated[int, AT_LEAST_ONE] = 20
    rate: Annotated[float, POSITIVE] = 0.1
    beta: Annotated[float, POSITIVE] = 1.0
    nudge: Literal["positive", "negative", "centred"] = "positive"
    schedule: Literal["end", "zil"] = "end"
    tol: Annotated[float, POSITIVE] | None = None
    bounded_rate: bool = False
    compiled: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bounded_rate and self.schedule == "zil":
            raise ConfigError(
                "rule predictive_coding: Z-IL's schedule fixes the rate at 1; "
                'set bounded_rate = false or schedule = "end"'
            )
        if self.compiled and self.tol is not None:
            raise ConfigError(
                "rule predictive_coding: the compiled learning step runs a fixed number of steps; "
                "set tol = none or compiled = false"
            )

    def directions(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator | None = None,
        diagnose: bool = False,
    ) -> Step:
        net, params = layered(model), trainable(model)
        names = weight_layer_names(model)
        if self.schedule == "zil":
            with torch.no_grad():
                outputs = model(x)
            loss = get_loss(self.loss)(outputs, y)
            by_stage = [[p for p in stage.parameters() if p.requires_grad] for stage in net.stages]
            grads = pc.zero_divergence_gradients(net, x, y, self.loss, by_stage)
            found = {
                id(p): g / len(x)
                for ps, gs in zip(by_stage, grads, strict=True)
                for p, g in zip(ps, gs, strict=True)
            }
            directions = named_directions(params, [found.get(id(p)) for p in params.values()])
            return Step(loss.detach(), outputs, directions)
        signs = {"positive": [1.0], "negative": [-1.0], "centred": [1.0, -1.0]}[self.nudge]
        n = len(x)
        xs, ys = (x, y) if len(signs) == 1 else (torch.cat([x, x]), torch.cat([y, y]))
        beta = torch.cat(
            [torch.full((n,), s * self.beta, dtype=x.dtype, device=x.device) for s in signs]
        )
        weights = 1 / (beta * n * len(signs))  # (1/beta) per example; centred: the mean
        rate = node_rates(net, x, self.rate, beta, self.loss) if self.bounded_rate else self.rate
        learned = pc.learn(net, xs, ys, beta, weights, self.loss, rate, self.steps, self.tol,
                           self.compiled)  # fmt: skip
        outputs = net.act(net.depth - 1, learned.output[:n])  # the model's own answer
        loss = get_loss(self.loss)(outputs, y)
        found = {
            id(p): g
            for stage, grads in zip(net.stages, learned.gradients, strict=True)
            for name, p in stage.named_parameters()
            if (g := grads.get(name)) is not None
        }
        grads = [found.get(id(p)) for p in params.values()]
        diagnostics, errors = {}, {}
        if diagnose:
            with torch.no_grad():
                terms = pc.layer_energies(net, xs, learned.nodes, ys, beta, self.loss)
            diagnostics = {name: {"energy": t.mean()} for name, t in zip(names, terms, strict=True)}
            diagnostics[names[-1]]["inference_steps"] = torch.tensor(float(learned.taken))
            if self.bounded_rate:
                for name, r in zip(names, rate, strict=False):  # the hidden layers' nodes
                    diagnostics[name]["inference_rate"] = r
            errors = {
                name: (e / beta.view(-1, *[1] * (e.dim() - 1))).unflatten(0, (len(signs), n))
                .mean(0)  # centred: the two nudges' signals averaged
                for name, e in zip(names, learned.errors, strict=True)
            }  # fmt: skip
        return Step(loss.detach(), outputs, named_directions(params, grads),
                    diagnostics=diagnostics, errors=errors)  # fmt: skip
