"""The XOR network of NN Fig. 4 (§5) as explicit weights, state and one pure step,
batched over R independent replicas (seeds).

Five ensembles of n stochastic-burst neurons laid out in one (R, 5n) tensor: input1,
input2 | hidden1, hidden2 | output. Projections (each pair drawn independently with
probability p, every weight starting at the same constant; §5):

    inputs  -> hiddens  soma AMPA (plastic, events) and soma GABA (fixed, events)
    hiddens -> output   soma AMPA (plastic, events) and soma GABA (fixed, events)
    output  -> hidden1/2 dendrite AMPA and GABA (fixed, bursts)

Every ensemble has private Poisson background onto soma and dendrite (exc and inh). The
four input->hidden projections are one (2n x 2n) matrix with an independent draw per pair,
which is the same thing; likewise for the others.

Randomness: every draw is keyed on (replica seed, stream, step, neuron) (apical.keyed), so a
replica's spikes do not depend on the others in its batch and a resumed run is exact.
Background spikes are at most one per neuron and step, Bernoulli(rate dt) as Auryn's
`PoissonGroup` delivers them (`background = "poisson"`: Poisson counts, whose variance at
coarse dt is that of the fine-step trains summed over the step); their 0.8-ms delay is
dropped (a private train delayed is the same train).

Section numbers (§) refer to docs/models/spiking-burst-ensembles.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from apical.compiled import compile_loop, compile_step
from apical.errors import ApicalError
from apical.keyed import mix, normal, salts, step_keys, uniform
from apical.spiking import neurons, plasticity
from apical.spiking.config import Background, BurstRule, XorConfig
from apical.spiking.synapses import Selected, background_spikes, deliver, select, select_signed

POPULATIONS = ("input1", "input2", "hidden1", "hidden2", "output")
NOISE_STREAM, CONNECT_STREAM = 1, 2
INITIAL_V_KEY = 42  # the code's fixed seed: initial V_s identical across seeds (quirk 8)


class Weights(NamedTuple):
    ih: Tensor  # (R, 2n, 2n) inputs -> hiddens, excitatory, plastic (-1: no synapse)
    ih_inh: Tensor
    ho: Tensor  # (R, 2n, n) hiddens -> output, excitatory, plastic (-1: no synapse)
    ho_inh: Tensor
    oh_exc: Tensor  # (R, n, 2n) output bursts -> hidden dendrites
    oh_inh: Tensor


class Constants(NamedTuple):
    """Per-neuron constants (5n,): background rate x dt and weight per target, dendritic
    offset currents."""

    noise_mean: Tensor  # (4, 5n) expected background spikes per step
    noise_weight: Tensor  # (4, 5n)
    i_d: Tensor  # (5n,) pA
    salts: Tensor  # (6 * 5n,) of the step's uniforms (keyed.salts)


class State(NamedTuple):
    neurons: neurons.Neurons
    detector: neurons.Detector
    traces: plasticity.Traces
    t: Tensor  # 0-d int64: the step counter every draw is keyed on
    counts: Tensor  # (R, 2, 5) events and bursts per ensemble since the last read
    pending: Tensor  # (R, 5n) events (inputs, hiddens) and bursts (output) waiting a step
    late: Tensor  # (R,) spikes delivered a step late (beyond the transmission capacity)
    deferred: Tensor  # (R, 3n) weight updates of hidden/output spikes waiting a step
    late_updates: Tensor  # (R,) updates applied a step late (beyond the capacity)
    missed: Tensor  # (R,) updates still waiting when the teaching window closed


class Engine(NamedTuple):
    """The step, one call per step, and the loop of many steps in one call
    (`apical.compiled`): both compiled, or both eager."""

    step: Callable[..., State]
    loop: Callable[..., State]


def engine(compile: bool) -> Engine:
    """Compiled, a step is one graph (`advance`, which cannot break: fullgraph) and the
    teaching window's weight writes after it, eager."""
    if not compile:
        return Engine(step, compile_loop(step, False))
    compiled = functools.partial(_written, compile_step(advance, fullgraph=True))
    return Engine(compiled, compile_loop(step, True))


def replica_keys(seeds: tuple[int, ...] | list[int], device: torch.device | str) -> Tensor:
    return mix(torch.tensor([s & 0xFFFFFFFF for s in seeds], device=device, dtype=torch.long))


def _connect(keys: Tensor, stream: int, n_pre: int, n_post: int, p: float) -> Tensor:
    u = uniform(step_keys(keys, CONNECT_STREAM, stream), n_pre * n_post)
    return (u < p).float().view(-1, n_pre, n_post)


def build(cfg: XorConfig, keys: Tensor) -> Weights:
    """Masks drawn per replica (§5) and the initial weights."""
    n = cfg.n
    m = [_connect(keys, s, a, b, cfg.p) for s, (a, b) in
         enumerate([(2 * n, 2 * n)] * 2 + [(2 * n, n)] * 2 + [(n, 2 * n)] * 2)]  # fmt: skip
    half = torch.arange(2 * n, device=keys.device) < n  # hidden1 columns
    fb_exc = torch.where(half, cfg.w_fb_h1[0], cfg.w_fb_h2[0])
    fb_inh = torch.where(half, cfg.w_fb_h1[1], cfg.w_fb_h2[1])
    return Weights(torch.where(m[0] > 0, cfg.w_ff, -1.0), cfg.w_ff_inh * m[1],
                   torch.where(m[2] > 0, cfg.w_ff, -1.0), cfg.w_ff_inh * m[3], fb_exc * m[4],
                   fb_inh * m[5])  # fmt: skip


def constants(cfg: XorConfig, device: torch.device | str) -> Constants:
    def per_neuron(get) -> Tensor:
        groups: list[Background] = [cfg.bg_input] * 2 + [cfg.bg_hidden] * 2 + [cfg.bg_output]
        return torch.tensor([[get(b, target) for b in groups for _ in range(cfg.n)]
                             for target in ("soma_exc", "soma_inh", "dend_exc", "dend_inh")],
                            device=device)  # fmt: skip

    mean = per_neuron(lambda b, t: getattr(b, t)[0] * cfg.dt / 1000.0)
    if mean.max() > 0.7:
        raise ApicalError(
            f"background rate x dt reaches {mean.max():.2f} spikes per step; use a smaller dt"
        )
    weight = per_neuron(lambda b, t: getattr(b, t)[1])
    i_d = [0.0] * 2 * cfg.n + [cfg.i_hidden1_d] * cfg.n + [cfg.i_hidden2_d] * cfg.n
    i_d += [cfg.i_output_d] * cfg.n
    return Constants(mean, weight, torch.tensor(i_d, device=device), salts(30 * cfg.n, device))


def initial_state(cfg: XorConfig, r: int, device: torch.device | str) -> State:
    p, shape = cfg.neuron, (r, 5 * cfg.n)
    v0 = p.e_l + p.v0_sd * normal(mix(torch.tensor([INITIAL_V_KEY], device=device)), 5 * cfg.n)
    return State(
        neurons.rest(p, v0.expand(shape).clone()),
        neurons.detector(shape, device),
        plasticity.traces(shape, cfg.rule, device),
        torch.zeros((), dtype=torch.long, device=device),
        torch.zeros(r, 2, 5, device=device),
        torch.zeros(shape, device=device),
        torch.zeros(r, device=device),
        torch.zeros(r, 3 * cfg.n, device=device),
        torch.zeros(r, device=device),
        torch.zeros(r, device=device),
    )


def step(
    s: State, w: Weights, c: Constants, i_s: Tensor, i_d: Tensor, keys: Tensor,
    cfg: XorConfig, plastic: bool,
) -> State:  # fmt: skip
    """One dt of the whole network (§0): neurons, detection,
    delivery (one-step latency), plasticity when the teacher gate is on (the plastic
    weights written in place), traces.

    i_s, i_d: injected currents (R, 5n) in pA (input patterns; teacher on the output).
    """
    return _written(advance, s, w, c, i_s, i_d, keys, cfg, plastic)


def _written(
    pure: Callable[..., tuple[State, tuple[plasticity.Writes, ...]]], s: State, w: Weights,
    c: Constants, i_s: Tensor, i_d: Tensor, keys: Tensor, cfg: XorConfig, plastic: bool,
) -> State:  # fmt: skip
    """A step of `pure` (`advance`, eager or compiled), its weight changes then written."""
    s, writes = pure(s, w, c, i_s, i_d, keys, cfg, plastic)
    apply(w, writes, cfg.rule)
    return s


def apply(w: Weights, writes: tuple[plasticity.Writes, ...], rule: BurstRule) -> None:
    """The plastic weights' changes of a step, in place (none with plasticity off)."""
    if writes:
        for matrix, u in zip((w.ih, w.ho), writes, strict=True):
            plasticity.write(matrix, u, rule)


def advance(
    s: State, w: Weights, c: Constants, i_s: Tensor, i_d: Tensor, keys: Tensor,
    cfg: XorConfig, plastic: bool,
) -> tuple[State, tuple[plasticity.Writes, ...]]:  # fmt: skip
    """`step` as a pure function: the next state and the plastic weights' changes (input
    to hiddens, hiddens to output; none with plasticity off), which `apply` writes."""
    n, rule, total = cfg.n, cfg.rule, 5 * cfg.n
    u = uniform(step_keys(keys, NOISE_STREAM, s.t), c.salts).view(-1, 6, total)
    bg = background_spikes(u[:, :4], c.noise_mean, cfg.background) * c.noise_weight  # (R, 4, 5n)
    nrn, first, second = neurons.step(s.neurons, cfg.neuron, cfg.dt, i_s, c.i_d + i_d, u[:, 4],
                                      u[:, 5])  # fmt: skip
    spikes = first + second
    det, events, bursts = neurons.classify(
        s.detector, spikes, math.exp(-cfg.dt / rule.burst_window)
    )
    k = cfg.capacity
    send = s.pending + torch.cat([events[:, : 4 * n], bursts[:, 4 * n :]], 1)
    sel_in = select(send[:, : 2 * n], 2 * k)
    sel_hid = select(send[:, 2 * n : 4 * n], 2 * k)
    sel_out = select(send[:, 4 * n :], k)
    pending = torch.cat([sel_in.rest, sel_hid.rest, sel_out.rest], 1)
    z2, z1 = events.new_zeros(events.shape[0], 2 * n), events.new_zeros(events.shape[0], n)
    from_in = deliver(sel_in, [w.ih, w.ih_inh], marked=[True, False])
    from_hid = deliver(sel_hid, [w.ho, w.ho_inh], marked=[True, False])
    from_out = deliver(sel_out, [w.oh_exc, w.oh_inh])
    nrn = nrn._replace(
        g_es=nrn.g_es + bg[:, 0] + torch.cat([z2, from_in[0], from_hid[0]], 1),
        g_is=nrn.g_is + bg[:, 1] + torch.cat([z2, from_in[1], from_hid[1]], 1),
        g_ed=nrn.g_ed + bg[:, 2] + torch.cat([z2, from_out[0], z1], 1),
        g_id=nrn.g_id + bg[:, 3] + torch.cat([z2, from_out[1], z1], 1),
    )
    tr = s.traces._replace(pre=s.traces.pre + events)  # presynaptic events first (item 7)
    writes: tuple[plasticity.Writes, ...] = ()
    if plastic:
        deferred, writes = _learn(tr, events, bursts, sel_in, sel_hid, s.deferred, cfg)
        late_updates, missed = s.late_updates + (deferred != 0).sum(1), s.missed
    else:  # the window closed: what still waits is lost (counted)
        deferred = torch.zeros_like(s.deferred)
        late_updates, missed = s.late_updates, s.missed + (s.deferred != 0).sum(1)
    tr = plasticity.advance(tr, events, bursts, spikes, cfg.dt, rule)
    r = events.shape[0]
    counts = torch.stack([events.view(r, 5, n).sum(2), bursts.view(r, 5, n).sum(2)], 1)
    return State(nrn, det, tr, s.t + 1, s.counts + counts, pending, s.late + pending.sum(1),
                 deferred, late_updates, missed), writes  # fmt: skip


def _learn(tr: plasticity.Traces, events: Tensor, bursts: Tensor, sel_in: Selected,
           sel_hid: Selected, deferred: Tensor,
           cfg: XorConfig) -> tuple[Tensor, tuple[plasticity.Writes, ...]]:  # fmt: skip
    """NN Eq. 1 with homeostasis on the two plastic projections (presynaptic events as
    transmitted this step), as their changes. Postsynaptic updates beyond the capacity per
    step wait a step (applied with the next step's presynaptic trace); returns what waits
    and the changes."""
    n, k, rule = cfg.n, cfg.capacity, cfg.rule
    rate = tr.spikes * (1000.0 / rule.tau_rate)
    hid, out = slice(2 * n, 4 * n), slice(4 * n, 5 * n)
    val = plasticity.valence(tr, events, bursts, rule)[:, 2 * n :] + deferred
    post_hid = select_signed(val[:, : 2 * n], k)
    post_out = select_signed(val[:, 2 * n :], k // 2)
    ih = plasticity.updates(sel_in, rate[:, hid], post_hid, tr.pre[:, : 2 * n], cfg.eta_hidden,
                            rule)  # fmt: skip
    ho = plasticity.updates(sel_hid, rate[:, out], post_out, tr.pre[:, hid], cfg.eta_output, rule)
    return torch.cat([post_hid.rest, post_out.rest], 1), (ih, ho)
