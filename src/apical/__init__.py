"""apical: biologically plausible credit assignment on PyTorch."""

from apical.convert import convert
from apical.errors import ApicalError, ConfigError
from apical.experiments import Report, reproduce
from apical.layers import (
    FeedbackConv2d,
    FeedbackInit,
    FeedbackLinear,
    FeedbackSpec,
    backward_path,
)
from apical.params import param_groups, parameter_roles
from apical.rules import RULES, Rule, Step, make_rule

__all__ = [
    "RULES",
    "ApicalError",
    "ConfigError",
    "FeedbackConv2d",
    "FeedbackInit",
    "FeedbackLinear",
    "FeedbackSpec",
    "Report",
    "Rule",
    "Step",
    "backward_path",
    "convert",
    "make_rule",
    "param_groups",
    "parameter_roles",
    "reproduce",
]
__version__ = "0.1.0"
