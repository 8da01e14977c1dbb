"""The module shell of a network that answers by relaxing: `Relaxing(net, answer)`.

Equilibrium propagation and contrastive Hebbian learning read their output at the free
fixed point, not from the feed-forward pass; their rules wrap the converted nn.Sequential
in this shell (`Rule.wrap`), whose forward pass is the free phase. Under autograd the
relaxation keeps its graph, so backprop through the shell is backprop through time over
the free phase: the reference the alignment probes compare these rules with.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from apical.energy.layered import WEIGHTS, Layered, layered

Answer = Callable[[Layered, Tensor, bool], Tensor]


class Relaxing(nn.Module):
    """`net`: the nn.Sequential (its parameters, as `net.*`); `answer(layered, x, track)`:
    the output of the free relaxation (`track`: keep the graph)."""

    def __init__(self, net: nn.Sequential, answer: Answer) -> None:
        super().__init__()
        self.net = net
        self.answer = answer

    def forward(self, x: Tensor) -> Tensor:
        return self.answer(layered(self.net), x, torch.is_grad_enabled())


def weight_layer_names(model: nn.Module) -> list[str]:
    """The names of the weight layers in forward order (one per stage): the keys of the
    probes' per-layer rows."""
    return [n for n, m in model.named_modules() if isinstance(m, WEIGHTS)]


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters a rule returns directions for, by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def named_directions(params: dict[str, Tensor], grads: list[Tensor | None]) -> dict[str, Tensor]:
    """Directions by parameter name (zero for a parameter the energy does not reach)."""
    return {n: torch.zeros_like(p) if g is None else g
            for (n, p), g in zip(params.items(), grads, strict=True)}  # fmt: skip
