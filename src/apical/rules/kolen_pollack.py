"""Learned feedback by Kolen–Pollack (Kolen & Pollack 1994; Akrout et al., NeurIPS 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from apical.layers import FeedbackSpec
from apical.rules.base import weight_direction
from apical.rules.feedback_alignment import FeedbackAlignment


@dataclass(frozen=True, kw_only=True)
class KolenPollack(FeedbackAlignment):
    """Feedback alignment whose B learns: Delta B = Delta W (Akrout 2019, Eqs. 7–8, B stored
    with W's shape, i.e. the transposed feedback), both with the same weight decay.

    The direction of B equals the direction of its forward weight, and B sits in W's
    optimizer parameter group, so any torch.optim optimizer gives both the same increment;
    with weight decay lambda, W - B then shrinks by (1 - lr*lambda) per SGD step and B
    converges to W. Set the decay with the optimizer's `weight_decay`; it acts on weights
    and feedback only, not on biases (Akrout 2019), unless `decay_biases`.
    Batch reduction: mean (directions of the batch-mean loss).
    """

    name: ClassVar[str] = "kolen_pollack"
    summary: ClassVar[str] = "learned feedback: B gets W's update plus weight decay (Akrout 2019)"
    decay_biases: bool = False

    @property
    def decays_biases(self) -> bool:
        return self.decay_biases

    def feedback_spec(self, weight_shape, input_shape, n_outputs) -> FeedbackSpec:
        return FeedbackSpec(self.feedback, weight_shape, learn=True)

    def feedback_direction(self, name: str, directions: dict[str, Tensor], param: Tensor) -> Tensor:
        return weight_direction(name, directions)
