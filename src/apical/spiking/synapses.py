"""Synaptic transmission: sparse spike delivery through dense weights, and short-term
plasticity (§0, 3).

Spikes are sparse (a 500-neuron ensemble emits a few per 0.1-ms step), so delivery gathers
the weight rows of at most `k` spiking neurons per replica (a fixed-size `topk`, so shapes
never depend on data and nothing syncs with the host) instead of a dense mat-vec over all
presynaptic neurons. Spikes beyond `k` in one step (synchronous volleys, e.g. at the onset
of a simulation) are not dropped: they wait for the next step, and the caller counts them.

Section numbers (§) refer to docs/models/spiking-burst-ensembles.md.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from apical.keyed import poisson


def background_spikes(u: Tensor, mean: Tensor, kind: str) -> Tensor:
    """Private background spikes of one step from uniforms `u`, `mean` = rate x dt per
    entry (config.check_background): "bernoulli" 1 where u < mean (at most one spike, the
    paper code's), "poisson" Poisson counts."""
    return (u < mean).to(mean.dtype) if kind == "bernoulli" else poisson(u, mean)


class Selected(NamedTuple):
    """At most k spiking neurons per replica: their indices and 0/1 values."""

    index: Tensor  # (R, k) distinct neuron indices
    value: Tensor  # (R, k) spike counts there (0 for padding)
    rest: Tensor  # (R, N) spikes that did not fit


def _top(magnitude: Tensor, k: int) -> Tensor:
    """Indices (R, k) of the k largest entries of (R, N) `magnitude` >= 0 per replica;
    the slots left over (fewer than k nonzero entries) take the lowest indices of the zero
    entries, -1 - index ranking them, so that every step's padding reads the same few
    weight rows and columns (cache-resident) instead of arbitrary ones."""
    order = torch.arange(magnitude.shape[1], device=magnitude.device, dtype=magnitude.dtype)
    rank = torch.where(magnitude > 0, magnitude, -1.0 - order)
    return rank.topk(min(k, magnitude.shape[1]), dim=1, sorted=False).indices


def select(spikes: Tensor, k: int) -> Selected:
    """The spiking neurons of (R, N) `spikes` (counts), k slots per replica."""
    index = _top(spikes, k)
    return Selected(index, spikes.gather(1, index), spikes.scatter(1, index, 0.0))


def select_signed(x: Tensor, k: int) -> Selected:
    """The k entries of largest magnitude of (R, N) `x` per replica, with their values."""
    index = _top(x.abs(), k)
    return Selected(index, x.gather(1, index), x.scatter(1, index, 0.0))


def rows(w: Tensor, index: Tensor) -> Tensor:
    """w[r, index[r, j], :] as an (R, k, N_post) tensor (index_select on the flat rows:
    several times faster than advanced indexing on CPU)."""
    r, n_pre, n_post = w.shape
    flat = (torch.arange(r, device=w.device)[:, None] * n_pre + index).reshape(-1)
    return w.reshape(r * n_pre, n_post).index_select(0, flat).view(r, -1, n_post)


def deliver(sel: Selected, ws: list[Tensor], marked: list[bool] | None = None) -> list[Tensor]:
    """Summed weights of the selected presynaptic spikes onto each postsynaptic neuron
    through each matrix of one source: spikes @ w per replica. In a `marked` matrix (a
    plastic one) negative entries are absent synapses and read as 0.

    Eager: a row gather and bmm per matrix. Compiled: one term per selected slot, which
    inductor fuses into one pass over the postsynaptic neurons (2x faster than its kernel
    for the gather and bmm, and than calling ATen's from the graph); the same sum."""
    marked = marked or [False] * len(ws)
    if not torch.compiler.is_compiling():
        v = sel.value.unsqueeze(1)
        return [torch.bmm(v, rows(w, sel.index).clamp(min=0.0) if m else rows(w, sel.index))
                .squeeze(1) for w, m in zip(ws, marked, strict=True)]  # fmt: skip
    r, n_pre = ws[0].shape[:2]
    flat = torch.arange(r, device=sel.index.device)[:, None] * n_pre + sel.index
    out: list[Tensor] = []
    for w, m in zip(ws, marked, strict=True):
        w_rows = w.reshape(r * n_pre, w.shape[2])
        acc = sel.value.new_zeros(r, w.shape[2])
        for j in range(sel.index.shape[1]):
            row = w_rows[flat[:, j]]
            acc = acc + sel.value[:, j, None] * (row.clamp(min=0.0) if m else row)
        out.append(acc)
    return out


class ShortTerm(NamedTuple):
    """Tsodyks-Markram short-term plasticity per presynaptic neuron (§3)."""

    x: Tensor  # available resources, starts at 1
    u: Tensor  # utilisation, starts at u0 (Auryn's 0.01)


def short_term_step(
    s: ShortTerm, spikes: Tensor, dt: float, tau_d: float, tau_f: float, big_u: float
) -> tuple[ShortTerm, Tensor]:
    """Efficacy x u of this step's spikes (values before the update), then at a spike
    x <- x - u x and u <- u + U (1 - u), then relaxation dx/dt = (1 - x)/tau_D,
    du/dt = (U - u)/tau_F over dt (exact exponential; Auryn's Euler differs by O(dt^2))."""
    efficacy = spikes * s.x * s.u
    x = s.x - spikes * s.u * s.x
    u = s.u + spikes * big_u * (1 - s.u)
    ed, ef = math.exp(-dt / tau_d), math.exp(-dt / tau_f)
    return ShortTerm(1 - (1 - x) * ed, big_u + (u - big_u) * ef), efficacy


def short_term_steady(rate: float, tau_d: float, tau_f: float, big_u: float) -> float:
    """Closed-form efficacy x* u* at the spikes of a periodic train at `rate` (Hz):
    u* = U / (1 - (1 - U) E_F), x* = (1 - E_D) / (1 - (1 - u*) E_D), E = exp(-T/tau)."""
    period = 1000.0 / rate
    e_d, e_f = math.exp(-period / tau_d), math.exp(-period / tau_f)
    u = big_u / (1 - (1 - big_u) * e_f)
    x = (1 - e_d) / (1 - (1 - u) * e_d)
    return x * u
