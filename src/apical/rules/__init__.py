"""The one registry of learning rules: a plain dict from name to rule class."""

from __future__ import annotations

import dataclasses
from typing import Any

from apical.errors import ApicalError
from apical.layers import FeedbackInit, FeedbackSpec
from apical.rules.backprop import Backprop
from apical.rules.base import Rule, Step
from apical.rules.burstprop import Burstprop
from apical.rules.direct_feedback import DirectFeedbackAlignment
from apical.rules.feedback_alignment import FeedbackAlignment
from apical.rules.kolen_pollack import KolenPollack
from apical.rules.node_perturbation import NodePerturbation
from apical.rules.segregated_dendrites import SegregatedDendrites
from apical.rules.sign_symmetry import SignSymmetry

RULES: dict[str, type[Rule]] = {
    cls.name: cls
    for cls in (
        Backprop,
        FeedbackAlignment,
        DirectFeedbackAlignment,
        SignSymmetry,
        KolenPollack,
        Burstprop,
        NodePerturbation,
        SegregatedDendrites,
    )
}


def make_rule(name: str, **options: Any) -> Rule:
    """Build a rule by registry name; `feedback` may be given as a dict of FeedbackInit fields."""
    if name not in RULES:
        raise ApicalError(f"unknown rule {name!r}; known rules: {', '.join(RULES)}")
    cls = RULES[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ApicalError(
            f"rule {name!r} has no option {', '.join(unknown)}; its options: "
            f"{', '.join(sorted(fields))}"
        )
    if isinstance(options.get("feedback"), dict):
        known = {f.name for f in dataclasses.fields(FeedbackInit)}
        bad = sorted(set(options["feedback"]) - known)
        if bad:
            raise ApicalError(
                f"unknown feedback option {', '.join(bad)}; known: {', '.join(sorted(known))}"
            )
        options = {**options, "feedback": FeedbackInit(**options["feedback"])}
    return cls(**options)


__all__ = ["RULES", "FeedbackSpec", "Rule", "Step", "make_rule"]
