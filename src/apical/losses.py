"""Losses shared by all rules. Both are means over the batch: a rule's directions are
gradients (or their stand-ins) of the batch-mean loss unless its docstring says otherwise.

Outputs are (N, C), or (R, N, C) for R independent replicas (apical.replicas); labels are
(N,) or (R, N) (or one-hot / float targets shaped like the outputs). A loss is the mean
over the batch, one value per replica: shape () or (R,). Rules differentiate its sum, so
each replica gets the gradient of its own batch-mean loss.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from apical.errors import ApicalError


def cross_entropy(outputs: Tensor, y: Tensor) -> Tensor:
    """-(1/N) sum_n log softmax(outputs_n)[y_n], integer class labels y."""
    return per_example_loss("cross_entropy", outputs, y).mean(-1)


def mse(outputs: Tensor, y: Tensor) -> Tensor:
    """(1/N) sum_n 1/2 ||outputs_n - t_n||^2, t = one-hot(y) for integer labels, else y."""
    return per_example_loss("mse", outputs, y).mean(-1)


LOSSES = {"cross_entropy": cross_entropy, "mse": mse}


def get_loss(name: str):
    if name not in LOSSES:
        raise ApicalError(f"unknown loss {name!r}; known losses: {', '.join(LOSSES)}")
    return LOSSES[name]


def per_example_loss(name: str, outputs: Tensor, y: Tensor) -> Tensor:
    """The loss of each example, shape (N,) or (R, N)."""
    get_loss(name)  # validates the name
    if outputs.dim() not in (2, 3):
        raise ApicalError(
            f"{name} needs outputs (N, C) or, for replicas, (R, N, C); got {tuple(outputs.shape)}"
        )
    if name == "cross_entropy":
        if y.dtype.is_floating_point or y.shape != outputs.shape[:-1]:
            raise ApicalError(
                f"cross_entropy needs outputs (N, C) and integer labels (N,), got outputs "
                f"{tuple(outputs.shape)} and labels {tuple(y.shape)} of {y.dtype}"
            )
        c = outputs.shape[-1]
        flat = F.cross_entropy(outputs.reshape(-1, c), y.reshape(-1), reduction="none")
        return flat.reshape(y.shape)
    target = y if y.dtype.is_floating_point else F.one_hot(y, outputs.shape[-1]).to(outputs.dtype)
    if target.shape != outputs.shape:
        raise ApicalError(
            f"mse needs targets shaped like the outputs {tuple(outputs.shape)}, "
            f"got {tuple(target.shape)}"
        )
    return 0.5 * (outputs - target).pow(2).sum(-1)
