"""Active dendrites with context gating (Iyer, Grewal, Velu, Souza, Forest & Ahmad 2022,
Front. Neurorobot. 16:846219; docs/models/active-dendrites.md).

A hidden unit i has a feed-forward drive a_i = w_i . x + b_i (w_i fixed-sparse) and K
dendritic segments with weights u_ij over a context vector c. The segment with the largest
|u_ij . c| wins, its sign kept ("absmax"; "max": the largest u_ij . c), and gates the unit:
y_i = a_i * sigmoid(d_i*) (§1). k-winners-take-all then keeps the k largest units of the
layer per example and zeroes the rest (§2). Only the winning segment receives a gradient.

The context is constant within a task, so segment responses are computed once per distinct
context in the batch and broadcast (`gate_responses`): a training batch of one task costs
one (U K x C) product instead of N of them. The segments' gradient is sparse (the U
winning rows of each distinct context, each its unit's error times the context), and the
trainer's Adam updates only those rows (`apical.optim`).

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
from apical.layers import Constrained, FeedbackLinear
from apical.rules.chain import Stage

WinnerMode = Literal["absmax", "max"]
Size = Annotated[int, AT_LEAST_ONE]
Fraction = Annotated[float, Range(gt=0, le=1)]
Sparsity = Annotated[float, Range(ge=0, lt=1)]


# -- functional core -----------------------------------------------------------------------
# Segment weights are rows: (U K, C), row u K + j is segment j of unit u, so that the winners
# of a batch can be gathered as rows with a sparse gradient (`gate_responses`).
def segment_responses(segments: Tensor, k: int, context: Tensor) -> Tensor:
    """d_ij = u_ij . c for segment rows (U K, C) and contexts (N, C): (N, U, K)."""
    return (context @ segments.T).reshape(context.shape[0], -1, k)


def winner_index(d: Tensor, mode: WinnerMode = "absmax") -> Tensor:
    """Index of the winning segment over the last axis: the one of largest |d| ("absmax")
    or the largest d ("max"); among equal candidates the first."""
    return (d.abs() if mode == "absmax" else d).argmax(-1)


def winning_response(d: Tensor, mode: WinnerMode = "absmax") -> Tensor:
    """The winning segment's response over the last axis, its sign kept. Gradients reach
    only the winner (a gather)."""
    return d.gather(-1, winner_index(d, mode).unsqueeze(-1)).squeeze(-1)


def distinct_rows(context: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct rows of `context` and, per row, the index of its distinct row. A batch
    of one task (every row the same) is checked for first, as it is the training case."""
    if bool((context == context[:1]).all()):
        return context[:1], torch.zeros(len(context), dtype=torch.long, device=context.device)
    return torch.unique(context, dim=0, return_inverse=True)


def gate_responses(
    segments: Tensor,
    k: int,
    context: Tensor,
    mode: WinnerMode = "absmax",
    cache: bool = True,
    sparse: bool = True,
    kept: KeptResponses | None = None,
) -> Tensor:
    """The winning response per example and unit, (N, U), for segment rows (U K, C).

    With `cache`, responses are computed once per distinct context row and broadcast; when
    a gradient is wanted (`sparse`), the gradient of `segments` is a sparse tensor over the
    D U winning rows of the D distinct contexts (`_Winners`), equal to the dense one, where
    the dense path would write all U K C entries, nearly all zero (`sparse=False`: that
    dense gradient, for dense Adam over every segment as the paper's code has it). `kept`
    keeps the responses to a batch's one context from step to step (`KeptResponses`).
    Without `cache`: the per-example computation (the naive cost; the reference it is
    tested against)."""
    if not cache:
        return winning_response(segment_responses(segments, k, context), mode)
    distinct, inverse = distinct_rows(context)
    if sparse and torch.is_grad_enabled() and segments.requires_grad:
        if kept is not None and len(distinct) == 1:
            responses = kept.responses(segments, distinct).view(1, -1, k)
        else:
            responses = segment_responses(segments.detach(), k, distinct)
        d = _Winners.apply(segments, distinct, responses, mode)
    else:
        d = winning_response(segment_responses(segments, k, distinct), mode)
    return d.expand(len(context), -1) if len(distinct) == 1 else d[inverse]


class _Winners(torch.autograd.Function):
    """The winning responses (D, U) of segment rows (U K, C) under distinct contexts (D, C),
    given every segment's response (D, U, K) computed without a gradient. d_i = u_ij* . c,
    so dL/du_ij* = (dL/dd_i) c: the gradient of the segments is a sparse tensor over the
    winning rows, made from the contexts without gathering those rows (coalesced already
    when D = 1: the rows then increase)."""

    @staticmethod
    def forward(ctx, segments: Tensor, distinct: Tensor, responses: Tensor, mode: WinnerMode):
        index = winner_index(responses, mode)
        k = responses.shape[-1]
        rows = (index + k * torch.arange(index.shape[-1], device=index.device)).flatten()
        ctx.save_for_backward(segments, distinct, rows)
        return responses.gather(-1, index.unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        segments, distinct, rows = ctx.saved_tensors
        grad_segments = grad_context = None
        if ctx.needs_input_grad[0]:
            values = (grad.unsqueeze(-1) * distinct.unsqueeze(1)).flatten(0, 1)  # (D U, C)
            grad_segments = torch.sparse_coo_tensor(
                rows.unsqueeze(0), values, segments.shape,
                is_coalesced=len(distinct) == 1, check_invariants=False,
            )  # fmt: skip
        if ctx.needs_input_grad[1]:  # dL/dc = sum_i dL/dd_i u_ij*
            winners = segments.index_select(0, rows).view(*grad.shape, -1)
            grad_context = (grad.unsqueeze(-1) * winners).sum(1)
        return grad_segments, grad_context, None, None


class KeptResponses:
    """Every segment's response to one context row, (U K,), kept from step to step.

    A task trains under one context, and `SparseRowsAdam` changes only the rows of the
    segments' sparse gradient (it names them in `p.rows_changed`), so after a step only
    those rows' responses are recomputed instead of all U K (at K = 100 the full product
    reads every segment weight at every step). Any other change of the segments (another
    optimizer, a load, an edit in place: their version counter moves without such a
    record), another context or another tensor recomputes them all."""

    def __init__(self) -> None:
        self.context: Tensor | None = None
        self.kept: Tensor | None = None
        self.owner: tuple[int, int] = (0, -1)  # the segments' data_ptr and version

    @torch.no_grad()
    def responses(self, segments: Tensor, context: Tensor) -> Tensor:
        ptr, version = segments.data_ptr(), segments._version
        same = (
            self.kept is not None
            and self.owner[0] == ptr
            and self.context.shape == context.shape
            and torch.equal(self.context, context)
        )
        if same and self.owner[1] == version:
            return self.kept
        changed = getattr(segments, "rows_changed", None)  # SparseRowsAdam's last step
        step = None if changed is None else (changed.before, changed.after)
        if same and step == (self.owner[1], version):  # the step since: its rows only
            rows = changed.rows
            self.kept.index_copy_(0, rows, segments.index_select(0, rows) @ context[0])
        else:
            self.context, self.kept = context.clone(), segments.detach() @ context[0]
        self.owner = (ptr, version)
        return self.kept


def kwta_mask(x: Tensor, k: int) -> Tensor:
    """The k largest entries per example over the last axis (exactly k; ties broken by
    `torch.topk`), as a boolean mask."""
    return torch.zeros_like(x, dtype=torch.bool).scatter_(
        -1, x.topk(k, dim=-1, sorted=False).indices, True
    )


def kwta(x: Tensor, k: int) -> Tensor:
    """k-winners-take-all over the last axis: the k largest entries per example are kept,
    every other is set to 0."""
    return x * kwta_mask(x, k)


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
        sparse_segments: bool = True,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, units)
        self.mode, self.k = mode, None if density is None else max(1, round(density * units))
        self.n_segments, self.sparse = segments, sparse_segments
        self.cache = True  # segment responses once per distinct context (False: per example)
        self.kept = KeptResponses() if sparse_segments else None  # from step to step
        mask = None
        if sparsity > 0:
            # 1 keeps a weight, 0 holds it at zero (in the weight's dtype: the product that
            # restores it is then the cheapest pass over W)
            mask = (torch.rand(units, in_features) >= sparsity).to(self.linear.weight.dtype)
            with torch.no_grad():  # survivors rescaled: each unit's input variance as if dense
                self.linear.weight.mul_(mask / math.sqrt(1 - sparsity))
        self.register_buffer("mask", mask)
        self.segments = None
        if segments is not None:
            bound = 1 / math.sqrt(context_size)
            u = (torch.rand(units * segments, context_size) * 2 - 1) * bound
            self.segments = nn.Parameter(u)  # rows (U K, C): see the functional core

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        if self.k is not None and isinstance(self.linear, FeedbackLinear):
            a = self.linear(x, sparse_grad=True)  # kWTA keeps k units: a sparse backward
        else:
            a = self.linear(x)
        if self.segments is not None:
            d = gate_responses(
                self.segments,
                self.n_segments,
                context,
                self.mode,
                self.cache,
                self.sparse,
                self.kept,
            )
            a = a * torch.sigmoid(d)
        return kwta(a, self.k) if self.k is not None else torch.relu(a)

    @torch.no_grad()
    def constrain_(self) -> None:
        if self.mask is not None:
            self.linear.weight.mul_(self.mask)


class ChainGate:
    """A dendritic layer's gating and kWTA (or ReLU) as the activation of a chain stage
    (apical.rules.chain), for rules that run their own pass (burstprop): with drive v = a,

        e = m * a * sigmoid(d*),   f'(v) = m * sigmoid(d*)   (kWTA mask m held fixed)

    and the winning segments' direction from the rule's signal s, its stand-in for -dL/da
    (docs/models/active-dendrites.md §3):

        dL/dd* = dL/da * a * (1 - sigmoid(d*)),   dL/du_ij* = dL/dd* c   (summed over the batch)
    """

    def __init__(self, layer: DendriticLayer, context: Tensor, name: str) -> None:
        self.layer, self.context, self.name = layer, context, name

    def __call__(self, v: Tensor) -> tuple[Tensor, Tensor]:
        layer = self.layer
        self.v, self.d = v, None
        gate = torch.ones((), dtype=v.dtype, device=v.device)
        if layer.segments is not None:
            with torch.enable_grad():  # the winners' rows, for `directions`
                self.d = gate_responses(layer.segments, layer.n_segments, self.context,
                                        layer.mode, layer.cache, layer.sparse)  # fmt: skip
            gate = torch.sigmoid(self.d.detach())
        self.gate = gate
        y = v * gate
        keep = kwta_mask(y, layer.k) if layer.k is not None else y > 0
        return y * keep, gate * keep

    def directions(self, signal: Tensor) -> dict[str, Tensor]:
        if self.d is None:
            return {}
        grad_d = -signal * self.v * (1 - self.gate)
        (g,) = torch.autograd.grad(self.d, self.layer.segments, grad_d)
        return {f"{self.name}.segments": g}


class ActiveDendritesNet(nn.Module):
    """Input rows [image | context] (flattened); hidden DendriticLayers; a linear read-out
    shared by all tasks (single head)."""

    def __init__(self, context_size: int, layers: Sequence[DendriticLayer], out: nn.Linear):
        super().__init__()
        self.context_size = context_size
        self.hidden = nn.ModuleList(layers)
        self.out = out

    def forward(self, x: Tensor) -> Tensor:
        h, context = self._split(x)
        for layer in self.hidden:
            h = layer(h, context)
        return self.out(h)

    def chain(self, x: Tensor) -> tuple[list[Stage], Tensor]:
        """The network as a chain of stages for rules that run their own pass (burstprop):
        each hidden layer's linear drive gated by `ChainGate`, then the read-out."""
        image, context = self._split(x)
        stages = [
            Stage(
                f"hidden.{i}.linear",
                layer.linear,
                "gated",
                gate=ChainGate(layer, context, f"hidden.{i}"),
            )
            for i, layer in enumerate(self.hidden)
        ]
        return [*stages, Stage("out", self.out)], image

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(1)
        return x[:, : -self.context_size], x[:, -self.context_size :]


@torch.no_grad()
def winning_segments(model: ActiveDendritesNet, contexts: Tensor) -> list[Tensor]:
    """Per dendritic layer, the winning segment of every unit under each context row
    (T, C): (T, U) indices."""
    return [
        winner_index(segment_responses(layer.segments, layer.n_segments, contexts), layer.mode)
        for layer in model.hidden
        if layer.segments is not None
    ]


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
    sparse_segments: bool = True,
) -> ActiveDendritesNet:
    """The paper's network (2 x 2048 units, K segments, kWTA keeping `density` of the units,
    `sparsity` of the feed-forward weights fixed at zero) and its baselines:
    `dendrites=false` is the kWTA-only net, `kwta=false` puts ReLU in place of kWTA
    (dendrites only), and both with `sparsity=0` give a plain ReLU MLP of the image part
    (the context is ignored). `sparse_segments=false` gives the segments a dense gradient
    (and so dense Adam over all of them, the paper's optimizer) instead of the winners'
    rows. Masks and segments are drawn from the global RNG, like the weights (the trainer
    seeds it with the run's seed)."""
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
        sparse_segments=sparse_segments,
    )
    layers = [DendriticLayer(a, b, **options) for a, b in pairwise(sizes)]
    return ActiveDendritesNet(context_size, layers, nn.Linear(sizes[-1], n_classes))
