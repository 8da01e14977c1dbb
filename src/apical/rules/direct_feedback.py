"""Direct feedback alignment (Nøkland, NeurIPS 2016)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from apical.layers import FeedbackInit, FeedbackLayer, FeedbackSpec, SendBack, backward_path
from apical.rules.base import Rule, require_feedback


@dataclass
class _OutputError:
    value: Tensor | None = None


class _CaptureError(torch.autograd.Function):
    """Identity on the model's output; its backward records e = d loss / d output, which
    runs before any layer's backward because the output is downstream of every layer."""

    @staticmethod
    def forward(ctx, outputs, holder):  # type: ignore[override]
        ctx.holder = holder
        return outputs.view_as(outputs)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        ctx.holder.value = grad
        return grad, None


@dataclass
class DirectPath:
    error: _OutputError = field(default_factory=_OutputError)

    def send_back(self, layer: FeedbackLayer, x: Tensor) -> SendBack:
        d = require_feedback(layer, "dfa")

        def project(grad: Tensor) -> Tensor:
            e = self.error.value  # (N, C), or (R, N, C) with D (R, C, prod) for replicas
            return (e.reshape(*e.shape[: d.dim() - 1], -1) @ d).reshape(x.shape)

        return project


@dataclass(frozen=True, kw_only=True)
class DirectFeedbackAlignment(Rule):
    """The output error e = d loss / d y goes straight to every layer's input:
    delta_l = f'(a_l) * D_{l+1}^T e (Nøkland 2016, Eq. 3), so each layer's input receives
    D^T e reshaped to the input's shape (for a conv layer: its input activation map).
    D has shape (n_outputs, prod(input shape)) and is sized by `apical.convert` from an
    example input; for the output layer it is an ordinary FA matrix.
    Batch reduction: mean (e is the gradient of the batch-mean loss).
    """

    name: ClassVar[str] = "dfa"
    summary: ClassVar[str] = "direct feedback alignment: output error projected to every layer"
    feedback: FeedbackInit = field(default_factory=FeedbackInit)

    def feedback_spec(self, weight_shape, input_shape, n_outputs) -> FeedbackSpec | None:
        if input_shape is None:  # a layer the example input never reached
            return None
        return FeedbackSpec(self.feedback, (n_outputs, math.prod(input_shape)))

    def run(self, model: nn.Module, x: Tensor, generator) -> Tensor:
        path = DirectPath()
        with backward_path(path):
            outputs = model(x)
        return _CaptureError.apply(outputs, path.error)

    def feedback_matrix(self, layer, generator=None) -> Tensor | None:
        fb = layer.feedback
        return fb if fb is not None and fb.shape == layer.weight.shape else None
