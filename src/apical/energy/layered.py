"""A feed-forward nn.Sequential read as the layered network of the energy-based rules.

The chain is cut after every elementwise activation that follows a weight layer: stage l
holds the modules from the previous cut up to and including weight layer l (pooling and
flattening of the layer below, the convolution or linear map), `activations[l]` the
activation after it (None where there is none: a linear read-out). So the network computes

    u_0 = x,  u_l = stage_l(a_{l-1}(u_{l-1})),  a_0 = identity,  outputs = a_L(u_L),

exactly as the Sequential does, and an energy can address the pre-activations u_l (value
nodes of predictive coding, Hopfield states of equilibrium propagation) or the rates
a_l(u_l) (the discrete-time form and contrastive Hebbian learning) layer by layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor, nn

from apical.errors import ApicalError
from apical.layers import FeedbackLayer
from apical.models import HardSigmoid

ELEMENTWISE = (nn.Tanh, nn.ReLU, nn.Sigmoid, nn.Hardtanh, nn.GELU, nn.LeakyReLU, nn.Identity,
               HardSigmoid)  # fmt: skip
STRUCTURAL = (nn.Flatten, nn.MaxPool2d, nn.AvgPool2d)
WEIGHTS = (nn.Linear, nn.Conv2d, FeedbackLayer)

Activation = Callable[[Tensor], Tensor] | None


def run_stage(module: nn.Module, h: Tensor) -> Tensor:
    """A stage's output, its feedback layers computed directly (`_compute`: what they compute
    outside a rule's backward path, which no energy-based rule installs), so that the
    relaxation traces under torch.compile."""
    if isinstance(module, FeedbackLayer):
        return module._compute(h, module.weight, module.bias)
    if isinstance(module, nn.Sequential):
        for m in module:
            h = run_stage(m, h)
        return h
    return module(h)


class Layered(NamedTuple):
    stages: tuple[nn.Module, ...]
    activations: tuple[Activation, ...]
    first: Tensor | None = None  # stage_1(x) on the clamped input, where computed once

    @property
    def depth(self) -> int:
        return len(self.stages)

    def act(self, k: int, u: Tensor) -> Tensor:
        """a_l(u) for stage index l (0-based); identity where there is no activation."""
        f = self.activations[k]
        return u if f is None else f(u)

    def stage(self, k: int, h: Tensor) -> Tensor:
        """stage_k(h) (0-based k); for k = 0 the stored `first` where there is one."""
        if k == 0 and self.first is not None:
            return self.first
        return run_stage(self.stages[k], h)

    def weight_input(self, k: int, h: Tensor) -> tuple[nn.Module, Tensor] | None:
        """Stage k's weight layer and its input on the stage input `h` (the structural modules
        before it applied), where the weight layer ends the stage (so its output is the
        stage's); None where modules follow it (pooling before the activation)."""
        stage = self.stages[k]
        if not isinstance(stage, nn.Sequential):
            return stage, h
        if not isinstance(stage[-1], WEIGHTS):
            return None
        for m in stage[:-1]:
            h = run_stage(m, h)
        return stage[-1], h

    def with_input(self, x: Tensor) -> Layered:
        """The same net with its first stage's output on `x` computed once (unless it
        already is): the input is clamped during a relaxation, so stage_1(x) is a constant
        of every step. The first layer is the widest of most nets: on 784-500-500-10 it
        holds 392,000 of a relaxation step's 902,000 multiply-accumulates per example (its
        forward product; the other two layers' forward and transposed products)."""
        return self if self.first is not None else self._replace(first=run_stage(self.stages[0], x))

    def feedforward(self, x: Tensor) -> list[Tensor]:
        """The pre-activations u_1..u_L of the ordinary forward pass."""
        us, h = [], x
        for k in range(self.depth):
            us.append(self.stage(k, h))
            h = self.act(k, us[-1])
        return us


def layered(model: nn.Module) -> Layered:
    """Cut `model` (an nn.Sequential of weight layers, elementwise activations, Flatten and
    pooling) into stages; anything else, or two weight layers without an activation between
    them, is refused with the fix."""
    if not isinstance(model, nn.Sequential):
        raise ApicalError(
            f"the energy-based rules need an nn.Sequential, got a {type(model).__name__}"
        )
    stages: list[nn.Module] = []
    activations: list[Activation] = []
    current: list[nn.Module] = []
    has_weight = False
    for name, module in model.named_children():
        if isinstance(module, WEIGHTS):
            if getattr(module, "replicas", None) is not None:
                raise ApicalError(
                    "the energy-based rules do not train replicas (their energies are per "
                    "example and per net): train each seed as its own run"
                )
            if has_weight:
                raise ApicalError(
                    f"module {name!r}: two weight layers with no activation between them; the "
                    "energy-based rules need one weight layer per stage (add an activation)"
                )
            current.append(module)
            has_weight = True
        elif isinstance(module, ELEMENTWISE) and has_weight:
            stages.append(current[0] if len(current) == 1 else nn.Sequential(*current))
            activations.append(module)
            current, has_weight = [], False
        elif isinstance(module, (*STRUCTURAL, *ELEMENTWISE)):
            if isinstance(module, ELEMENTWISE) and not stages:
                raise ApicalError(f"module {name!r}: an activation before the first weight layer")
            current.append(module)
        else:
            raise ApicalError(
                f"module {name!r} is a {type(module).__name__}; the energy-based rules take "
                "weight layers (Linear, Conv2d), elementwise activations, Flatten and pooling"
            )
    if current:
        if not has_weight:
            raise ApicalError("the model ends in modules after its last activation")
        stages.append(current[0] if len(current) == 1 else nn.Sequential(*current))
        activations.append(None)
    if not stages:
        raise ApicalError("the model has no weight layer")
    return Layered(tuple(stages), tuple(activations))
