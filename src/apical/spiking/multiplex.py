"""Multiplexing and credit propagation (NN Fig. 3; §7): two populations of full
two-compartment pyramidal neurons with PV and SOM interneurons, short-term depressing
feedforward and facilitating feedback synapses, batched over R seeds.

Full pyramidal model (§2; Naud & Sprekeler 2018), f(V_d) = sigma((V_d - E_d)/D):

    C_s dV_s/dt = -(C_s/tau_s)(V_s - E_L) + g_s f(V_d) + b_w w_s + I_syn,s + I_inj,s
    C_d dV_d/dt = -(C_d/tau_d)(V_d - E_L) + g_d f(V_d) + a_w w_d + c_d K(t) + I_syn,d + I_inj,d

K: a 2-ms box after each somatic spike (back-propagating action potential); spikes when
V_s crosses a moving threshold (reset, theta += 2 mV, no refractory period). PV and SOM are
AdEx neurons (§2). Every spike is transmitted with its short-term efficacy
x u after 0.8 ms (rounded to whole steps, at least one).

Read-out: population event rate (ER), burst rate (BR) and burst probability BP = BR/ER in
50-ms bins; the figure's four comparisons are reported as Pearson correlations over the
3 s after the burn-in: pyr2 BP with the dendritic input I_d, pyr2 ER with pyr1 ER, pyr1 BP
with pyr2 BR (the top-down signal), pyr1 ER with the somatic input I_s.

Section numbers (§) refer to docs/models/spiking-burst-ensembles.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from apical.compiled import compile_step
from apical.errors import ConfigError
from apical.keyed import mix, normal, step_keys, uniform
from apical.spiking import neurons
from apical.spiking.config import check_background, check_positive
from apical.spiking.raster import Recorder
from apical.spiking.synapses import (
    ShortTerm,
    background_spikes,
    deliver,
    select,
    short_term_step,
)

RASTER_NEURONS = 50  # per pyramidal population, first seed
STD = (20.0, 1000.0, 0.9)  # tau_D, tau_F (ms), U: depressing
STF = (100.0, 100.0, 0.02)  # facilitating


@dataclass(frozen=True)
class MultiplexConfig:
    n_pyr: int = 4000
    n_pv: int = 1000
    n_som: int = 1000
    p: float = 0.05
    dt: float = 0.1
    duration: float = 4000.0
    burn_in: float = 1000.0  # sine inputs off
    bin: float = 50.0
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    delay: float = 0.8
    # full pyramidal neuron (1.1)
    c_s: float = 370.0
    tau_s: float = 16.0
    c_d: float = 170.0
    tau_d: float = 7.0
    e_l: float = -70.0
    e_inh: float = -80.0
    theta0: float = -50.0
    dtheta: float = 2.0
    tau_theta: float = 27.0
    g_s: float = 1300.0
    g_d: float = 1200.0
    b_w: float = -200.0
    tau_ws: float = 100.0
    a_w: float = -13.0
    tau_wd: float = 30.0
    c_bap: float = 2600.0
    bap: float = 2.0
    e_d: float = -38.0
    slope_d: float = 6.0
    # weights (units of the target's leak conductance)
    w_12: float = 0.05  # pyr1 -> pyr2 soma, STD
    w_1pv: float = 0.05  # pyr1 -> PV, STD
    w_pv2: float = 0.07  # PV -> pyr2 soma GABA
    w_21: float = 0.37  # pyr2 -> pyr1 dendrite, STF
    w_2som: float = 0.3  # pyr2 -> SOM, STF
    w_som1: float = 0.035  # SOM -> pyr1 dendrite GABA
    w_rec: float = 0.1  # pyr -> own dendrites GABA, STF
    bg_rate: float = 500.0
    background: str = "bernoulli"  # or "poisson" (config.check_background)
    bg_pyr: tuple[float, float, float, float] = (0.35, 0.35, 0.05, 0.05)
    bg_som: tuple[float, float] = (0.4, 0.5)
    bg_pv: tuple[float, float] = (0.75, 1.125)
    # currents (pA)
    i_s1_amp: float = 200.0
    i_s1_period: float = 500.0
    i_d1: float = 50.0
    i_s2: float = -100.0
    i_d2_mean: float = 100.0
    i_d2_amp: float = 100.0
    i_d2_period: float = 500.0 * math.sqrt(5)
    i_pv: float = 205.0
    capacity: int | None = None
    compile: bool = True

    def __post_init__(self) -> None:
        check_positive(self, ("n_pyr", "n_pv", "n_som", "dt", "duration", "bin"))
        if self.dt > 0.5:
            raise ConfigError(f"dt = {self.dt} ms: the 2-ms BAP box needs dt <= 0.5")
        check_background(self.background)

    def cap(self, n: int) -> int:
        """Spikes of n neurons transmitted per step: what they emit at 50 Hz (the
        populations fire at 2-13 Hz), at least 16; more wait a step (counted as late)."""
        return self.capacity or max(16, math.ceil(n * 50.0 * self.dt / 1000.0))


class Constants(NamedTuple):
    """Built once on the device (no host-to-device copies in the time loop): AdEx
    parameters per interneuron (PV then SOM, §2), background weights, PV's
    constant current."""

    tau_m: Tensor
    c: Tensor
    delta_t: Tensor
    v_t: Tensor
    a: Tensor  # a / g_L
    b: Tensor  # b / g_L (mV)
    tau_w: Tensor
    v_reset: Tensor
    t_ref: Tensor  # steps
    bg_pyr: Tensor  # (4, 1): soma exc, soma inh, dendrite exc, dendrite inh
    bg_int: Tensor  # (2, n_int): exc, inh
    i_int: Tensor  # (n_int,) pA


class State(NamedTuple):
    v_s: Tensor  # (R, 2 n_pyr): pyr1 then pyr2
    v_d: Tensor
    w_s: Tensor
    w_d: Tensor
    theta: Tensor
    bap: Tensor  # steps of BAP current left
    g: Tensor  # (R, 4, 2 n_pyr): soma exc, soma inh, dend exc, dend inh
    v_i: Tensor  # (R, n_pv + n_som) interneurons
    w_i: Tensor
    ref_i: Tensor
    g_i: Tensor  # (R, 2, n_int)
    std: ShortTerm  # pyr1's depressing synapses
    stf: ShortTerm  # every pyramidal neuron's facilitating synapses
    queue: Tensor  # (D, R, channels, N): efficacies in flight
    detector: neurons.Detector
    t: Tensor
    counts: Tensor  # (R, 2, 2) events, bursts of pyr1, pyr2 since the last read
    pending: Tensor  # (R, 3, N) efficacies beyond the capacity, delivered next step
    late: Tensor  # (R,) spikes delivered a step late


class Weights(NamedTuple):
    w12: Tensor
    w1pv: Tensor
    wpv2: Tensor
    w21: Tensor
    w2som: Tensor
    wsom1: Tensor
    w11: Tensor
    w22: Tensor


def build(cfg: MultiplexConfig, device) -> Weights:
    """One generator per seed draws its replica's connectivity (so a replica does not
    depend on its batch)."""
    n, pv, som = cfg.n_pyr, cfg.n_pv, cfg.n_som
    shapes = [(n, n), (n, pv), (pv, n), (n, n), (n, som), (som, n), (n, n), (n, n)]
    values = [cfg.w_12, cfg.w_1pv, cfg.w_pv2, cfg.w_21, cfg.w_2som, cfg.w_som1, cfg.w_rec,
              cfg.w_rec]  # fmt: skip
    mats = []
    for (a, b), v in zip(shapes, values, strict=True):
        per = []
        for seed in cfg.seeds:
            g = torch.Generator().manual_seed(seed * 1000 + len(mats))
            per.append(v * (torch.rand(a, b, generator=g) < cfg.p).float())
        mats.append(torch.stack(per).to(device))
    return Weights(*mats)


def adex(cfg: MultiplexConfig, device) -> Constants:
    def col(pv: float, som: float) -> Tensor:
        return torch.tensor([pv] * cfg.n_pv + [som] * cfg.n_som, device=device)

    return Constants(col(10.0, 20.0), col(100.0, 100.0), col(2.0, 4.0), col(-48.0, -61.84),
                      col(0.0, 0.1), col(0.0, 2.0), col(5.0, 500.0), col(-55.0, -65.0),
                      col(round(1.0 / cfg.dt), round(2.0 / cfg.dt)),
                      torch.tensor(cfg.bg_pyr, device=device)[:, None],
                      torch.stack([col(cfg.bg_pv[0], cfg.bg_som[0]),
                                   col(cfg.bg_pv[1], cfg.bg_som[1])]),
                      col(cfg.i_pv, 0.0))  # fmt: skip


def initial_state(cfg: MultiplexConfig, device) -> State:
    r, n2, ni = len(cfg.seeds), 2 * cfg.n_pyr, cfg.n_pv + cfg.n_som
    key = mix(torch.tensor([42], device=device))  # the code's fixed initial voltages
    v0 = (cfg.e_l + 5.0 * normal(key, cfg.n_pyr)).repeat(1, 2).expand(r, n2).clone()
    vi = (cfg.e_l + 5.0 * normal(key, ni)).expand(r, ni).clone()

    def z(*shape: int, value: float = 0.0) -> Tensor:
        return torch.full(shape, value, device=device)

    delay = max(1, round(cfg.delay / cfg.dt))
    return State(v0, z(r, n2, value=cfg.e_l), z(r, n2), z(r, n2, value=0.1),
                 z(r, n2, value=cfg.theta0), z(r, n2), z(r, 4, n2), vi, z(r, ni), z(r, ni),
                 z(r, 2, ni), ShortTerm(z(r, cfg.n_pyr, value=1.0), z(r, cfg.n_pyr, value=0.01)),
                 ShortTerm(z(r, n2, value=1.0), z(r, n2, value=0.01)),
                 z(delay, r, 3, n2 + ni), neurons.detector((r, n2), device),
                 torch.zeros((), dtype=torch.long, device=device), z(r, 2, 2),
                 z(r, 3, n2 + ni), z(r))  # fmt: skip


def drives(cfg: MultiplexConfig, t_ms: Tensor) -> tuple[Tensor, Tensor]:
    """The two time-varying inputs at times t (§7): pyr1's somatic current I_s and
    pyr2's dendritic current I_d (pA); the sines start after the burn-in."""
    on = (t_ms >= cfg.burn_in).float()
    i_s = on * cfg.i_s1_amp * torch.sin(2 * math.pi * t_ms / cfg.i_s1_period)
    i_d = cfg.i_d2_mean + on * cfg.i_d2_amp * torch.sin(2 * math.pi * t_ms / cfg.i_d2_period)
    return i_s, i_d


def currents(cfg: MultiplexConfig, t_ms: Tensor) -> tuple[Tensor, Tensor]:
    """Injected somatic and dendritic currents (2 n_pyr,) at time t."""
    i_s1, i_d2 = drives(cfg, t_ms)
    ones = torch.ones(cfg.n_pyr, device=t_ms.device)
    return (torch.cat([ones * i_s1, ones * cfg.i_s2]), torch.cat([ones * cfg.i_d1, ones * i_d2]))


def step(s: State, w: Weights, ap: Constants, keys: Tensor, cfg: MultiplexConfig) -> State:
    dt, n, r = cfg.dt, cfg.n_pyr, s.v_s.shape[0]
    n2, ni = 2 * n, cfg.n_pv + cfg.n_som
    lam = cfg.bg_rate * dt / 1000.0
    u = uniform(step_keys(keys, 1, s.t), 4 * n2 + 2 * ni)
    bg = background_spikes(u, torch.full_like(u, lam), cfg.background)
    bg_p = bg[:, : 4 * n2].view(r, 4, n2) * ap.bg_pyr
    bg_i = bg[:, 4 * n2 :].view(r, 2, ni) * ap.bg_int
    i_s, i_d = currents(cfg, s.t * dt)

    # pyramidal neurons: f and leaks from start-of-step voltages; dendritic synapses use V_s
    f = torch.sigmoid((s.v_d - cfg.e_d) / cfg.slope_d)
    g = s.g
    syn_s = g[:, 0] * (0.0 - s.v_s) + g[:, 1] * (cfg.e_inh - s.v_s)
    syn_d = g[:, 2] * (0.0 - s.v_s) + g[:, 3] * (cfg.e_inh - s.v_s)
    dv_s = (-(s.v_s - cfg.e_l) + syn_s) / cfg.tau_s + (cfg.g_s * f + cfg.b_w * s.w_s) / cfg.c_s
    bap = (s.bap > 0).float()
    dv_d = (-(s.v_d - cfg.e_l) + syn_d) / cfg.tau_d + (
        cfg.g_d * f + cfg.a_w * s.w_d + cfg.c_bap * bap
    ) / cfg.c_d
    v_s = s.v_s + dt * dv_s
    v_d = s.v_d + dt * dv_d
    w_d = s.w_d + dt * ((v_d - cfg.e_l) - s.w_d) / cfg.tau_wd
    theta = s.theta + dt * (cfg.theta0 - s.theta) / cfg.tau_theta
    spike = v_s > theta
    sp = spike.float()
    v_s = torch.where(spike, cfg.e_l, v_s) + dt * i_s / cfg.c_s
    v_d = v_d + dt * i_d / cfg.c_d
    theta = theta + cfg.dtheta * sp
    w_s = s.w_s * (1 - dt / cfg.tau_ws) + sp
    bap_left = torch.where(spike, float(round(cfg.bap / dt)), (s.bap - 1).clamp(min=0))

    # AdEx interneurons (exp argument capped: Auryn clips V to [-80, 20] mV)
    gi = s.g_i
    v = s.v_i
    exp_term = ap.delta_t * torch.exp(((v - ap.v_t) / ap.delta_t).clamp(max=20.0))
    dv = cfg.e_l - v + exp_term + gi[:, 0] * (0.0 - v) + gi[:, 1] * (cfg.e_inh - v) - s.w_i
    refr = s.ref_i > 0
    v_new = torch.where(refr, cfg.e_l, (v + dt * dv / ap.tau_m).clamp(-80.0, 20.0))
    w_new = s.w_i + dt * (ap.a * (v - cfg.e_l) - s.w_i) / ap.tau_w
    v_new = v_new + dt * ap.i_int / ap.c
    spike_i = (v_new > 0.0) & ~refr
    spi = spike_i.float()
    v_new = torch.where(spike_i, ap.v_reset, v_new)
    w_new = w_new + ap.b * spi
    ref_i = torch.where(spike_i, ap.t_ref, (s.ref_i - 1).clamp(min=0))

    # short-term plasticity and the delay line
    std, eff_std = short_term_step(s.std, sp[:, :n], dt, *STD)
    stf, eff_stf = short_term_step(s.stf, sp, dt, *STF)
    zi = torch.zeros(r, ni, device=v.device)
    now = torch.stack([
        torch.cat([eff_std, torch.zeros_like(eff_std), zi], 1),  # depressing (pyr1 only)
        torch.cat([eff_stf, zi], 1),  # facilitating (pyr1, pyr2)
        torch.cat([torch.zeros_like(sp), spi], 1),  # interneurons (static)
    ], 1)  # fmt: skip
    arrive = s.queue[0] + s.pending
    queue = torch.cat([s.queue[1:], now[None]], 0)

    k, ki = cfg.cap(n), cfg.cap(max(cfg.n_pv, cfg.n_som))
    d1 = select(arrive[:, 0, :n], k)  # pyr1 STD efficacies
    f1, f2 = select(arrive[:, 1, :n], k), select(arrive[:, 1, n:n2], k)
    pv = select(arrive[:, 2, n2 : n2 + cfg.n_pv], ki)
    som = select(arrive[:, 2, n2 + cfg.n_pv :], ki)
    pending = torch.stack([
        torch.cat([d1.rest, torch.zeros_like(d1.rest), zi], 1),
        torch.cat([f1.rest, f2.rest, zi], 1),
        torch.cat([torch.zeros_like(sp), pv.rest, som.rest], 1),
    ], 1)  # fmt: skip
    zero_n = torch.zeros(r, n, device=v.device)
    decay_e, decay_i = math.exp(-dt / 5.0), math.exp(-dt / 10.0)
    g_new = torch.stack([g[:, 0] * decay_e, g[:, 1] * decay_i, g[:, 2] * decay_e,
                         g[:, 3] * decay_i], 1) + bg_p  # fmt: skip
    (w12, w1pv), (w21, w22, w2som) = (
        deliver(d1, [w.w12, w.w1pv]),
        deliver(f2, [w.w21, w.w22, w.w2som]),
    )
    (w11,), (wpv2,), (wsom1,) = deliver(f1, [w.w11]), deliver(pv, [w.wpv2]), deliver(som, [w.wsom1])
    g_new = g_new + torch.stack([
        torch.cat([zero_n, w12], 1),
        torch.cat([zero_n, wpv2], 1),
        torch.cat([w21, zero_n], 1),
        torch.cat([w11 + wsom1, w22], 1),
    ], 1)  # fmt: skip
    gi_new = torch.stack([gi[:, 0] * decay_e, gi[:, 1] * decay_i], 1) + bg_i
    gi_new = gi_new + torch.stack([torch.cat([w1pv, w2som], 1), torch.zeros_like(zi)], 1)

    det, events, bursts = neurons.classify(s.detector, sp, math.exp(-dt / 16.0))
    counts = torch.stack([events.view(r, 2, n).sum(2), bursts.view(r, 2, n).sum(2)], 1)
    return State(v_s, v_d, w_s, w_d, theta, bap_left, g_new, v_new, w_new, ref_i, gi_new, std,
                 stf, queue, det, s.t + 1, s.counts + counts, pending,
                 s.late + (pending > 0).sum((1, 2)))  # fmt: skip


def simulate(cfg: MultiplexConfig, device: str = "cpu") -> dict:
    """ER, BR, BP per bin and seed for pyr1 and pyr2, the inputs per bin and the four
    correlations of NN Fig. 3 (mean and s.d. over seeds)."""
    dev = torch.device(device)
    keys = mix(torch.tensor(list(cfg.seeds), device=dev))
    w, ap, s = build(cfg, dev), adex(cfg, dev), initial_state(cfg, dev)
    fn = compile_step(step) if cfg.compile else step
    per_bin = max(1, round(cfg.bin / cfg.dt))
    steps, full_bap = round(cfg.duration / cfg.dt), float(round(cfg.bap / cfg.dt))
    shown = min(RASTER_NEURONS, cfg.n_pyr)
    watched = torch.cat([torch.arange(shown), cfg.n_pyr + torch.arange(shown)]).to(dev)
    raster = Recorder(watched, steps, cfg.dt)
    bins = []
    with torch.no_grad():  # no autograd bookkeeping in the step loop
        for i in range(steps):
            s = fn(s, w, ap, keys, cfg)
            raster(s.bap == full_bap)  # every spike starts a full BAP box
            if (i + 1) % per_bin == 0:
                bins.append(s.counts)
                s = s._replace(counts=torch.zeros_like(s.counts))
    c = torch.stack(bins, 1).cpu() / (cfg.n_pyr * cfg.bin / 1000.0)  # (R, bins, 2, 2) Hz
    er, br = c[:, :, 0], c[:, :, 1]  # (R, bins, pop)
    bp = br / er.clamp(min=1e-9)
    t = (torch.arange(len(bins)) + 0.5) * cfg.bin
    i_s1, i_d2 = drives(cfg, t)
    keep = t >= cfg.burn_in

    def corr(a: Tensor, b: Tensor) -> Tensor:
        """Pearson correlation per seed over the bins after the burn-in."""
        a, b = a[:, keep], b.expand_as(a)[:, keep]
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-12)

    pairs = {
        "pyr2 BP ~ I_d": corr(bp[:, :, 1], i_d2),
        "pyr2 ER ~ pyr1 ER": corr(er[:, :, 1], er[:, :, 0]),
        "pyr1 BP ~ pyr2 BR": corr(bp[:, :, 0], br[:, :, 1]),
        "pyr1 ER ~ I_s": corr(er[:, :, 0], i_s1),
    }
    return {
        "t_ms": t.tolist(), "i_s": i_s1.tolist(), "i_d": i_d2.tolist(),
        "er": er.tolist(), "br": br.tolist(), "bp": bp.tolist(),
        "late_spikes": s.late.tolist(),
        "raster": raster.spikes(), "raster_per_population": shown,
        "correlations": {k: {"mean": v.mean().item(), "sd": v.std().item() if len(v) > 1 else 0.0,
                             "per_seed": v.tolist()} for k, v in pairs.items()},
    }  # fmt: skip
