"""Contrastive Hebbian learning and GeneRec as a rule (O'Reilly 1996; Xie & Seung 2003).

Equations: apical.energy.contrastive. Per step: the minus phase (output free, from the
feed-forward rates, `minus_steps`), the plus phase (output clamped to the target, from the
minus phase, `plus_steps`), then the CHL or GeneRec contrast. Convention: **batch means**.
`gamma`: the feedback gain; `scale_layers`: Xie & Seung's layer-wise rates gamma^-(L-l),
under which the updates tend to backprop's as gamma -> 0; `step_size`: each settling step
moves the rates that fraction of the way to their target (1: the plain fixed-point
iteration, which can oscillate with strong feedback). The output is clamped to the target,
so the loss is the squared error (labels as one-hot rates).

Like equilibrium propagation the network answers after its minus phase (`wrap`:
apical.energy.Relaxing), and the probes' reference is backprop through that phase.
Diagnostics (probes): per layer `phase_change`, the mean squared difference of the
layer's rates between the phases (how much of the target reaches it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
from torch import Tensor, nn

from apical.config import AT_LEAST_ONE, POSITIVE
from apical.energy import contrastive as chl
from apical.energy.layered import Layered, layered
from apical.energy.network import Relaxing, named_directions, trainable, weight_layer_names
from apical.errors import ConfigError
from apical.losses import get_loss
from apical.rules.base import Rule, Step
from apical.rules.equilibrium_propagation import relaxing


@dataclass(frozen=True, kw_only=True)
class ContrastiveHebbian(Rule):
    name: ClassVar[str] = "contrastive_hebbian"
    summary: ClassVar[str] = "free and clamped phases, Hebbian minus anti-Hebbian (O'Reilly 1996)"
    diagnoses: ClassVar[bool] = True
    loss: str = "mse"
    variant: Literal["chl", "generec"] = "chl"
    gamma: Annotated[float, POSITIVE] = 0.5
    minus_steps: Annotated[int, AT_LEAST_ONE] = 20
    plus_steps: Annotated[int, AT_LEAST_ONE] = 20
    scale_layers: bool = True
    step_size: Annotated[float, POSITIVE] = 1.0
    tol: Annotated[float, POSITIVE] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss != "mse":
            raise ConfigError(
                f"rule contrastive_hebbian clamps the output to the target, so its loss is the "
                f'squared error: set loss = "mse" (got {self.loss!r})'
            )

    def wrap(self, model: nn.Module) -> nn.Module:
        layered(model)  # checks the net
        return Relaxing(model, self.answer)

    def answer(self, net: Layered, x: Tensor, track: bool) -> Tensor:
        phase = chl.free_phase(
            net, x, self.gamma, self.minus_steps, self.tol, track, self.step_size
        )
        return phase[0][-1]

    def directions(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator | None = None,
        diagnose: bool = False,
    ) -> Step:
        wrapped = relaxing(model, self.name)
        net, params = layered(wrapped.net), trainable(wrapped)
        minus, plus, _, _ = chl.phases(
            net, x, y, self.gamma, self.minus_steps, self.plus_steps, self.tol, self.step_size
        )
        depth = net.depth
        scales = [
            self.gamma ** -(depth - 1 - k) if self.scale_layers else 1.0 for k in range(depth)
        ]
        grads = chl.directions(net, x, minus, plus, list(params.values()), self.variant, scales)
        outputs = minus[-1].detach()
        loss = get_loss(self.loss)(outputs, y)
        diagnostics = {}
        if diagnose:
            names = weight_layer_names(wrapped)
            diagnostics = {
                name: {"phase_change": (p - m).pow(2).mean()}
                for name, p, m in zip(names, plus, minus, strict=True)
            }
        return Step(
            loss.detach(), outputs, named_directions(params, grads), diagnostics=diagnostics
        )
