"""The rule interface: hyperparameters (a frozen dataclass) plus one pure function.

`rule.directions(model, x, y, generator)` returns the loss, the outputs and an update
direction for every trainable tensor, in PyTorch's sign convention (the change an SGD
optimizer makes is -lr * direction), and changes nothing but the model's running
statistics of an ordinary training forward pass (BatchNorm). The trainer writes the
directions into `.grad` and steps any torch.optim optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from apical.errors import ApicalError
from apical.layers import BackwardPath, FeedbackLayer, FeedbackSpec, backward_path
from apical.losses import get_loss
from apical.params import parameter_roles


class LowRank(NamedTuple):
    """A buffer increment that is a sum of outer products over the batch, a^T b, with a and
    b of shape (..., batch, features): added in place without forming the matrix."""

    a: Tensor
    b: Tensor

    def dense(self) -> Tensor:
        return self.a.mT @ self.b


@dataclass(frozen=True)
class Step:
    """One evaluation of a rule, which changes nothing: the detached loss and outputs, a
    direction per parameter name (as in `model.named_parameters()`), and two kinds of state
    that no loss drives, applied only by `after_step` (so probes never apply them):

    - `increments`: added to buffers (burstprop's recurrent Z), dense or `LowRank`;
    - `replacements`: state set anew, per example with the batch on dim 0 (the simulation
      state segregated dendrites carry from one batch to the next);

    and per-layer `diagnostics`. A rule whose error signals do not travel through autograd
    may give them in `errors` when asked for diagnostics: per layer (module name), the
    per-example signal that stands in for d loss / d u_l at the layer's output u_l, whose
    product with the layer's input makes its weight direction (the probes' `delta_angle`;
    autograd rules' signals are read from the backward pass itself)."""

    loss: Tensor
    outputs: Tensor
    directions: dict[str, Tensor]
    increments: dict[str, Tensor | LowRank] = field(default_factory=dict)
    replacements: dict[str, Tensor] = field(default_factory=dict)
    diagnostics: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    errors: dict[str, Tensor] = field(default_factory=dict)

    def dense_increments(self) -> dict[str, Tensor]:
        """Every increment as a dense tensor (for tests and inspection)."""
        return {k: v.dense() if isinstance(v, LowRank) else v for k, v in self.increments.items()}


@dataclass(frozen=True, kw_only=True)
class Rule:
    """Base of every learning rule. Subclasses set `name`, `summary` and override the hooks."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # A rule with its own model (segregated dendrites) names its class: the trainer builds
    # that model unconverted, and passes per-example random keys to `directions` if keyed.
    model_class: ClassVar[type[nn.Module] | None] = None
    keyed: ClassVar[bool] = False
    # How directions (and buffer increments) reduce over the batch: "mean" or "sum" (a
    # distributed run combines its processes' shards by it: apical.distributed)
    reduction: ClassVar[str] = "mean"
    # Whether state is carried per example from step to step (`Step.replacements`, batch
    # on dim 0). A distributed shard then gets `first`, the slot of x's first example,
    # and (keyed rules) `batch_keys`, the keys of the whole batch
    carries_examples: ClassVar[bool] = False
    # What an alignment probe (apical.metrics.alignment) measures: "backprop", the angle and
    # sign agreement of the rule's directions with the backprop gradient on the probe batch
    # (plus the step's diagnostics); or "diagnostics", the rule's own diagnostics alone (a
    # rule whose reference needs its own simulation: segregated dendrites).
    probes: ClassVar[str] = "backprop"
    # Whether `directions` takes `diagnose=True` (the step's own diagnostics, computed for
    # probes only, as they cost time)
    diagnoses: ClassVar[bool] = False
    loss: str = "cross_entropy"

    def __post_init__(self) -> None:
        get_loss(self.loss)  # validates the name

    def own_model(self, model: nn.Module) -> nn.Module:
        """`model`, checked to be this rule's own model (rules with a `model_class`, whose
        model is registered under the rule's name)."""
        if self.model_class is not None and not isinstance(model, self.model_class):
            raise ApicalError(
                f"rule {self.name} trains the model {self.name} only (got "
                f'{type(model).__name__}); set model = "{self.name}"'
            )
        return model

    # -- hooks ----------------------------------------------------------------------------
    def feedback_spec(
        self, weight_shape: tuple[int, ...], input_shape: tuple[int, ...] | None, n_outputs: int
    ) -> FeedbackSpec | None:
        """The feedback tensor a converted layer gets (None: no feedback tensor)."""
        return None

    def recurrent_spec(self, weight_shape: tuple[int, ...], position: str) -> FeedbackSpec | None:
        """The recurrent (lateral) tensor a converted layer gets (None: none)."""
        return None

    def wrap(self, model: nn.Module) -> nn.Module:
        """The converted model as this rule trains and evaluates it (`apical.convert`'s last
        step): itself, or a shell whose forward pass is the rule's own inference (the free
        relaxation of equilibrium propagation)."""
        return model

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
        """After the optimizer step: add `step.increments` to the model's buffers (the state
        that no loss drives, such as burstprop's recurrent Z). Probes never call it."""
        dense = {k: v for k, v in step.increments.items() if not isinstance(v, LowRank)}
        if dense:
            buffers = [model.get_buffer(name) for name in dense]
            torch._foreach_add_(buffers, list(dense.values()))
        for name, inc in step.increments.items():
            if isinstance(inc, LowRank):
                buffer = model.get_buffer(name)
                if inc.a.dim() == 2:
                    buffer.addmm_(inc.a.mT, inc.b)
                else:
                    buffer.baddbmm_(inc.a.mT, inc.b)

    def probe_step(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Step:
        """The step an alignment probe measures (by default `directions`, with its
        diagnostics where the rule has them); never applied."""
        if self.diagnoses:
            return self.directions(model, x, y, generator, diagnose=True)
        return self.directions(model, x, y, generator)

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

    @property
    def decays_biases(self) -> bool:
        """Whether the optimizer's weight decay applies to biases (`param_groups`)."""
        return True


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
