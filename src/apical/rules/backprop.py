"""Backpropagation: the exact gradient, the reference every rule is compared with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from apical.rules.base import Rule


@dataclass(frozen=True, kw_only=True)
class Backprop(Rule):
    """Directions = d loss / d theta by autograd, delta_l = f'(a_l) * W_{l+1}^T delta_{l+1}
    (Rumelhart, Hinton & Williams 1986). Batch reduction: mean (the batch-mean loss)."""

    name: ClassVar[str] = "backprop"
    summary: ClassVar[str] = "exact gradient by autograd (the reference)"
