"""Sign-concordant feedback (Liao, Leibo & Poggio, AAAI 2016)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from apical.layers import FeedbackLayer, SendBack
from apical.rules.base import Rule


def sign_feedback(
    layer: FeedbackLayer, random_magnitudes: bool, generator: torch.Generator | None
) -> Tensor:
    """B = sign(W), or M * sign(W) with M ~ |N(0, 1)| drawn afresh (one draw per batch)."""
    b = torch.sign(layer.weight.detach())
    if random_magnitudes:
        m = torch.randn(b.shape, generator=generator, device=b.device, dtype=b.dtype)
        b = b * m.abs_()
    return b


class SignPath:
    def __init__(self, random_magnitudes: bool, generator: torch.Generator | None) -> None:
        self.random_magnitudes, self.generator = random_magnitudes, generator

    def send_back(self, layer: FeedbackLayer, x: Tensor) -> SendBack:
        return layer.through(sign_feedback(layer, self.random_magnitudes, self.generator), x)


@dataclass(frozen=True, kw_only=True)
class SignSymmetry(Rule):
    """delta_l = f'(a_l) * B_{l+1}^T delta_{l+1} with B = sign(W) ("uniform sign-concordant
    feedback", Liao 2016) or, with `random_magnitudes`, B = M * sign(W) where M is redrawn
    from |N(0, 1)| for every batch ("batchwise random magnitude sign-concordant feedback").
    Only the signs of W travel backwards. Batch reduction: mean (batch-mean loss).
    """

    name: ClassVar[str] = "sign_symmetry"
    summary: ClassVar[str] = "feedback = sign(W), optionally with random magnitudes (Liao 2016)"
    random_magnitudes: bool = False

    def path(self, generator) -> SignPath:
        return SignPath(self.random_magnitudes, generator)

    def feedback_matrix(self, layer, generator=None) -> Tensor:
        return sign_feedback(layer, self.random_magnitudes, generator)
