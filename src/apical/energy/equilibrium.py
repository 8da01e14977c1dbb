"""Equilibrium propagation (Scellier & Bengio 2017, Front Comput Neurosci 11:24) and its
discrete-time form (Ernoult et al. 2019; Laborieux et al. 2021, Front Neurosci 15:633674)
on a layered network (apical.energy.layered). Pure functions of (net, input, states).

States s_1..s_K: one per stage that has an activation; a last stage without one is a
read-out (logits = stage_L(a(s_{L-1})), Laborieux's cross-entropy read-out), else the
output state s_L itself is read. Two energies, each nudged by the loss of the output:

- `hopfield` (Scellier & Bengio Eq. 1 and 7, states are potentials u, rho = a):
      F_beta = sum_l 1/2 ||u_l||^2 - sum_l <rho(u_l), stage_l(rho(u_{l-1}))> + beta loss,
  with u_0 = x (not passed through rho); dynamics u <- u - eps dF/du (their Eq. 8, the
  Euler step eps = 0.5 of their code), projected onto [0, 1] under the hard sigmoid (their
  code clips the states, so that rho(u) = u and 1/2 ||u||^2 = 1/2 ||rho(u)||^2).
- `primitive` (Laborieux Eqs. 3-4, states are rates s): the scalar primitive
      Phi_beta = sum_l <s_l, stage_l(s_{l-1})> - beta loss,   F_beta = -Phi_beta,
  dynamics s_l <- a_l(dPhi/ds_l) for every layer at once.

The update (Scellier & Bengio Eq. 10; Laborieux Eq. 5 with symmetric nudging, Eq. 6) is
the contrast of dF/dtheta between two nudged fixed points:

    direction = [dF_b/dtheta(s^b) - dF_b'/dtheta(s^b')] / (b - b'),

b' = 0 (one-sided; bias O(b)) or b' = -b (symmetric; bias O(b^2)). For the Hopfield energy
it tends to the gradient of the loss at the free fixed point as b -> 0 (their Theorem 1).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from apical.energy.layered import Layered
from apical.energy.relax import States, per_example, relax, state_gradient
from apical.errors import ApicalError
from apical.losses import per_example_loss
from apical.models import HardSigmoid

Form = Literal["primitive", "hopfield"]


def n_states(net: Layered) -> int:
    """States = stages with an activation; only the last stage may lack one (a read-out)."""
    missing = [k for k, a in enumerate(net.activations[:-1]) if a is None]
    if missing:
        raise ApicalError("every hidden stage needs an activation for equilibrium propagation")
    return net.depth if net.activations[-1] is not None else net.depth - 1


def rates(net: Layered, form: Form, states: States) -> States:
    """The rates each state sends on: rho(u) for potentials, the states themselves else."""
    return [net.act(k, s) for k, s in enumerate(states)] if form == "hopfield" else states


def output(net: Layered, form: Form, x: Tensor, states: States) -> Tensor:
    """The network's output: the read-out's logits, or the output state's rate."""
    r = rates(net, form, states)
    if len(states) == net.depth:
        return r[-1]
    return net.stage(net.depth - 1, r[-1] if r else x)


def energy(
    net: Layered,
    form: Form,
    x: Tensor,
    states: States,
    y: Tensor | None,
    beta: Tensor | None,
    loss: str,
) -> Tensor:
    """F_beta per example (the loss term only where y and beta are given)."""
    r = rates(net, form, states)
    below = [x, *r]
    coupling = sum(per_example(r[k] * net.stage(k, below[k])) for k in range(len(states)))
    f = -coupling if states else torch.zeros(len(x), dtype=x.dtype, device=x.device)
    if form == "hopfield":
        f = f + sum(0.5 * per_example(u.pow(2)) for u in states)
    if y is not None and beta is not None:
        f = f + beta * per_example_loss(loss, output(net, form, x, states), y)
    return f


def step_fn(
    net: Layered,
    form: Form,
    x: Tensor,
    y: Tensor | None,
    beta: Tensor | None,
    loss: str,
    eps: float,
    track: bool,
):
    """One step of the dynamics for every layer at once (stage_1(x) computed once)."""
    with torch.set_grad_enabled(track):
        net = net.with_input(x)

    def total(states: States) -> Tensor:
        return energy(net, form, x, states, y, beta, loss).sum()

    def step(states: States) -> States:
        grads = state_gradient(total, states, track)
        if form == "hopfield":
            base = states if track else [s.detach() for s in states]
            new = [s - eps * g for s, g in zip(base, grads, strict=True)]
            return [project(net, k, u) for k, u in enumerate(new)]
        return [net.act(k, -g) for k, g in enumerate(grads)]  # a_l(dPhi/ds_l)

    return step


def project(net: Layered, k: int, u: Tensor) -> Tensor:
    """Potentials under the hard sigmoid are kept in [0, 1], where rho is the identity (a
    projected Euler step, as in Scellier & Bengio's code); others are left as they are."""
    return u.clamp(0.0, 1.0) if isinstance(net.activations[k], HardSigmoid) else u


def zero_states(net: Layered, x: Tensor) -> States:
    """Zero potentials (rates) of every state layer, shaped by a forward pass of one
    example."""
    with torch.no_grad():
        us = net.feedforward(x[:1])[: n_states(net)]
    return [u.new_zeros((len(x), *u.shape[1:])) for u in us]


def settle(
    net: Layered,
    form: Form,
    x: Tensor,
    steps: int,
    eps: float,
    loss: str,
    states: States | None = None,
    y: Tensor | None = None,
    beta: Tensor | None = None,
    tol: float | None = None,
    track: bool = False,
) -> tuple[States, int]:
    """Relax from `states` (zeros if None) under F_beta (F_0 without y, beta)."""
    start = zero_states(net, x) if states is None else states
    return relax(step_fn(net, form, x, y, beta, loss, eps, track), start, steps, tol)


def contrast(
    net: Layered,
    form: Form,
    x: Tensor,
    loss: str,
    params: list[Tensor],
    y: Tensor,
    a: tuple[States, Tensor],
    b: tuple[States, Tensor],
) -> list[Tensor]:
    """[dF_ba/dtheta(s_a) - dF_bb/dtheta(s_b)] / (ba - bb), batch mean, as one evaluation of
    the stacked batch (a's examples, then b's)."""
    (sa, ba), (sb, bb) = a, b
    states = [torch.cat([p.detach(), q.detach()]) for p, q in zip(sa, sb, strict=True)]
    beta, n = torch.cat([ba, bb]), len(x)
    weights = torch.cat([torch.ones_like(ba), -torch.ones_like(bb)]) / ((ba - bb).repeat(2) * n)
    with torch.enable_grad():
        f = energy(net, form, torch.cat([x, x]), states, torch.cat([y, y]), beta, loss)
        return list(torch.autograd.grad((weights * f).sum(), params, allow_unused=True))
