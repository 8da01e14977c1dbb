"""The one registry of learning rules: a plain dict from name to rule class."""

from __future__ import annotations

from typing import Any

from apical.config import from_dict
from apical.errors import ApicalError
from apical.layers import FeedbackSpec
from apical.rules.backprop import Backprop
from apical.rules.base import Rule, Step
from apical.rules.burstccn import BurstCCN
from apical.rules.burstprop import Burstprop
from apical.rules.contrastive_hebbian import ContrastiveHebbian
from apical.rules.direct_feedback import DirectFeedbackAlignment
from apical.rules.equilibrium_propagation import EquilibriumPropagation
from apical.rules.feedback_alignment import FeedbackAlignment
from apical.rules.kolen_pollack import KolenPollack
from apical.rules.microcircuit import DendriticMicrocircuit
from apical.rules.node_perturbation import NodePerturbation
from apical.rules.predictive_coding import PredictiveCoding
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
        BurstCCN,
        NodePerturbation,
        SegregatedDendrites,
        DendriticMicrocircuit,
        PredictiveCoding,
        EquilibriumPropagation,
        ContrastiveHebbian,
    )
}


def make_rule(name: str, **options: Any) -> Rule:
    """Build a rule by registry name; its options are checked by `apical.config` (unknown
    names, wrong types), and `feedback` may be given as a dict of FeedbackInit fields."""
    if name not in RULES:
        raise ApicalError(f"unknown rule {name!r}; known rules: {', '.join(RULES)}")
    return from_dict(RULES[name], options, f"rule {name!r} option")


__all__ = ["RULES", "FeedbackSpec", "Rule", "Step", "make_rule"]
