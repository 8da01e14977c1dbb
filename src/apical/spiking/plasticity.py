"""Burst-dependent synaptic plasticity (NN Eq. 1) with the paper code's homeostatic terms
(§4, `AdaptiveEBCPConnection`), one time step for a whole projection.

    dw_ij/dt = eta E~_j [B_i - P-bar_i E_i + h_i (E_i + B_i)] + eta max(0, e_min - r_i) E_j

E_i, B_i: postsynaptic event and burst trains; E~_j: presynaptic event trace (+1 per event,
tau_pre); P-bar_i = B-hat_i / E-hat_i, the ratio of exponential moving averages (tau_avg) of
bursts and events, read before this step's event (1 where undefined or >= 1);
h_i = -(e_i - e_max)/e_i where the event-rate estimate e_i = E-hat_i / tau_avg exceeds
e_max; r_i: rate from a 30-s trace of all postsynaptic spikes (starts at 0.1 Hz). Weights
are clipped to [0, w_max] after each change. A plastic matrix marks absent synapses with
-1 (so no mask is read: the gathers of scattered columns dominate the cost of a step);
`apical.spiking.synapses.deliver` reads them as 0.

`updates` gives the factors of the rows of presynaptic events and the columns of
postsynaptic events/bursts (at most k of each per replica and step), as a pure function
that compiles well; `write` changes those rows and columns in place (copying a dense
(R, N_pre, N_post) matrix every step would dominate the simulation), and on a CPU only
those of actual spikes.

Section numbers (§) refer to docs/models/spiking-burst-ensembles.md.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from apical.spiking.config import BurstRule
from apical.spiking.synapses import Selected


class Traces(NamedTuple):
    """Per-neuron traces the rule reads (every neuron of the network, (R, N))."""

    pre: Tensor  # E~: presynaptic events, tau_pre
    events: Tensor  # E-hat, tau_avg
    bursts: Tensor  # B-hat, tau_avg
    spikes: Tensor  # all spikes, tau_rate


def traces(shape: tuple[int, ...], rule: BurstRule, device: torch.device | str = "cpu") -> Traces:
    def z() -> Tensor:
        return torch.zeros(shape, device=device)

    return Traces(z(), z(), z(), z() + rule.rate0 * rule.tau_rate / 1000.0)


def event_rate(t: Traces, rule: BurstRule) -> Tensor:
    """e_i = E-hat_i / tau_avg in Hz."""
    return t.events * (1000.0 / rule.tau_avg)


def valence(t: Traces, events: Tensor, bursts: Tensor, rule: BurstRule) -> Tensor:
    """The postsynaptic factor of this step: events (-P-bar + h), bursts (1 + h)."""
    p_bar = torch.where(t.events > 0, t.bursts / t.events.clamp(min=1e-12), 1.0).clamp(max=1.0)
    rate = event_rate(t, rule)
    h = torch.where(rate > rule.e_max, -(rate - rule.e_max) / rate.clamp(min=1e-12), 0.0)
    return events * (h - p_bar) + bursts * (1 + h)


def advance(t: Traces, events: Tensor, bursts: Tensor, spikes: Tensor, dt: float,
            rule: BurstRule) -> Traces:  # fmt: skip
    """Add this step's counts, then decay (Auryn's order: traces decay after the step)."""

    def d(tau: float) -> float:
        return math.exp(-dt / tau)

    return Traces(
        t.pre * d(rule.tau_pre),  # already incremented by `pre_events` before the weights
        (t.events + events) * d(rule.tau_avg),
        (t.bursts + bursts) * d(rule.tau_avg),
        (t.spikes + spikes) * d(rule.tau_rate),
    )


def _add_clipped(old: Tensor, delta: Tensor, rule: BurstRule) -> Tensor:
    """old + delta clipped to [0, w_max] where a synapse exists (old >= 0)."""
    return torch.where(old < 0, old, (old + delta).clamp(0.0, rule.w_max))


class Writes(NamedTuple):
    """One step of the rule on a plastic matrix, as factors (`write` applies them): rows of
    the presynaptic events, then columns of the postsynaptic valences."""

    rows: Tensor  # (R, k_pre) presynaptic neurons that transmitted, or padding
    row_counts: Tensor  # (R, k_pre) their events (0 for padding)
    boost: Tensor  # (R, N_post) eta max(0, e_min - r_i): a presynaptic event's change of its row
    cols: Tensor  # (R, k_post) postsynaptic neurons with an event or burst, or padding
    col_valences: Tensor  # (R, k_post) their valence (0 for padding)
    pre_trace: Tensor  # (R, N_pre) eta E~_j


def updates(pre: Selected, post_rate: Tensor, post: Selected, pre_trace: Tensor, eta: float,
            rule: BurstRule) -> Writes:  # fmt: skip
    """One step of the rule on a plastic matrix (pure; `write` applies it).

    Rows (lower homeostasis): each presynaptic event adds eta max(0, e_min - r_i) to its
    outgoing weights. Columns (Eq. 1 at the selected postsynaptic neurons, post.value their
    valence): w_ij += eta valence_i E~_j. Each change is clipped; columns see the rows'
    change first."""
    boost = eta * (rule.e_min - post_rate).clamp(min=0)
    return Writes(pre.index, pre.value, boost, post.index, post.value, eta * pre_trace)


def _slots(value: Tensor, compact: bool) -> tuple[Tensor, Tensor]:
    """(replica, slot) pairs of the selected entries of (R, k) `value` to apply: with
    `compact` the nonzero ones only, else every slot (fixed shapes)."""
    if compact:
        return value.nonzero(as_tuple=True)
    r, k = value.shape
    replica = torch.arange(r, device=value.device).repeat_interleave(k)
    return replica, torch.arange(k, device=value.device).repeat(r)


@torch.compiler.disable  # in-place writes: compiled, each copied the whole matrix
def write(w: Tensor, u: Writes, rule: BurstRule, compact: bool | None = None) -> None:
    """Apply `updates` in place, rows then columns; every other weight is untouched.

    A zero count or valence changes nothing (the weights stay in [0, w_max]), so `compact`
    (the default on a CPU, where finding the nonzero slots costs no device sync) touches
    only the rows and columns of actual spikes: the work follows the spikes, not the
    capacity, most of whose slots are padding. The same values either way."""
    if compact is None:
        compact = w.device.type == "cpu"
    r, n_pre, n_post = w.shape
    rep, slot = _slots(u.row_counts, compact)
    flat = rep * n_pre + u.rows[rep, slot]
    w_rows = w.view(r * n_pre, n_post)
    grown = u.row_counts[rep, slot, None] * u.boost[rep]
    w_rows.index_copy_(0, flat, _add_clipped(w_rows.index_select(0, flat), grown, rule))
    rep, slot = _slots(u.col_valences, compact)
    cols = u.cols[rep, slot]
    delta = u.pre_trace[rep] * u.col_valences[rep, slot, None]
    w[rep, :, cols] = _add_clipped(w[rep, :, cols], delta, rule)
