"""Segregated dendrites (Guerguiev, Lillicrap & Richards, eLife 2017) as a rule.

Each step simulates a forward and a target phase of every image of the batch in the
spiking three-compartment network (apical.dendrites) and returns the paper's local updates
(eLife Eqs. 28, 33; module apical.dendrites.learning) as directions -Delta W / eta.
Convention: **batch sums** (B = 1 is the paper's online protocol; with plain SGD at
momentum 0, the hidden and output learning rates are the paper's eta^0 and eta^1).
Random draws are keyed per example (the trainer passes keys from the seed, epoch and
dataset index). The end state of the simulation is carried to the next batch in
`after_step` (the authors' code never resets between training images).

Diagnostics per hidden layer (eLife Figs. 5, 7): `angle`, the mean over examples of the
angle between the hidden update and the update backprop's error would give from the same
simulation (§9); `batch_angle`, the same for the batch-summed updates;
`loss_correlation`, the correlation over examples of the hidden loss ||alpha^t -
alpha^f||^2 with the output loss; for the last hidden layer `eigenvalue`, the largest
eigenvalue of Theorem 1's (I - J_beta J_gamma)^T (I - J_beta J_gamma).

Section numbers (§) refer to docs/models/segregated-dendrites.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from apical.dendrites import learning
from apical.dendrites.dynamics import State
from apical.dendrites.network import SegregatedNet
from apical.rules.base import Rule, Step


@dataclass(frozen=True, kw_only=True)
class SegregatedDendrites(Rule):
    name: ClassVar[str] = "segregated_dendrites"
    summary: ClassVar[str] = "spiking three-compartment neurons, plateau potentials (eLife 2017)"
    model_class: ClassVar[type[nn.Module]] = SegregatedNet
    keyed: ClassVar[bool] = True
    reduction: ClassVar[str] = "sum"
    carries_examples: ClassVar[bool] = True
    probes: ClassVar[str] = "diagnostics"  # its reference is inside the simulation
    loss: str = "mse"

    def directions(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator | None = None,
        keys: Tensor | None = None,
        carry: bool | None = None,
        diagnose: bool = False,
        first: int = 0,
        batch_keys: Tensor | None = None,
    ) -> Step:
        """The batch's local updates; with `diagnose`, also the diagnostics of the module
        docstring (probes ask for them: they cost a training step's worth of arithmetic).
        A distributed process's shard starts at slot `first` of the carried state and is
        simulated as long as its whole batch (`batch_keys`)."""
        net = self.own_model(model)
        if keys is None:
            keys = torch.randint(0, 2**32, (len(x),), generator=generator, device=x.device)
        if carry is None:
            carry = net.config.carry_state
        averages, end = net.present(x, y, keys, carry, first, batch_keys)
        errs = learning.errors(net.config, averages)
        weights, biases = learning.directions(errs, averages)
        directions = {}
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            directions[f"layers.{i}.weight"], directions[f"layers.{i}.bias"] = w, b
        state = {} if end is None or not carry else _named(end)
        rates = net.config.rate_max * torch.sigmoid(averages.soma_f[-1])
        return Step(
            errs.output_loss.mean(),
            rates / net.config.rate_max,
            directions,
            replacements=state,
            diagnostics=self._diagnostics(net, averages, errs) if diagnose else {},
        )

    def _diagnostics(self, net: SegregatedNet, averages, errs) -> dict[str, dict[str, Tensor]]:
        params = net.params()
        reference = learning.backprop_errors(net.config, params, averages)
        out: dict[str, dict[str, Tensor]] = {}
        for i, (ours, theirs) in enumerate(zip(errs.errors[:-1], reference, strict=True)):
            s = averages.basal_f[i]
            row = {
                "angle": learning.row_angles(ours, theirs).nanmean(),
                "batch_angle": learning.row_angles(
                    (ours.T @ s).flatten()[None], (theirs.T @ s).flatten()[None]
                )[0],
                "loss_correlation": learning.correlation(errs.hidden_loss[i], errs.output_loss),
            }
            out[f"layers.{i}"] = row
        if net.config.hidden:
            last = out[f"layers.{len(net.config.hidden) - 1}"]
            last["eigenvalue"] = learning.theorem1_eigenvalue(net.config, params, averages)
        return out

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: Step) -> None:
        net = self.own_model(model)
        if step.replacements:
            net.carried = _unnamed(step.replacements)
        net.sync_feedback()

    def probe_step(self, model, x, y, generator=None) -> Step:
        """The diagnostics on a fixed batch, simulated from rest (the carried training state
        is neither used nor changed)."""
        return self.directions(model, x, y, generator, carry=False, diagnose=True)


def _named(state: State) -> dict[str, Tensor]:
    """The state as replacements, batch on dim 0 (the filters hold it on dim 1)."""
    named = {f"filters.{i}": f.movedim(1, 0) for i, f in enumerate(state.filters)}
    named.update({f"soma.{i}": v for i, v in enumerate(state.soma)})
    return named


def _unnamed(named: dict[str, Tensor]) -> State:
    def part(prefix: str) -> tuple[Tensor, ...]:
        return tuple(v for k, v in named.items() if k.startswith(prefix))

    filters = tuple(f.movedim(0, 1) for f in part("filters."))
    return State(filters, part("soma."))
