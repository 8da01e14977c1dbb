"""Contrastive Hebbian learning and GeneRec (O'Reilly 1996, Neural Comput 8:895) with the
feedback gain of Xie & Seung (2003, Neural Comput 15:441), on a layered network
(apical.energy.layered). Pure functions of (net, input, states).

States are rates s_1..s_L (the output's activation may be none: a linear output). Each
layer hears the layer below through its stage and the layer above through the transposed
stage, scaled by the feedback gain gamma (Xie & Seung Eq. 2):

    s_l <- a_l(stage_l(s_{l-1}) + gamma J_{l+1}^T s_{l+1}),   s_0 = x,

the fixed-point iteration of the scaled primitive Phi_gamma = sum_l gamma^(l-1)
<s_l, stage_l(s_{l-1})>. Minus phase: the output free, from the feed-forward pass. Plus
phase: the output clamped to the target, from the minus phase's state. Updates (O'Reilly
Eqs. 3 and 6, in PyTorch's sign convention, batch means):

    CHL:      dW_l ~ -c_l [s_l^+ s_{l-1}^+T - s_l^- s_{l-1}^-T]
    GeneRec:  dW_l ~ -c_l (s_l^+ - s_l^-) s_{l-1}^-T

(through the stage: the gradient of <s_l, stage_l(s_{l-1})> in its weights, which is the
outer product for a linear stage). With c_l = gamma^-(L-l) (Xie & Seung's layer-wise
learning rates) and gamma -> 0 both tend to backprop's gradient of 1/2 ||s_L - y||^2 taken
at the output's pre-activation (for a linear output, the squared error itself).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from apical.energy.layered import Layered
from apical.energy.relax import States, per_example, relax, state_gradient

Variant = Literal["chl", "generec"]


def couplings(net: Layered, x: Tensor, states: States) -> list[Tensor]:
    """<s_l, stage_l(s_{l-1})> per layer and example."""
    below = [x, *states]
    return [per_example(s * net.stage(k, below[k])) for k, s in enumerate(states)]


def step_fn(net: Layered, x: Tensor, gamma: float, clamped: Tensor | None, track: bool = False,
            rate: float = 1.0):  # fmt: skip
    """One synchronous step of every layer (the output held at `clamped` if given;
    stage_1(x) computed once): s <- s + rate (a(...) - s), an Euler step of
    ds/dt = -s + a(...); rate 1 is the plain fixed-point iteration, which can oscillate
    between two states with strong feedback."""
    with torch.set_grad_enabled(track):
        net = net.with_input(x)
    gains = [gamma**k for k in range(net.depth)]

    def total(states: States) -> Tensor:
        return sum(g * c.sum() for g, c in zip(gains, couplings(net, x, states), strict=True))

    def step(states: States) -> States:
        grads = state_gradient(total, states, track)
        new = [net.act(k, g / gains[k]) for k, g in enumerate(grads)]
        if rate != 1.0:
            new = [s + rate * (n - s) for s, n in zip(states, new, strict=True)]
        if clamped is not None:
            new[-1] = clamped
        return new

    return step


def target_rates(y: Tensor, like: Tensor) -> Tensor:
    """The clamped output: float targets as given, labels one-hot."""
    return y.to(like.dtype) if y.dtype.is_floating_point else F.one_hot(y, like.shape[-1]).to(like)


def free_phase(
    net: Layered,
    x: Tensor,
    gamma: float,
    steps: int,
    tol: float | None = None,
    track: bool = False,
    rate: float = 1.0,
) -> tuple[States, int]:
    """The minus phase from the feed-forward rates (its output is the network's answer);
    `track` keeps the graph through it (apical.energy.relax)."""
    with torch.set_grad_enabled(track):
        net = net.with_input(x)  # stage_1(x) once: the start and every step use it
        start = [net.act(k, u) for k, u in enumerate(net.feedforward(x))]
    return relax(step_fn(net, x, gamma, None, track, rate), start, steps, tol)


def phases(
    net: Layered,
    x: Tensor,
    y: Tensor,
    gamma: float,
    minus_steps: int,
    plus_steps: int,
    tol: float | None = None,
    rate: float = 1.0,
) -> tuple[States, States, int, int]:
    """The minus (free) and plus (clamped) states and the steps each took."""
    with torch.no_grad():
        net = net.with_input(x)  # shared by both phases
    minus, t_minus = free_phase(net, x, gamma, minus_steps, tol, rate=rate)
    clamped = target_rates(y, minus[-1])
    step = step_fn(net, x, gamma, clamped, rate=rate)
    plus, t_plus = relax(step, [*minus[:-1], clamped], plus_steps, tol)
    return minus, plus, t_minus, t_plus


def directions(
    net: Layered,
    x: Tensor,
    minus: States,
    plus: States,
    params: list[Tensor],
    variant: Variant,
    scales: list[float],
) -> list[Tensor]:
    """The CHL or GeneRec update of every parameter in `params` (batch mean, -Delta W)."""
    minus, plus = [s.detach() for s in minus], [s.detach() for s in plus]
    with torch.enable_grad():
        if variant == "chl":
            terms = [
                p - m
                for p, m in zip(couplings(net, x, plus), couplings(net, x, minus), strict=True)
            ]
        else:
            diff = [p - m for p, m in zip(plus, minus, strict=True)]
            terms = [
                per_example(d * net.stage(k, b))
                for k, (d, b) in enumerate(zip(diff, [x, *minus[:-1]], strict=True))
            ]
        total = -sum(c * t.sum() for c, t in zip(scales, terms, strict=True)) / len(x)
        return list(torch.autograd.grad(total, params, allow_unused=True))
