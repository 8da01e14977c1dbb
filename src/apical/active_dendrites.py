"""Active dendrites with context gating (Iyer, Grewal, Velu, Souza, Forest & Ahmad 2022,
Front. Neurorobot. 16:846219; docs/models/active-dendrites.md).

A hidden unit i has a feed-forward drive a_i = w_i . x + b_i (w_i fixed-sparse) and K
dendritic segments with weights u_ij over a context vector c. The segment with the largest
|u_ij . c| wins, its sign kept ("absmax"; "max": the largest u_ij . c), and gates the unit:
y_i = a_i * sigmoid(d_i*) (§1). k-winners-take-all then keeps the k largest units of the
layer per example and zeroes the rest (§2). Only the winning segment receives a gradient.

The context is constant within a task, so segment responses are computed once per distinct
context in the batch and broadcast (`gate_responses`): a training batch of one task costs
one (U K x C) product instead of N of them.

Functional core (`segment_responses`, `winning_response`, `gate_responses`, `kwta`) plus
thin modules; the feed-forward layers are ordinary nn.Linear, so `apical.convert` gives
every rule of the registry its backward path through them, and the gating and kWTA are
elementwise, unit-local factors of the error a rule sends down (§3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from apical.config import AT_LEAST_ONE, Range
from apical.errors import ApicalError
from apical.layers import Constrained

WinnerMode = Literal["absmax", "max"]
Size = Annotated[int, AT_LEAST_ONE]
Fraction = Annotated[float, Range(gt=0, le=1)]
Sparsity = Annotated[float, Range(ge=0, lt=1)]


# -- functional core -----------------------------------------------------------------------
def segment_responses(segments: Tensor, context: Tensor) -> Tensor:
    """d_ij = u_ij . c for segments (U, K, C) and contexts (N, C): (N, U, K)."""
    units, k, c = segments.shape
    return (context @ segments.reshape(units * k, c).T).reshape(-1, units, k)


def winning_response(d: Tensor, mode: WinnerMode = "absmax") -> Tensor:
    """The winning segment's response over the last axis: the one of largest |d| with its
    sign ("absmax") or the largest d ("max"); among equal candidates the first segment.
    Gradients reach only the winner (a gather)."""
    index = (d.abs() if mode == "absmax" else d).argmax(-1, keepdim=True)
    return d.gather(-1, index).squeeze(-1)


def gate_responses(
    segments: Tensor, context: Tensor, mode: WinnerMode = "absmax", cache: bool = True
) -> Tensor:
    """The winning response per example and unit, (N, U). With `cache`, responses are
    computed once per distinct context row and broadcast (equal to the uncached ones)."""
    if not cache:
        return winning_response(segment_responses(segments, context), mode)
    distinct, inverse = torch.unique(context, dim=0, return_inverse=True)
    return winning_response(segment_responses(segments, distinct), mode)[inverse]


def kwta(x: Tensor, k: int) -> Tensor:
    """k-winners-take-all over the last axis: the k largest entries per example are kept,
    every other is set to 0 (exactly k kept; ties broken by `torch.topk`)."""
    keep = torch.zeros_like(x, dtype=torch.bool).scatter_(-1, x.topk(k, dim=-1).indices, True)
    return x * keep


# -- modules ---------------------------------------------------------------------------------
class DendriticLayer(Constrained):
    """Linear drive (with a fixed random sparsity mask), optional dendritic gating by the
    context, then kWTA (density) or ReLU. The mask is re-applied after every optimizer
    step (`constrain_`), as the paper's sparse weights are."""

    def __init__(
        self,
        in_features: int,
        units: int,
        *,
        context_size: int,
        segments: int | None,
        density: float | None,
        sparsity: float,
        mode: WinnerMode,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, units)
        self.mode, self.k = mode, None if density is None else max(1, round(density * units))
        self.cache = True  # segment responses once per distinct context (False: per example)
        mask = None
        if sparsity > 0:
            mask = torch.rand(units, in_features) >= sparsity
            with torch.no_grad():  # survivors rescaled: each unit's input variance as if dense
                self.linear.weight.mul_(mask / math.sqrt(1 - sparsity))
        self.register_buffer("mask", mask)
        self.segments = None
        if segments is not None:
            bound = 1 / math.sqrt(context_size)
            u = (torch.rand(units, segments, context_size) * 2 - 1) * bound
            self.segments = nn.Parameter(u)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        a = self.linear(x)
        if self.segments is not None:
            a = a * torch.sigmoid(gate_responses(self.segments, context, self.mode, self.cache))
        return kwta(a, self.k) if self.k is not None else torch.relu(a)

    @torch.no_grad()
    def constrain_(self) -> None:
        if self.mask is not None:
            self.linear.weight.mul_(self.mask)


class ActiveDendritesNet(nn.Module):
    """Input rows [image | context] (flattened); hidden DendriticLayers; a linear read-out
    shared by all tasks (single head)."""

    def __init__(self, context_size: int, layers: Sequence[DendriticLayer], out: nn.Linear):
        super().__init__()
        self.context_size = context_size
        self.hidden = nn.ModuleList(layers)
        self.out = out

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        h, context = x[:, : -self.context_size], x[:, -self.context_size :]
        for layer in self.hidden:
            h = layer(h, context)
        return self.out(h)


def active_dendrites(
    input_shape: Sequence[int],
    n_classes: int,
    hidden: Sequence[Size] = (2048, 2048),
    context_size: Size = 784,
    segments: Size = 10,
    density: Fraction = 0.05,
    sparsity: Sparsity = 0.5,
    mode: WinnerMode = "absmax",
    dendrites: bool = True,
    kwta: bool = True,
) -> ActiveDendritesNet:
    """The paper's network (2 x 2048 units, K segments, kWTA keeping `density` of the units,
    `sparsity` of the feed-forward weights fixed at zero) and its baselines:
    `dendrites=false` is the kWTA-only net, `kwta=false` puts ReLU in place of kWTA
    (dendrites only), and both with `sparsity=0` give a plain ReLU MLP of the image part
    (the context is ignored). Masks and segments are drawn from the global RNG, like the
    weights (the trainer seeds it with the run's seed)."""
    width = math.prod(input_shape)
    if width <= context_size:
        raise ApicalError(
            f"the inputs have {width} features, not more than context_size {context_size}: "
            "feed [image | context] rows (set task, e.g. --set task=0, for a permuted task "
            "with its prototype as context) or lower context_size"
        )
    sizes = [width - context_size, *hidden]
    options = dict(
        context_size=context_size,
        segments=segments if dendrites else None,
        density=density if kwta else None,
        sparsity=sparsity,
        mode=mode,
    )
    layers = [DendriticLayer(a, b, **options) for a, b in pairwise(sizes)]
    return ActiveDendritesNet(context_size, layers, nn.Linear(sizes[-1], n_classes))
