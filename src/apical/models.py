"""Named architectures, built from plain nn.Linear / nn.Conv2d (apical.convert swaps them)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise

from torch import nn

from apical.errors import ApicalError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ApicalError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(
    input_shape: Sequence[int],
    n_classes: int,
    hidden: Sequence[int] = (500, 500),
    activation: str = "tanh",
) -> nn.Sequential:
    """Flatten, then Linear + activation per hidden size, then a Linear read-out."""
    sizes = [math.prod(input_shape), *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in pairwise(sizes):
        layers += [nn.Linear(a, b), _activation(activation)]
    layers.append(nn.Linear(sizes[-1], n_classes))
    return nn.Sequential(*layers)


def convnet(
    input_shape: Sequence[int],
    n_classes: int,
    channels: Sequence[int] = (32, 64),
    hidden: int = 256,
    activation: str = "relu",
) -> nn.Sequential:
    """A small conv net: per entry of `channels` a 3x3 conv (padding 1) + activation +
    2x2 max-pool, then a hidden Linear layer and the read-out (CIFAR-size by default)."""
    if len(input_shape) != 3:
        raise ApicalError(f"convnet needs image inputs (C, H, W), got shape {tuple(input_shape)}")
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for out in channels:
        layers += [nn.Conv2d(c, out, 3, padding=1), _activation(activation), nn.MaxPool2d(2)]
        c, h, w = out, h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), _activation(activation)]
    layers.append(nn.Linear(hidden, n_classes))
    return nn.Sequential(*layers)


MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "convnet": convnet}


def build_model(name: str, input_shape: Sequence[int], n_classes: int, **options) -> nn.Module:
    if name not in MODELS:
        raise ApicalError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    try:
        return MODELS[name](input_shape, n_classes, **options)
    except TypeError as e:
        raise ApicalError(f"bad option for model {name!r}: {e}") from None
