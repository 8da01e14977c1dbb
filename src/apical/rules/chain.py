"""Sequential chains: what burstprop and node perturbation can run on.

A chain is an nn.Sequential (nested ones are flattened) of feedback layers, each followed
by at most one activation (Sigmoid or ReLU), with nn.Flatten allowed anywhere. Anything
else (a residual branch, BatchNorm, pooling) is refused with a clear error, since these
rules need "the layer above" of every layer.

A model that is not a Sequential may describe itself as a chain with a method
`chain(x) -> (stages, input)` (`model_chain`): the active-dendrites network does, its
context gating and kWTA becoming each stage's `gate`, an activation that also gives its
slope f'(v) and the directions of its own parameters from a rule's signal at v.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from apical.errors import ApicalError
from apical.layers import FeedbackLayer

ACTIVATIONS = {nn.Sigmoid: "sigmoid", nn.ReLU: "relu"}


class Gate(Protocol):
    """An activation with parameters of its own (set for one batch, e.g. by its context)."""

    def __call__(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """e = f(v) and the slope f'(v) (with any mask f applies, held fixed)."""
        ...

    def directions(self, signal: Tensor) -> dict[str, Tensor]:
        """Its parameters' directions from `signal`, the rule's stand-in for -dL/dv at the
        last call's v (summed over the batch)."""
        ...


@dataclass
class Stage:
    name: str
    layer: FeedbackLayer
    activation: str | None = None  # "gated" when `gate` is set
    flatten_from: int | None = None  # flatten the input from this dimension on
    gate: Gate | None = None


@dataclass
class Record:
    """One stage's forward values: the layer's input x, pre-activation v, activation e,
    and for a gated stage its slope f'(v)."""

    x: Tensor
    v: Tensor
    e: Tensor
    slope: Tensor | None = None


def model_chain(model: nn.Module, x: Tensor, rule: str) -> tuple[list[Stage], Tensor]:
    """The stages of `model` and the input they take: its own `chain(x)` if it has one,
    else its Sequential chain and x."""
    chain = getattr(model, "chain", None)
    if callable(chain):
        return chain(x)
    return sequential_chain(model, rule), x


def _modules(model: nn.Module, prefix: str = ""):
    for name, child in model.named_children():
        full = f"{prefix}{name}"
        if type(child) is nn.Sequential:
            yield from _modules(child, full + ".")
        else:
            yield full, child


def sequential_chain(model: nn.Module, rule: str) -> list[Stage]:
    """The stages of `model`, or ApicalError naming the first module that does not fit."""
    hint = (
        f"rule {rule!r} needs an nn.Sequential chain of feedback layers, Sigmoid/ReLU "
        "activations and Flatten"
    )
    if type(model) is not nn.Sequential:
        raise ApicalError(f"{hint}; got a {type(model).__name__}")
    stages: list[Stage] = []
    flatten: int | None = None
    for name, module in _modules(model):
        if isinstance(module, FeedbackLayer):
            stages.append(Stage(name, module, flatten_from=flatten))
            flatten = None
        elif type(module) in ACTIVATIONS and stages and stages[-1].activation is None:
            stages[-1].activation = ACTIVATIONS[type(module)]
        elif isinstance(module, nn.Flatten) and module.start_dim in (1, 2) and module.end_dim == -1:
            flatten = module.start_dim  # 2 in replicated models (apical.replicas)
        else:
            raise ApicalError(f"{hint}; module {name!r} is a {type(module).__name__}")
    if not stages:
        raise ApicalError(f"{hint}; the model has no feedback layer")
    if flatten is not None:
        raise ApicalError(f"{hint}; a Flatten after the last layer is not supported")
    return stages


def activate(kind: str | None, v: Tensor) -> Tensor:
    if kind == "sigmoid":
        return torch.sigmoid(v)
    if kind == "relu":
        return torch.relu(v)
    return v


def slope(stage: Stage, record: Record) -> Tensor:
    """f'(v) of a stage's activation at its recorded values."""
    if record.slope is not None:
        return record.slope
    return derivative(stage.activation, record.v, record.e)


def derivative(kind: str | None, v: Tensor, e: Tensor) -> Tensor:
    """f'(v) from v and e = f(v)."""
    if kind == "sigmoid":
        return e * (1 - e)
    if kind == "relu":
        return (v > 0).to(v.dtype)
    return torch.ones_like(v)


def run_chain(stages: list[Stage], x: Tensor, noise: list[Tensor] | None = None) -> list[Record]:
    """Forward pass stage by stage (no autograd); `noise[i]` is added to stage i's v."""
    records = []
    for i, st in enumerate(stages):
        if st.flatten_from is not None:
            x = x.flatten(st.flatten_from)
        v = st.layer._compute(x, st.layer.weight, st.layer.bias)
        if noise is not None:
            v = v + noise[i]
        if st.gate is not None:
            e, fprime = st.gate(v)
            records.append(Record(x, v, e, fprime))
        else:
            e = activate(st.activation, v)
            records.append(Record(x, v, e))
        x = e
    return records


def local_directions(
    stages: list[Stage], records: list[Record], deltas: list[Tensor]
) -> dict[str, Tensor]:
    """Weight and bias directions of every stage from the signal `deltas[i]` at its output
    (d loss / d v_i or its stand-in): delta x^T and delta, summed over the batch."""
    directions = {}
    for st, rec, delta in zip(stages, records, deltas, strict=True):
        has_bias = st.layer.bias is not None
        gw, gb = st.layer._local_grads(delta, rec.x, st.layer.weight, True, has_bias)
        directions[f"{st.name}.weight"] = gw
        if gb is not None:
            directions[f"{st.name}.bias"] = gb
    return directions
