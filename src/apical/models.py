"""Named architectures, built from plain nn.Linear / nn.Conv2d (apical.convert swaps them)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Annotated, Literal

import torch
from torch import nn

from apical.active_dendrites import active_dendrites
from apical.config import AT_LEAST_ONE, POSITIVE, check_arguments
from apical.dendrites.config import dendrite_config
from apical.dendrites.network import segregated_dendrites
from apical.errors import ApicalError
from apical.microcircuit.config import microcircuit_config
from apical.microcircuit.network import microcircuit

Size = Annotated[int, AT_LEAST_ONE]
Activation = Literal["tanh", "relu", "sigmoid", "hard_sigmoid", "gelu"]
Gain = Annotated[float, POSITIVE]


class HardSigmoid(nn.Module):
    """clamp(x, 0, 1), the hard sigmoid of equilibrium propagation (Scellier & Bengio 2017),
    with derivative 1 on the closed interval [0, 1] (nn.Hardtanh's is 0 at the ends, which
    would keep a state started at 0 there for ever)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "hard_sigmoid": HardSigmoid,
    "gelu": nn.GELU,
}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ApicalError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(
    input_shape: Sequence[int],
    n_classes: int,
    hidden: Sequence[Size] = (500, 500),
    activation: Activation = "tanh",
    output_activation: Activation | None = None,
) -> nn.Sequential:
    """Flatten, then Linear + activation per hidden size, then a Linear read-out (followed
    by `output_activation` if given: output units that are states of an energy-based net)."""
    sizes = [math.prod(input_shape), *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in pairwise(sizes):
        layers += [nn.Linear(a, b), _activation(activation)]
    layers.append(nn.Linear(sizes[-1], n_classes))
    if output_activation is not None:
        layers.append(_activation(output_activation))
    return nn.Sequential(*layers)


def convnet(
    input_shape: Sequence[int],
    n_classes: int,
    channels: Sequence[Size] = (32, 64),
    hidden: Size = 256,
    activation: Activation = "relu",
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


def ep_convnet(
    input_shape: Sequence[int],
    n_classes: int,
    channels: Sequence[Size] = (128, 256, 512, 512),
    activation: Activation = "hard_sigmoid",
) -> nn.Sequential:
    """Laborieux et al. 2021's CIFAR-10 net for equilibrium propagation: per entry of
    `channels` a 3x3 conv (padding 1, the last 0), 2x2 max-pool, then the activation
    (32 -> 16 -> 8 -> 4 -> 1), and a linear read-out."""
    if len(input_shape) != 3:
        raise ApicalError(f"ep_convnet needs image inputs (C, H, W), got {tuple(input_shape)}")
    c = input_shape[0]
    layers: list[nn.Module] = []
    for i, out in enumerate(channels):
        padding = 0 if i == len(channels) - 1 else 1
        layers += [nn.Conv2d(c, out, 3, padding=padding), nn.MaxPool2d(2), _activation(activation)]
        c = out
    layers.append(nn.Flatten())
    layers.append(nn.Linear(_flat_size(layers, input_shape), n_classes))
    return nn.Sequential(*layers)


def _xavier(model: nn.Module, gain: float) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.xavier_normal_(m.weight, gain=gain)
            nn.init.zeros_(m.bias)
    return model


def _conv_stack(
    c: int, spec: Sequence[tuple[int, int, int]], activation: str
) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    for out, k, s in spec:
        layers += [nn.Conv2d(c, out, k, stride=s), _activation(activation)]
        c = out
    return layers, c


def _flat_size(layers: list[nn.Module], input_shape: Sequence[int]) -> int:
    with torch.no_grad():
        return math.prod(nn.Sequential(*layers)(torch.zeros(1, *input_shape)).shape[1:])


def burstprop_mlp(
    input_shape: Sequence[int],
    n_classes: int,
    hidden: Sequence[Size] = (500, 500, 500),
    init_gain: Gain = 1.0,
) -> nn.Sequential:
    """NN 2021 MNIST net (authors' `MNISTNet`): logistic units throughout, 784-500x3-10 by
    default, Xavier-normal weights (gain 1 since June 2021), zero biases."""
    sizes = [math.prod(input_shape), *hidden, n_classes]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in pairwise(sizes):
        layers += [nn.Linear(a, b), nn.Sigmoid()]
    return _xavier(nn.Sequential(*layers), init_gain)


def burstprop_convnet(
    input_shape: Sequence[int],
    n_classes: int,
    channels: Sequence[Size] = (64, 128, 256),
    fc: Size = 1024,
    init_gain: Gain = 3.6,
) -> nn.Sequential:
    """NN 2021 CIFAR-10 net (authors' `CIFAR10ConvNet`): conv k5 s2, conv k5 s2, conv k3
    (no padding, no pooling; 32 -> 14 -> 5 -> 3), FC 2304-1024, read-out; logistic units,
    Xavier-normal gain 3.6. On 28x28 inputs (Fashion-MNIST) the FC input is 256*2*2."""
    if len(input_shape) != 3:
        raise ApicalError(f"burstprop_convnet needs images (C, H, W), got {tuple(input_shape)}")
    kernels = [(5, 2), (5, 2), (3, 1)]
    convs, _ = _conv_stack(
        input_shape[0], [(c, k, s) for c, (k, s) in zip(channels, kernels, strict=True)], "sigmoid"
    )
    flat = _flat_size(convs, input_shape)
    layers = [*convs, nn.Flatten(), nn.Linear(flat, fc), nn.Sigmoid()]
    layers += [nn.Linear(fc, n_classes), nn.Sigmoid()]
    return _xavier(nn.Sequential(*layers), init_gain)


def burstprop_convnet_fa(
    input_shape: Sequence[int], n_classes: int, init_gain: Gain = 3.6
) -> nn.Sequential:
    """The enlarged fixed-feedback CIFAR-10 net (conv 64-256-256, FC 1480), whose 4.43 M
    forward weights match the learned-feedback net's forward plus feedback weights."""
    return burstprop_convnet(input_shape, n_classes, (64, 256, 256), 1480, init_gain)


def burstprop_imagenet(
    input_shape: Sequence[int],
    n_classes: int,
    channels: Sequence[Size] = (48, 48, 96, 96, 192, 192, 384),
) -> nn.Sequential:
    """NN 2021 ImageNet net (authors' `ImageNetConvNet`): seven ReLU conv layers (k9 s4,
    k3 s2, k5, k3 s2, k3, k3 s2, k3; 224 -> 1x1), FC to the classes, softmax read-out (no
    output activation). Kaiming-normal (fan_out) convs, N(0, 0.01) FC, zero biases."""
    kernels = [(9, 4), (3, 2), (5, 1), (3, 2), (3, 1), (3, 2), (3, 1)]
    convs, _ = _conv_stack(
        input_shape[0], [(c, k, s) for c, (k, s) in zip(channels, kernels, strict=True)], "relu"
    )
    model = nn.Sequential(
        *convs, nn.Flatten(), nn.Linear(_flat_size(convs, input_shape), n_classes)
    )
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.zeros_(m.bias)
    return model


def burstprop_imagenet_fa(input_shape: Sequence[int], n_classes: int) -> nn.Sequential:
    """The enlarged fixed-feedback ImageNet net (48-96-96-192-192-384-470 channels)."""
    return burstprop_imagenet(input_shape, n_classes, channels=(48, 96, 96, 192, 192, 384, 470))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "convnet": convnet,
    "burstprop_mlp": burstprop_mlp,
    "burstprop_convnet": burstprop_convnet,
    "burstprop_convnet_fa": burstprop_convnet_fa,
    "burstprop_imagenet": burstprop_imagenet,
    "burstprop_imagenet_fa": burstprop_imagenet_fa,
    "segregated_dendrites": segregated_dendrites,
    "active_dendrites": active_dendrites,
    "microcircuit": microcircuit,
    "ep_convnet": ep_convnet,
}
# models whose options form a config of their own (checked by its builder)
CONFIGS: dict[str, Callable[..., object]] = {
    "segregated_dendrites": dendrite_config,
    "microcircuit": microcircuit_config,
}


def check_model_options(name: str, options: dict) -> None:
    """The options of model `name`: known, of the right type and range (ConfigError)."""
    if name in CONFIGS:
        CONFIGS[name](**options)
    else:
        check_arguments(MODELS[name], options, f"model {name!r} option")


def build_model(name: str, input_shape: Sequence[int], n_classes: int, **options) -> nn.Module:
    if name not in MODELS:
        raise ApicalError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    check_model_options(name, options)
    return MODELS[name](input_shape, n_classes, **options)
