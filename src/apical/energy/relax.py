"""The relaxation engine shared by the energy-based rules: states, their gradient, the loop.

The state is a list of batched tensors, one per layer. A step maps the whole list to the
next in one go (every layer from the same previous state: one forward pass through each
stage and one backward pass for all of them, via autograd of one scalar), so the cost of a
step is about 2 forward passes whatever the depth.

`relax` runs a fixed number of steps with no host synchronisation inside the loop, or,
given `tol`, stops when no state moved by more than `tol` (a synchronisation per step).
Under `torch.enable_grad` with `track=True` it keeps the graph through every step (to
backpropagate through the relaxation: the reference of equilibrium propagation's theorem);
otherwise each step starts from detached states and the memory stays that of one step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

States = list[Tensor]
StepFn = Callable[[States], States]


def state_gradient(scalar: Callable[[States], Tensor], states: States, track: bool) -> States:
    """d scalar(states) / d states. `track`: keep the graph (create_graph) so that the result
    can itself be differentiated."""
    with torch.enable_grad():
        if not track:
            states = [s.detach().requires_grad_() for s in states]
        else:
            states = [s if s.requires_grad else s.detach().requires_grad_() for s in states]
        return list(torch.autograd.grad(scalar(states), states, create_graph=track))


def slope(f: Callable[[Tensor], Tensor], u: Tensor) -> tuple[Tensor, Tensor]:
    """f(u) and its elementwise derivative f'(u), for an elementwise f. Under torch.compile
    by forward-mode differentiation (torch.func: traceable, and f and f' come out of one
    pass over u); eagerly by autograd, since torch.func's wrappers cost more than the
    arithmetic of a small layer there (both are the same derivative)."""
    if torch.compiler.is_compiling():
        return torch.func.jvp(f, (u,), (torch.ones_like(u),))
    with torch.enable_grad():
        v = u.detach().requires_grad_()
        out = f(v)
        (d,) = torch.autograd.grad(out, v, torch.ones_like(out))
    return out.detach(), d


def gradient(scalar: Callable[[Tensor], Tensor], t: Tensor) -> Tensor:
    """d scalar(t) / dt (not differentiable itself): torch.func under torch.compile,
    autograd eagerly (as `slope`)."""
    if torch.compiler.is_compiling():
        return torch.func.grad(scalar)(t)
    return state_gradient(lambda s: scalar(s[0]), [t], False)[0]


def vjp(f: Callable[[Tensor], Tensor], h: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """f(h) and the map e -> (df/dh)^T e at h (to be applied once), from one forward pass:
    torch.func under torch.compile, autograd eagerly (as `slope`)."""
    if torch.compiler.is_compiling():
        out, pull = torch.func.vjp(f, h)
        return out, lambda e: pull(e)[0]
    with torch.enable_grad():
        v = h.detach().requires_grad_()
        out = f(v)
    return out.detach(), lambda e: torch.autograd.grad(out, v, e)[0]


def relax(step: StepFn, states: States, steps: int, tol: float | None = None) -> tuple[States, int]:
    """Apply `step` `steps` times (or until the largest change is below `tol`); returns the
    final states and the number of steps taken."""
    for t in range(steps):
        new = step(states)
        if tol is not None:
            change = max(float((a - b).abs().max()) for a, b in zip(new, states, strict=True))
            if change < tol:
                return new, t + 1
        states = new
    return states, steps


def per_example(t: Tensor) -> Tensor:
    """Sum over every dimension but the batch's (the first)."""
    return t.flatten(1).sum(1)
