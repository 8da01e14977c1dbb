"""Synaptic Intelligence (Zenke, Poole & Ganguli, "Continual learning through synaptic
intelligence", ICML 2017; docs/models/active-dendrites.md §5).

While a task is learned, each parameter k accumulates how much its movement lowered the
loss, the path integral of Eq. 3 taken over the optimizer's steps:

    omega_k <- omega_k - g_k (theta_k(after) - theta_k(before))

with g_k the rule's direction for the task loss (the gradient under backprop; the penalty
below excluded). At the end of the task its importance joins those of the tasks before
(Eq. 5), with Delta_k the parameter's total change over the task and damping xi:

    Omega_k <- Omega_k + omega_k / (Delta_k^2 + xi)

and later tasks learn the loss plus the surrogate of Eq. 4, which holds every parameter
near its value at the end of the task before (theta~) in proportion to its importance:

    L~ = L + c sum_k Omega_k (theta~_k - theta_k)^2
    dL~/d theta_k = dL/d theta_k + 2 c Omega_k (theta_k - theta~_k)

The penalty is local to each synapse, so it applies under every rule of the registry: the
trainer adds its gradient to the rule's direction (`penalty_gradient`) and accumulates the
path from the rule's own direction (`add_path_`).

A direction given as a sparse tensor over rows (the active-dendrite segments) stays sparse:
the penalty is zero on every row that has not moved since the anchor (theta = theta~ there,
as lazy Adam leaves rows without a gradient untouched), so it is added on the rows that
have moved this task or move in this step (`SynapticState.moved`, derived from theta and
theta~ where not yet known), and the path needs those rows only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

Tensors = dict[str, Tensor]


@dataclass(frozen=True)
class SynapticState:
    """Per parameter name: the importance Omega summed over the tasks before, the anchor
    theta~ (the parameters at the end of the task before) and this task's path omega; for a
    parameter with sparse row directions, which rows have moved since the anchor (derived
    from theta and theta~ when first needed, so it is not saved)."""

    importance: Tensors
    anchor: Tensors
    path: Tensors
    moved: Tensors = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, Tensors]:
        return {"importance": self.importance, "anchor": self.anchor, "path": self.path}


def first_task(params: Mapping[str, Tensor]) -> SynapticState:
    """The state at the start of the first task: no importance yet."""
    zeros = {k: torch.zeros_like(p) for k, p in params.items()}
    return SynapticState(
        zeros,
        {k: p.detach().clone() for k, p in params.items()},
        {k: v.clone() for k, v in zeros.items()},
    )


def next_task(state: SynapticState, params: Mapping[str, Tensor], damping: float) -> SynapticState:
    """The state at the start of the next task, from the state at the end of the last one
    and its final parameters (Eq. 5): importances consolidated, anchor moved, path reset."""
    importance = {}
    for k, p in params.items():
        delta = p.detach() - state.anchor[k]
        importance[k] = state.importance[k] + state.path[k] / (delta.square() + damping)
    return SynapticState(
        importance,
        {k: p.detach().clone() for k, p in params.items()},
        {k: torch.zeros_like(p) for k, p in params.items()},
    )


def penalty_gradient(
    state: SynapticState, params: Mapping[str, Tensor], strength: float
) -> Tensors:
    """d/d theta of c sum_k Omega_k (theta~_k - theta_k)^2 (Eq. 4)."""
    return {
        k: 2 * strength * state.importance[k] * (p.detach() - state.anchor[k])
        for k, p in params.items()
    }


@torch.no_grad()
def with_penalty(
    state: SynapticState, name: str, param: Tensor, direction: Tensor, strength: float
) -> Tensor:
    """direction + 2 c Omega (theta - theta~) for one parameter, made in one new tensor; for
    a sparse direction over rows, a sparse tensor over the rows that have moved since the
    anchor or move now (the penalty is zero on every other row)."""
    if not direction.is_sparse:
        out = (param.detach() - state.anchor[name]).mul_(state.importance[name])
        return out.mul_(2 * strength).add_(direction)
    d = direction.coalesce()
    index = d.indices()[0]
    moved = state.moved.get(name)
    if moved is None:
        moved = state.moved[name] = (param.detach() != state.anchor[name]).flatten(1).any(1)
    moved[index] = True  # the rows this step moves
    rows = moved.nonzero().squeeze(1)
    out = param.detach().index_select(0, rows).sub_(state.anchor[name].index_select(0, rows))
    out.mul_(state.importance[name].index_select(0, rows)).mul_(2 * strength)
    out.index_add_(0, torch.searchsorted(rows, index), d.values())
    return torch.sparse_coo_tensor(rows.unsqueeze(0), out, param.shape, is_coalesced=True)


@torch.no_grad()
def before_step(directions: Mapping[str, Tensor], params: Mapping[str, Tensor]) -> Tensors:
    """The parameters before a step, where the path needs them (`add_path_`): the rows of a
    sparse direction, all of a dense one."""
    return {
        k: params[k].detach().index_select(0, g.coalesce().indices()[0])
        if g.is_sparse
        else params[k].detach().clone()
        for k, g in directions.items()
    }


@torch.no_grad()
def add_path_(
    state: SynapticState,
    directions: Mapping[str, Tensor],
    before: dict[str, Tensor],
    params: Mapping[str, Tensor],
) -> None:
    """omega_k -= g_k (theta_k - theta_k(before)) for one step, in place (Eq. 3); `before`
    (from `before_step`) is used up. A sparse g adds only its rows."""
    for k, g in directions.items():
        if g.is_sparse:
            rows = g.coalesce()
            index = rows.indices()[0]
            back = before[k].sub_(params[k].detach().index_select(0, index))
            state.path[k].index_add_(0, index, rows.values() * back)
        else:
            state.path[k].addcmul_(g, before[k].sub_(params[k]))


def from_dict(saved: object, params: Mapping[str, Tensor]) -> SynapticState:
    """A saved state, checked against the parameters it belongs to (ValueError if not)."""
    if not isinstance(saved, dict) or set(saved) != {"importance", "anchor", "path"}:
        raise ValueError("its synaptic-intelligence record is not one")
    for part in saved.values():
        if not isinstance(part, dict) or set(part) != set(params):
            raise ValueError("its synaptic-intelligence record names other parameters")
        for k, v in part.items():
            if not isinstance(v, Tensor) or v.shape != params[k].shape:
                raise ValueError(f"its synaptic-intelligence record of {k} has another shape")
    device = next(iter(params.values())).device
    moved = {name: {k: v.to(device) for k, v in part.items()} for name, part in saved.items()}
    return SynapticState(**moved)
