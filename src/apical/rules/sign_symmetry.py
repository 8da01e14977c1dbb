"""Sign-concordant feedback (Liao, Leibo & Poggio, AAAI 2016)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from apical.layers import FeedbackLayer, SendBack
from apical.rules.base import Rule


def sign_feedback(
    layer: FeedbackLayer,
    random_magnitudes: bool,
    generator: torch.Generator | None,
    scaled: bool = True,
) -> Tensor:
    """B = sign(W), or M * sign(W) with M ~ |N(0, 1)| drawn afresh (one draw per batch);
    `scaled`: times the root mean square of W's entries (per replica), so that ‖B‖ = ‖W‖
    (in expectation with random magnitudes, E[M²] = 1)."""
    w = layer.weight.detach()
    b = torch.sign(w)
    if random_magnitudes:
        m = torch.randn(b.shape, generator=generator, device=b.device, dtype=b.dtype)
        b = m.abs_().mul_(b)
    if scaled:  # in place and without a W-sized square: this runs every step
        dims = tuple(range(1 if layer.replicas else 0, w.dim()))
        entries = math.prod(w.shape[d] for d in dims)
        b.mul_(torch.linalg.vector_norm(w, dim=dims, keepdim=True).div_(math.sqrt(entries)))
    return b


class SignPath:
    def __init__(self, rule: SignSymmetry, generator: torch.Generator | None) -> None:
        self.rule, self.generator = rule, generator

    def send_back(self, layer: FeedbackLayer, x: Tensor) -> SendBack:
        return layer.through(self.rule.feedback_matrix(layer, self.generator), x)


@dataclass(frozen=True, kw_only=True)
class SignSymmetry(Rule):
    """delta_l = f'(a_l) * B_{l+1}^T delta_{l+1} with B = sign(W) ("uniform sign-concordant
    feedback", Liao 2016) or, with `random_magnitudes`, B = M * sign(W) where M is redrawn
    from |N(0, 1)| for every batch ("batchwise random magnitude sign-concordant feedback").
    Only the signs of W travel backwards.

    By default (`scaled`) B is multiplied by the root mean square of W's entries, so that
    ‖B‖ = ‖W‖: the unscaled sign(W) has entries of 1 where W's are about 1/√fan_in, which
    makes the signal sent down tens of times larger per layer than backprop's (on a
    784-1024-1024-10 net the first layer's update is about 3,000 times backprop's norm and
    training at a learning rate that suits backprop fails). `scaled = False` is Liao's
    unscaled form. Batch reduction: mean (batch-mean loss).
    """

    name: ClassVar[str] = "sign_symmetry"
    summary: ClassVar[str] = (
        "feedback = sign(W) at W's scale, optionally random magnitudes (Liao 2016)"
    )
    random_magnitudes: bool = False
    scaled: bool = True

    def path(self, generator) -> SignPath:
        return SignPath(self, generator)

    def feedback_matrix(self, layer, generator=None) -> Tensor:
        return sign_feedback(layer, self.random_magnitudes, generator, self.scaled)
