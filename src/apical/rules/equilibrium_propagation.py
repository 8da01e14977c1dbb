"""Equilibrium propagation as a rule (Scellier & Bengio 2017; Laborieux et al. 2021).

Equations: apical.energy.equilibrium. Per step: the free phase (`free_steps` from zero
states), the nudged phase(s) warm-started from the free fixed point (`nudged_steps`), and
the contrast of dF/dtheta divided by the nudging. Convention: **batch means**. `nudging`:
"symmetric" (+beta and -beta, run together as one batch of 2B: Laborieux's estimate),
"positive" (one-sided, Scellier & Bengio), "random_sign" (one-sided with the sign of beta
drawn per batch from the rule's generator, Scellier & Bengio's code). `form`: "primitive"
(discrete-time, rates, Laborieux) or "hopfield" (continuous-time energy, Euler steps of
size `step_size`, Scellier & Bengio).

The network answers at its free fixed point, so the rule wraps the converted net in
apical.energy.Relaxing (`wrap`): evaluation runs the free phase, and the alignment probes'
reference, backprop through the wrapped model, is backprop through time over the free
phase (its gradient at the free fixed point when the phase has converged).

Diagnostics (probes): per layer `phase_change`, the mean squared change of the layer's
state from the free to the (positively) nudged phase; on the output layer `free_energy`
and `nudged_energy` (batch means) and `free_steps_taken`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
from torch import Tensor, nn

from apical.config import AT_LEAST_ONE, POSITIVE
from apical.energy import equilibrium as ep
from apical.energy.layered import Layered, layered
from apical.energy.network import Relaxing, named_directions, trainable, weight_layer_names
from apical.errors import ApicalError
from apical.losses import get_loss
from apical.rules.base import Rule, Step


def relaxing(model: nn.Module, rule: str) -> Relaxing:
    if not isinstance(model, Relaxing):
        raise ApicalError(
            f"rule {rule} trains a network that answers by relaxing: convert the model with "
            f"apical.convert(model, {rule!r}, example_input) (got a {type(model).__name__})"
        )
    return model


@dataclass(frozen=True, kw_only=True)
class EquilibriumPropagation(Rule):
    name: ClassVar[str] = "equilibrium_propagation"
    summary: ClassVar[str] = "free and nudged relaxations, contrast of dF/dtheta (Scellier 2017)"
    diagnoses: ClassVar[bool] = True
    form: Literal["primitive", "hopfield"] = "primitive"
    free_steps: Annotated[int, AT_LEAST_ONE] = 30
    nudged_steps: Annotated[int, AT_LEAST_ONE] = 10
    beta: Annotated[float, POSITIVE] = 0.5
    nudging: Literal["symmetric", "positive", "random_sign"] = "symmetric"
    step_size: Annotated[float, POSITIVE] = 0.5
    tol: Annotated[float, POSITIVE] | None = None

    def wrap(self, model: nn.Module) -> nn.Module:
        ep.n_states(layered(model))  # checks the net can relax
        return Relaxing(model, self.answer)

    def answer(self, net: Layered, x: Tensor, track: bool) -> Tensor:
        states, _ = self._settle(net, x, None, None, None, self.free_steps, track)
        return ep.output(net, self.form, x, states)

    def _settle(self, net, x, start, y, beta, steps, track=False):
        return ep.settle(
            net, self.form, x, steps, self.step_size, self.loss, start, y, beta, self.tol, track
        )

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
        n = len(x)
        with torch.no_grad():
            clamped = net.with_input(x)  # stage_1(x), shared by every phase
        free, taken = self._settle(clamped, x, None, None, None, self.free_steps)
        size = torch.full((n,), self.beta, dtype=x.dtype, device=x.device)
        if self.nudging == "symmetric":
            both, _ = self._settle(
                clamped._replace(first=torch.cat([clamped.first, clamped.first])),
                torch.cat([x, x]),
                [torch.cat([s, s]) for s in free],
                torch.cat([y, y]),
                torch.cat([size, -size]),
                self.nudged_steps,
            )
            plus, minus = [s[:n] for s in both], [s[n:] for s in both]
            a, b = (plus, size), (minus, -size)
        else:
            if self.nudging == "random_sign":
                draw = torch.randint(0, 2, (1,), generator=generator, device=x.device)
                size = size * (1 - 2 * draw).to(size)
            plus, _ = self._settle(clamped, x, free, y, size, self.nudged_steps)
            a, b = (plus, size), (free, torch.zeros_like(size))
        grads = ep.contrast(net, self.form, x, self.loss, list(params.values()), y, a, b)
        with torch.no_grad():
            outputs = ep.output(net, self.form, x, free)
        loss = get_loss(self.loss)(outputs, y)
        diagnostics = (
            self._diagnostics(wrapped, net, x, y, free, plus, size, taken) if diagnose else {}
        )
        return Step(
            loss.detach(), outputs, named_directions(params, grads), diagnostics=diagnostics
        )

    def _diagnostics(self, wrapped, net, x, y, free, plus, size, taken):
        names = weight_layer_names(wrapped)
        out = {
            name: {"phase_change": (p - f).pow(2).mean()}
            for name, p, f in zip(names, plus, free, strict=False)
        }
        with torch.no_grad():
            last = out.setdefault(names[-1], {})
            last["free_energy"] = ep.energy(net, self.form, x, free, None, None, self.loss).mean()
            last["nudged_energy"] = ep.energy(net, self.form, x, plus, y, size, self.loss).mean()
            last["free_steps_taken"] = torch.tensor(float(taken))
        return out
