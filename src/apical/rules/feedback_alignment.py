"""Feedback alignment (Lillicrap, Cownden, Tweed & Akerman, Nat. Commun. 7:13276, 2016)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from apical.layers import FeedbackInit, FeedbackLayer, FeedbackSpec, SendBack
from apical.rules.base import Rule, require_feedback


class FixedFeedbackPath:
    """Sends the error down through each layer's stored feedback tensor B."""

    def __init__(self, rule: str) -> None:
        self.rule = rule

    def send_back(self, layer: FeedbackLayer, x: Tensor) -> SendBack:
        return layer.through(require_feedback(layer, self.rule), x)


@dataclass(frozen=True, kw_only=True)
class FeedbackAlignment(Rule):
    """delta_l = f'(a_l) * B_{l+1}^T delta_{l+1} with fixed random B (Lillicrap 2016, Eq. 1
    and Fig. 1: Delta h_FA = B e in place of W^T e); dW_l = delta_l h_{l-1}^T as in backprop.

    B has W's shape and is drawn once by `feedback` (distribution, scale, sparsity).
    Batch reduction: mean (directions of the batch-mean loss).
    """

    name: ClassVar[str] = "fa"
    summary: ClassVar[str] = "feedback alignment: error sent down through fixed random B"
    feedback: FeedbackInit = field(default_factory=FeedbackInit)

    def feedback_spec(self, weight_shape, input_shape, n_outputs) -> FeedbackSpec:
        return FeedbackSpec(self.feedback, weight_shape)

    def path(self, generator) -> FixedFeedbackPath:
        return FixedFeedbackPath(self.name)

    def feedback_matrix(self, layer, generator=None) -> Tensor | None:
        return layer.feedback
