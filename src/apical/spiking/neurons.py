"""The stochastic-burst pyramidal neuron (§1) and event/burst detection
(§0), as pure step functions over (replicas, neurons) tensors.

Soma and dendrite (Payeur et al. 2021, Methods; `BurstPoissonGroup`), forward Euler:

    C_s dV_s/dt = -(C_s/tau_s)(V_s - E_L) + b_w w_s + I_syn,s + I_inj,s
    C_d dV_d/dt = -(C_d/tau_d)(V_d - E_L) + a_w w_d + I_syn,d + I_inj,d
    dw_s/dt = -w_s / tau_ws,   tau_wd dw_d/dt = (V_d - E_L) - w_d,
    dtheta/dt = (theta0 - theta) / tau_theta
    I_syn/C = [g_E (E_E - V) + g_I (E_I - V)] / tau      (V = V_s for both compartments: quirk 5)

A somatic spike (V_s > theta, not refractory) resets V_s, raises theta, increments w_s and
with probability p = sigma((V_d - E_d)/D) (NN Eq. 4's burst probability) schedules a second
spike floor((5 + 10 u) ms / dt) - 1 steps later; each spike starts a 20-ms refractory period.
Injected currents act after the threshold check of the step (Auryn's device order); with
the exponential integrator, `currents = "integrated"` solves them with the rest of the step
instead, which keeps the operating point at dt = 1 ms (scripts/burst_neuron_dt_check.py).

Section numbers (§) refer to docs/models/spiking-burst-ensembles.md.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from apical.spiking.config import BurstNeuron


class Neurons(NamedTuple):
    v_s: Tensor
    v_d: Tensor
    w_s: Tensor
    w_d: Tensor
    theta: Tensor
    refractory: Tensor  # steps left
    countdown: Tensor  # steps to a scheduled second spike (0: none)
    g_es: Tensor  # conductances in units of the compartment's leak
    g_is: Tensor
    g_ed: Tensor
    g_id: Tensor


class Detector(NamedTuple):
    """Trace-based event/burst classification of every neuron's spikes."""

    trace: Tensor  # +1 per spike, decays with tau = 16 ms
    in_burst: Tensor  # 1 after a burst's second spike until the next event


def rest(p: BurstNeuron, v_s: Tensor) -> Neurons:
    """Initial state: V_s given, everything else at rest (§2)."""

    def z(value: float = 0.0) -> Tensor:  # distinct tensors: no aliasing between fields
        return torch.full_like(v_s, value)

    return Neurons(v_s, z(p.e_l), z(), z(p.w_d0), z(p.theta0), z(), z(), z(), z(), z(), z())


def detector(shape: tuple[int, ...], device: torch.device | str = "cpu") -> Detector:
    return Detector(torch.zeros(shape, device=device), torch.zeros(shape, device=device))


def burst_probability(p: BurstNeuron, v_d: Tensor) -> Tensor:
    return torch.sigmoid((v_d - p.e_d) / p.slope_d)


def step(
    s: Neurons,
    p: BurstNeuron,
    dt: float,
    i_s: Tensor,
    i_d: Tensor,
    u_burst: Tensor,
    u_isi: Tensor,
) -> tuple[Neurons, Tensor, Tensor]:
    """One step with the conductances of the previous step; returns the new state
    (conductances decayed, before this step's deliveries), the first spikes and the
    second spikes of bursts (0/1 floats).

    p.integrator "euler" is the paper code's forward Euler (right at dt = 0.1 ms);
    "exponential" holds the conductances at their mean over the step (g tau (1 - e^(-dt/tau))
    / dt, so each jump's integral is exact) and solves the linear membrane equations and
    the adaptation / threshold relaxations exactly over the step, which keeps the operating
    point at coarse dt (scripts/spiking_dt_check.py).

    i_s, i_d: injected currents (pA); u_burst, u_isi: uniforms for the burst draw and its ISI.
    """
    v_s, v_d = s.v_s, s.v_d
    v_syn = v_s if p.dendritic_driving == "soma" else v_d
    integrated = p.integrator == "exponential" and p.currents == "integrated"
    if p.integrator == "euler":
        dv_s = (
            -(v_s - p.e_l) + s.g_es * (p.e_exc - v_s) + s.g_is * (p.e_inh - v_s)
        ) / p.tau_s + p.b_w * s.w_s / p.c_s
        dv_d = (
            -(v_d - p.e_l) + s.g_ed * (p.e_exc - v_syn) + s.g_id * (p.e_inh - v_syn)
        ) / p.tau_d + p.a_w * s.w_d / p.c_d
        v_s = v_s + dt * dv_s
        v_d = v_d + dt * dv_d
        w_d = s.w_d + dt * ((v_d - p.e_l) - s.w_d) / p.tau_wd
        theta = s.theta + dt * (p.theta0 - s.theta) / p.tau_theta
        w_s = s.w_s * (1 - dt / p.tau_ws)
    else:
        fa = p.tau_ampa * (1 - math.exp(-dt / p.tau_ampa)) / dt  # mean / initial conductance
        fg = p.tau_gaba * (1 - math.exp(-dt / p.tau_gaba)) / dt
        g_es, g_is, g_ed, g_id = s.g_es * fa, s.g_is * fg, s.g_ed * fa, s.g_id * fg
        rate_s = (1 + g_es + g_is) / p.tau_s  # dV_s/dt = -rate_s (V_s - V_inf)
        drive_s = (p.e_l + g_es * p.e_exc + g_is * p.e_inh) / p.tau_s + p.b_w * s.w_s / p.c_s
        if integrated:  # constant over the step: solved with the rest
            drive_s = drive_s + i_s / p.c_s
        v_s = drive_s / rate_s + (v_s - drive_s / rate_s) * torch.exp(-dt * rate_s)
        if p.dendritic_driving == "soma":  # synaptic current fixed by V_s over the step
            rate_d = torch.full_like(v_d, 1 / p.tau_d)
            syn = g_ed * (p.e_exc - v_syn) + g_id * (p.e_inh - v_syn)
            drive_d = (p.e_l + syn) / p.tau_d + p.a_w * s.w_d / p.c_d
        else:
            rate_d = (1 + g_ed + g_id) / p.tau_d
            drive_d = (p.e_l + g_ed * p.e_exc + g_id * p.e_inh) / p.tau_d + p.a_w * s.w_d / p.c_d
        if integrated:
            drive_d = drive_d + i_d / p.c_d
        v_d = drive_d / rate_d + (v_d - drive_d / rate_d) * torch.exp(-dt * rate_d)
        target = v_d - p.e_l
        w_d = target + (s.w_d - target) * math.exp(-dt / p.tau_wd)
        theta = p.theta0 + (s.theta - p.theta0) * math.exp(-dt / p.tau_theta)
        w_s = s.w_s * math.exp(-dt / p.tau_ws)

    countdown = (s.countdown - 1).clamp(min=0)
    second = countdown == 1
    refractory = (s.refractory - 1).clamp(min=0)
    first = (v_s > theta) & (refractory <= 0)
    burst = first & (u_burst < burst_probability(p, v_d))
    countdown = torch.where(second, 0.0, countdown)
    countdown = torch.where(burst, torch.floor((p.isi_min + p.isi_span * u_isi) / dt), countdown)
    refractory = torch.where(first | second, float(round(p.refractory / dt)), refractory)
    first_f = first.float()
    v_s = torch.where(first, p.e_reset, v_s)
    if not integrated:
        v_s, v_d = v_s + dt * i_s / p.c_s, v_d + dt * i_d / p.c_d
    theta = theta + p.dtheta * first_f
    w_s = w_s + first_f
    a, g = math.exp(-dt / p.tau_ampa), math.exp(-dt / p.tau_gaba)
    new = Neurons(v_s, v_d, w_s, w_d, theta, refractory, countdown,
                  s.g_es * a, s.g_is * g, s.g_ed * a, s.g_id * g)  # fmt: skip
    return new, first_f, second.float()


def spiked(s: Neurons, p: BurstNeuron, dt: float) -> Tensor:
    """Which neurons spiked (first or second spike) in the step that produced `s`: every
    spike starts a full refractory period."""
    return s.refractory == float(round(p.refractory / dt))


def classify(d: Detector, spikes: Tensor, decay: float) -> tuple[Detector, Tensor, Tensor]:
    """Events and bursts from spikes (§0, `AdaptiveEBCPConnection`): with the
    trace x read before this spike, x < 1/e is an event (burst flag cleared), x > 1/e with
    the flag clear is a burst (flag set), anything else is ignored. `decay` = exp(-dt/16 ms).
    """
    low = d.trace < math.exp(-1)
    event = spikes * low
    burst = spikes * (~low) * (1 - d.in_burst)
    in_burst = torch.where(event > 0, 0.0, torch.where(burst > 0, 1.0, d.in_burst))
    return Detector((d.trace + spikes) * decay, in_burst), event, burst
