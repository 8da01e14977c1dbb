"""Independent replicas of one small network, trained side by side in one model.

`replicate(models)` stacks R converted chains of identical structure into one: each
FeedbackLinear holds (R, out, in) weights (and (R, out) biases, (R, ...) feedback and
recurrent tensors) and maps inputs (R, N, in) to (R, N, out) with one batched matrix
product; each FeedbackConv2d holds (R, out, in, kh, kw) kernels and maps (R, N, C, H, W)
to (R, N, out, H', W') as one grouped convolution (the replicas' channels side by side);
pooling runs on the replicas' examples together (`Replicated`). Replica r computes what
models[r] computes alone (fully connected: the same kernels per replica, tested bit for
bit; convolutional: to float rounding, tested), so R seeds or R learning rates of a sweep
share one device and one Python loop. Losses then have one value per replica
(apical.losses) and every direction a rule returns is per replica.

Only nn.Sequential chains of feedback layers, Flatten, max or average pooling and
elementwise activations can be replicated; anything else (BatchNorm, whose statistics
would mix the replicas; residual blocks) is refused.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from apical.errors import ApicalError
from apical.layers import FeedbackConv2d, FeedbackLinear

_ELEMENTWISE = (nn.Sigmoid, nn.ReLU, nn.Tanh, nn.Identity)
_POOLING = (nn.MaxPool2d, nn.AvgPool2d)
_TENSORS = ("weight", "bias", "feedback", "recurrent")


class Replicated(nn.Module):
    """A module without parameters (pooling) applied to the examples of every replica at
    once: (R, N, ...) in, (R, N, ...) out."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.flatten(0, 1)).unflatten(0, x.shape[:2])


def _check(model: nn.Module) -> None:
    hint = (
        "replicas need an nn.Sequential of feedback layers, activations, Flatten and "
        "max or average pooling"
    )
    if type(model) is not nn.Sequential:
        raise ApicalError(f"{hint}; got a {type(model).__name__}")
    for name, module in model.named_children():
        if isinstance(module, FeedbackLinear | FeedbackConv2d) and module.replicas is None:
            continue
        if isinstance(module, _ELEMENTWISE) or type(module) in _POOLING:
            continue
        if isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1:
            continue
        raise ApicalError(f"{hint}; module {name!r} is a {type(module).__name__}")


def replicate(models: list[nn.Module]) -> nn.Sequential:
    """One model holding `models` (converted, same structure) as replicas 0..R-1; it takes
    inputs (R, N, ...) and returns (R, N, C)."""
    if not models:
        raise ApicalError("replicate needs at least one model")
    for m in models:
        _check(m)
    first = models[0]
    stacked = copy.deepcopy(first)
    for name, module in first.named_children():
        others = [m.get_submodule(name) for m in models]
        target = stacked.get_submodule(name)
        if isinstance(module, nn.Flatten):
            setattr(stacked, name, nn.Flatten(2))
            continue
        if type(module) in _POOLING:
            setattr(stacked, name, Replicated(copy.deepcopy(module)))
            continue
        if not isinstance(module, FeedbackLinear | FeedbackConv2d):
            continue
        for t in _TENSORS:
            parts = [getattr(o, t) for o in others]
            if parts[0] is None:
                continue
            if any(p is None or p.shape != parts[0].shape for p in parts):
                raise ApicalError(f"replicas differ in the shape of {name}.{t}")
            data = torch.stack([p.detach() for p in parts])
            if isinstance(parts[0], nn.Parameter):
                setattr(target, t, nn.Parameter(data, requires_grad=parts[0].requires_grad))
            else:
                setattr(target, t, data)  # a registered buffer stays one
    return stacked


def replica(model: nn.Sequential, r: int) -> nn.Sequential:
    """Replica `r` of a replicated model as an ordinary model (copies)."""
    single = copy.deepcopy(model)
    for name, module in single.named_children():
        if isinstance(module, nn.Flatten):
            setattr(single, name, nn.Flatten(1))
        elif isinstance(module, Replicated):
            setattr(single, name, module.module)
        elif isinstance(module, FeedbackLinear | FeedbackConv2d) and module.replicas is not None:
            for t in _TENSORS:
                value = getattr(module, t)
                if value is None:
                    continue
                data = value.detach()[r].clone()
                if isinstance(value, nn.Parameter):
                    setattr(module, t, nn.Parameter(data, requires_grad=value.requires_grad))
                else:
                    setattr(module, t, data)
    return single


def replica_count(model: nn.Module) -> int | None:
    """R for a replicated model, None for an ordinary one."""
    for module in model.modules():
        if isinstance(module, FeedbackLinear | FeedbackConv2d):
            return module.replicas
    return None
