"""The plasticity protocols of NN Fig. 2b-d on point processes (§6), event-driven
and vectorised over conditions x realisations.

Rule (NN Eq. 1 without homeostasis), per synapse:

    dw = eta [b(t) - (B-bar / E-bar) e(t)] E~_pre(t)

e, b: postsynaptic events and bursts (a spike more than 16 ms after the previous one is an
event; the first spike within 16 ms of it is a burst, later ones are ignored); E~_pre:
presynaptic event trace (+1, tau_pre = 50 ms), incremented before the weight at equal
times; E-bar, B-bar: moving averages in Hz (+1/alpha per event/burst, time constant
alpha = 15 s), updated after the weight. Between spikes every trace decays exactly
(exp(-gap/tau); the Python original's Euler steps differ by O(dt/tau)), so the cost is
per spike, not per time step.

Section numbers (§) refer to docs/models/spiking-burst-ensembles.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor

from apical.config import AT_LEAST_ONE, POSITIVE

INF = float("inf")


@dataclass(frozen=True)
class ProtocolRule:
    eta: float = 0.1
    alpha: float = 15.0  # s
    tau_pre: float = 0.050  # s
    burst_window: float = 0.016  # s


def classify(times: Tensor, window: float) -> tuple[Tensor, Tensor]:
    """Event and burst masks of sorted spike times (C, S) (+inf padding)."""
    prev = torch.cat([torch.full_like(times[:, :1], -INF), times[:, :-1]], 1)
    close = (times - prev) <= window
    event = torch.isfinite(times) & ~close
    # burst: the first close spike after an event (scan over spike index)
    burst = torch.zeros_like(event)
    open_ = torch.zeros_like(event[:, 0])
    for i in range(times.shape[1]):
        b = close[:, i] & open_
        burst[:, i] = b
        open_ = torch.where(event[:, i], True, torch.where(close[:, i], False, open_))
    return event, burst


def weight_change(pre: Tensor, post: Tensor, rule: ProtocolRule, e0: float, p0: float) -> Tensor:
    """Summed weight change per row of (C, S) sorted spike-time tensors (s, +inf padded),
    from moving averages E-bar = e0 Hz, P-bar = p0 at time 0."""
    pre_event, _ = classify(pre, rule.burst_window)
    post_event, post_burst = classify(post, rule.burst_window)
    c = pre.shape[0]
    # one stream per row: presynaptic events first at equal times
    times = torch.cat([pre, post], 1)
    kind = torch.cat([pre_event.long(), 2 * post_event.long() + 3 * post_burst.long()], 1)
    order = torch.argsort(times + torch.cat([torch.zeros_like(pre), torch.full_like(post, 1e-12)],
                                            1), dim=1, stable=True)  # fmt: skip
    times, kind = times.gather(1, order), kind.gather(1, order)
    trace = torch.zeros(c, dtype=torch.float64)
    e_bar = torch.full((c,), e0, dtype=torch.float64)
    b_bar = e_bar * p0
    dw = torch.zeros(c, dtype=torch.float64)
    now = torch.zeros(c, dtype=torch.float64)
    for i in range(times.shape[1]):
        t = times[:, i].double()
        live = torch.isfinite(t)
        gap = torch.where(live, t - now, 0.0)
        trace = trace * torch.exp(-gap / rule.tau_pre)
        decay = torch.exp(-gap / rule.alpha)
        e_bar, b_bar, now = e_bar * decay, b_bar * decay, torch.where(live, t, now)
        k = kind[:, i]
        trace = trace + (k == 1)
        is_event, is_burst = k == 2, k == 3
        dw = dw + rule.eta * trace * (is_burst.double() - is_event * (b_bar / e_bar))
        e_bar = e_bar + is_event / rule.alpha
        b_bar = b_bar + is_burst / rule.alpha
    return dw


def _pad(trains: list[Tensor]) -> Tensor:
    s = max(len(t) for t in trains)
    return torch.stack([torch.cat([t, torch.full((s - len(t),), INF)]) for t in trains])


def periodic_pairing(freqs: list[float], pairings: int = 5, epochs: int = 15,
                     gap: float = 10.0, first: float = 0.010) -> Tensor:  # fmt: skip
    """Fig. 2b: pre and post spike together, `pairings` times at f, per epoch of
    pairings/f + 1 s, epochs separated by `gap` seconds (which decays the averages by
    exp(-gap/alpha), as the original multiplies them)."""
    trains = []
    for f in freqs:
        epoch = pairings / f + 1.0 + gap
        one = first + torch.arange(pairings, dtype=torch.float64) / f
        trains.append(torch.cat([one + e * epoch for e in range(epochs)]))
    return _pad(trains)


def renewal(rates: Tensor, duration: float, dead: float, gen: torch.Generator) -> Tensor:
    """Renewal trains (C, S): ISI = dead + Exp with rate r / (1 - dead r), so the mean
    rate is r (Fig. 2c)."""
    lam = rates / (1 - dead * rates)
    n = int((rates.max() * duration * 1.5 + 50).item())
    exp = torch.empty(len(rates), n, dtype=torch.float64).exponential_(generator=gen)
    t = (dead + exp / lam[:, None]).cumsum(1)
    return torch.where(t < duration, t, INF)


def burst_trains(rate: float, p: Tensor, duration: float, gen: torch.Generator) -> Tensor:
    """Fig. 2d: events at intervals 20 ms + Exp (mean rate `rate`), each followed with
    probability p (per row) by a second spike 2 ms + U[0, 10] ms later."""
    events = renewal(torch.full((len(p),), rate, dtype=torch.float64), duration, 0.020, gen)
    second = events + 0.002 + 0.010 * torch.rand(events.shape, generator=gen, dtype=torch.float64)
    keep = torch.rand(events.shape, generator=gen, dtype=torch.float64) < p[:, None]
    second = torch.where(keep & (second < duration), second, INF)
    return torch.sort(torch.cat([events, second], 1), dim=1).values


@dataclass(frozen=True)
class Figure2:
    """The protocols' sizes: random trains per condition and their length (s)."""

    realisations: Annotated[int, AT_LEAST_ONE] = 20
    duration: Annotated[float, POSITIVE] = 100.0


def figure2(realisations: int = 20, duration: float = 100.0) -> dict[str, dict]:
    """The three panels of NN Fig. 2b-d: weight change against the swept quantity (mean
    and s.d. over realisations where the trains are random)."""
    rule = ProtocolRule()
    out: dict[str, dict] = {}
    freqs = torch.logspace(0, 2, 20, dtype=torch.float64).tolist()
    trains = periodic_pairing(freqs)
    out["b"] = {"x": freqs, "dw": weight_change(trains, trains, rule, 5.0, 0.15).tolist()}
    gen = torch.Generator().manual_seed(3)
    rates = torch.linspace(1, 50, 10, dtype=torch.float64)
    rep = rates.repeat_interleave(realisations)
    c = {"x": rates.tolist()}
    pre, post = renewal(rep, duration, 0.002, gen), renewal(rep, duration, 0.002, gen)
    for p0 in (0.3, 0.5):
        dw = weight_change(pre, post, rule, 5.0, p0).view(len(rates), realisations)
        c[f"dw_p{p0}"], c[f"sd_p{p0}"] = dw.mean(1).tolist(), dw.std(1).tolist()
    out["c"] = c
    gen = torch.Generator().manual_seed(2)
    probs = torch.arange(0, 0.46, 0.05, dtype=torch.float64)
    d = {"x": probs.tolist()}
    for er in (5.0, 10.0):
        rep = probs.repeat_interleave(realisations)
        pre, post = burst_trains(er, rep, duration, gen), burst_trains(er, rep, duration, gen)
        dw = weight_change(pre, post, rule, er, 0.2).view(len(probs), realisations)
        d[f"dw_er{er:g}"], d[f"sd_er{er:g}"] = dw.mean(1).tolist(), dw.std(1).tolist()
    out["d"] = d
    out["crossover_c"] = {f"p{p0}": -math.log(1 - p0) / 0.016 for p0 in (0.3, 0.5)}
    return out
