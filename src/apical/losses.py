"""Losses shared by all rules. Both are means over the batch: a rule's directions are
gradients (or their stand-ins) of the batch-mean loss unless its docstring says otherwise."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from apical.errors import ApicalError


def cross_entropy(outputs: Tensor, y: Tensor) -> Tensor:
    """-(1/N) sum_n log softmax(outputs_n)[y_n], integer class labels y."""
    return per_example_loss("cross_entropy", outputs, y).mean()


def mse(outputs: Tensor, y: Tensor) -> Tensor:
    """(1/N) sum_n 1/2 ||outputs_n - t_n||^2, t = one-hot(y) for integer labels, else y."""
    return per_example_loss("mse", outputs, y).mean()


LOSSES = {"cross_entropy": cross_entropy, "mse": mse}


def get_loss(name: str):
    if name not in LOSSES:
        raise ApicalError(f"unknown loss {name!r}; known losses: {', '.join(LOSSES)}")
    return LOSSES[name]


def per_example_loss(name: str, outputs: Tensor, y: Tensor) -> Tensor:
    """The loss of each example, shape (N,)."""
    get_loss(name)  # validates the name
    if name == "cross_entropy":
        if y.dtype.is_floating_point or outputs.dim() != 2 or y.shape != outputs.shape[:1]:
            raise ApicalError(
                f"cross_entropy needs outputs (N, C) and integer labels (N,), got outputs "
                f"{tuple(outputs.shape)} and labels {tuple(y.shape)} of {y.dtype}"
            )
        return F.cross_entropy(outputs, y, reduction="none")
    target = y if y.dtype.is_floating_point else F.one_hot(y, outputs.shape[-1]).to(outputs.dtype)
    if target.shape != outputs.shape:
        raise ApicalError(
            f"mse needs targets shaped like the outputs {tuple(outputs.shape)}, "
            f"got {tuple(target.shape)}"
        )
    return 0.5 * (outputs - target).pow(2).flatten(1).sum(1)
