"""The rule interface: hyperparameters (a frozen dataclass) plus one pure function.

`rule.directions(model, x, y, generator)` returns the loss, the outputs and an update
direction for every trainable tensor, in PyTorch's sign convention (the change an SGD
optimizer makes is -lr * direction), and changes nothing but the model's running
statistics of an ordinary training forward pass (BatchNorm). The trainer writes the
directions into `.grad` and steps any torch.optim optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from apical.errors import ApicalError
from apical.layers import BackwardPath, FeedbackLayer, FeedbackSpec, backward_path
from apical.losses import get_loss
from apical.params import parameter_roles


@dataclass(frozen=True)
class Step:
    """One evaluation of a rule: detached loss and outputs, a direction per parameter name
    (as in `model.named_parameters()`), increments of buffers that no loss drives (applied
    only by `after_step`, so probes never apply them), and per-layer diagnostics.

    A buffer's increment is either dense (`state_updates`) or a sum of outer products over
    the batch, `a^T b` for `state_factors[name] = (a, b)` of shape (..., batch, features):
    after_step adds those in place without forming the matrix (burstprop's Z)."""

    loss: Tensor
    outputs: Tensor
    directions: dict[str, Tensor]
    state_updates: dict[str, Tensor] = field(default_factory=dict)
    diagnostics: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    state_factors: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)

    def increments(self) -> dict[str, Tensor]:
        """Every buffer increment as a dense tensor (for tests and inspection)."""
        low_rank = {name: a.mT @ b for name, (a, b) in self.state_factors.items()}
        return {**self.state_updates, **low_rank}


@dataclass(frozen=True, kw_only=True)
class Rule:
    """Base of every learning rule. Subclasses set `name`, `summary` and override the hooks."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # A rule with its own model (segregated dendrites) names its class: the trainer builds
    # that model unconverted, and passes per-example random keys to `directions` if keyed.
    model_class: ClassVar[type[nn.Module] | None] = None
    keyed: ClassVar[bool] = False
    loss: str = "cross_entropy"

    def __post_init__(self) -> None:
        get_loss(self.loss)  # validates the name

    # -- hooks ----------------------------------------------------------------------------
    def feedback_spec(
        self, weight_shape: tuple[int, ...], input_shape: tuple[int, ...] | None, n_outputs: int
    ) -> FeedbackSpec | None:
        """The feedback tensor a converted layer gets (None: no feedback tensor)."""
        return None

    def recurrent_spec(self, weight_shape: tuple[int, ...], position: str) -> FeedbackSpec | None:
        """The recurrent (lateral) tensor a converted layer gets (None: none)."""
        return None

    def path(self, generator: torch.Generator | None) -> BackwardPath | None:
        """The backward path installed during the forward pass (None: exact gradients)."""
        return None

    def feedback_matrix(
        self, layer: FeedbackLayer, generator: torch.Generator | None = None
    ) -> Tensor | None:
        """The matrix (W's shape) that carries the error down through `layer` under this rule;
        None where the rule has none of W's shape (for the alignment metrics)."""
        return layer.weight

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: Step) -> None:
        """After the optimizer step: add `step.state_updates` to the model's buffers (the
        state that no loss drives, such as burstprop's recurrent Z). Probes never call it."""
        if step.state_updates:
            buffers = [model.get_buffer(name) for name in step.state_updates]
            torch._foreach_add_(buffers, list(step.state_updates.values()))
        for name, (a, b) in step.state_factors.items():
            buffer = model.get_buffer(name)
            if a.dim() == 2:
                buffer.addmm_(a.mT, b)
            else:
                buffer.baddbmm_(a.mT, b)

    # -- the pure function ----------------------------------------------------------------
    def run(self, model: nn.Module, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Forward pass whose autograd graph carries this rule's backward signals."""
        with backward_path(self.path(generator)):
            return model(x)

    def directions(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator | None = None,
    ) -> Step:
        roles = parameter_roles(model)
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if not params:
            raise ApicalError("the model has no trainable parameter")
        outputs = self.run(model, x, generator)
        loss = get_loss(self.loss)(outputs, y)
        graph = [n for n in params if roles[n].kind != "feedback"]
        grads = torch.autograd.grad(loss.sum(), [params[n] for n in graph], allow_unused=True)
        directions = {
            n: torch.zeros_like(params[n]) if g is None else g
            for n, g in zip(graph, grads, strict=True)
        }
        for n in params:
            if n not in directions:
                directions[n] = self.feedback_direction(n, directions, params[n])
        return Step(loss.detach(), outputs.detach(), directions)

    def feedback_direction(self, name: str, directions: dict[str, Tensor], param: Tensor) -> Tensor:
        """Direction of a learned feedback tensor (zero unless the rule trains feedback)."""
        return torch.zeros_like(param)


def weight_direction(feedback_name: str, directions: dict[str, Tensor]) -> Tensor:
    """The direction of the forward weight that `feedback_name` belongs to, as the same
    tensor (not a copy: a copy costs a pass over every weight per step): learned feedback
    that receives W's increment (Kolen–Pollack; burstprop's learned Y). Whoever changes
    `.grad` in place must change such a shared tensor once (`apical.train.clip_grads`)."""
    return directions[feedback_name.removesuffix("feedback") + "weight"]


def require_feedback(layer: FeedbackLayer, rule: str) -> Tensor:
    if layer.feedback is None:
        raise ApicalError(
            f"a {type(layer).__name__} has no feedback tensor for rule {rule!r}: convert the "
            f"model with apical.convert(model, rule, example_input) for this rule"
        )
    return layer.feedback
