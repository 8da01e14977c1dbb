"""An isolated population of stochastic-burst neurons (§1) with private background input
and constant injected currents, batched over R seeds: the unit the simulators are compared
on (`benchmarks/brian2_side_by_side.py`) and the neuron's operating point read alone.

Per step: background spikes onto soma and dendrite (exc, inh) raise the conductances
(`synapses.background_spikes`), then `neurons.step`; first spikes (events' first spikes) and
second spikes (of bursts) are counted per replica. Every draw is keyed on (seed, stream,
step, neuron) (apical.keyed), so a replica does not depend on its batch.

Section numbers (§) refer to docs/models/spiking-burst-ensembles.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from apical.compiled import compile_loop
from apical.keyed import normal, salts, step_keys, uniform
from apical.spiking import neurons
from apical.spiking.config import Background, BurstNeuron, check_background, check_positive
from apical.spiking.synapses import background_spikes
from apical.spiking.xor_net import replica_keys

NOISE_STREAM = 1


@dataclass(frozen=True)
class PopulationConfig:
    n: int = 4000
    dt: float = 0.1
    i_s: float = 0.0  # pA, every neuron's soma
    i_d: float = 0.0  # pA, every neuron's dendrite
    # the XOR's hidden ensembles' background
    bg: Background = field(default_factory=lambda: Background((150.0, 0.385), (150.0, 0.49)))
    background: str = "bernoulli"  # or "poisson" (config.check_background)
    neuron: BurstNeuron = field(default_factory=lambda: BurstNeuron(integrator="euler"))

    def __post_init__(self) -> None:
        check_positive(self, ("n", "dt"))
        check_background(self.background)


class State(NamedTuple):
    neurons: neurons.Neurons
    t: Tensor  # 0-d int64 step counter
    counts: Tensor  # (R, 2): first spikes, second spikes of bursts


def initial_state(cfg: PopulationConfig, keys: Tensor) -> State:
    """Rest, V_s ~ N(E_L, v0_sd) drawn per replica from its key."""
    r, p = len(keys), cfg.neuron
    v0 = p.e_l + p.v0_sd * normal(step_keys(keys, 0, 0), cfg.n)
    counts = torch.zeros(r, 2, device=keys.device)
    return State(neurons.rest(p, v0), torch.zeros((), dtype=torch.long, device=keys.device), counts)


def background_means(cfg: PopulationConfig, device) -> tuple[Tensor, Tensor]:
    """(4, 1) expected background spikes per step and weights: soma exc, soma inh,
    dendrite exc, dendrite inh."""
    pairs = [cfg.bg.soma_exc, cfg.bg.soma_inh, cfg.bg.dend_exc, cfg.bg.dend_inh]
    mean = torch.tensor([[rate * cfg.dt / 1000.0] for rate, _ in pairs], device=device)
    weight = torch.tensor([[w] for _, w in pairs], device=device)
    return mean, weight


def step(s: State, keys: Tensor, mean: Tensor, weight: Tensor, salt: Tensor,
         cfg: PopulationConfig) -> State:  # fmt: skip
    """One dt of the population (module docstring); salt = keyed.salts(6 n)."""
    r, n = s.neurons.v_s.shape
    u = uniform(step_keys(keys, NOISE_STREAM, s.t), salt).view(r, 6, n)
    bg = background_spikes(u[:, :4], mean, cfg.background) * weight
    i_s, i_d = torch.full_like(u[:, 4], cfg.i_s), torch.full_like(u[:, 4], cfg.i_d)
    nrn, first, second = neurons.step(s.neurons, cfg.neuron, cfg.dt, i_s, i_d, u[:, 4], u[:, 5])
    nrn = nrn._replace(g_es=nrn.g_es + bg[:, 0], g_is=nrn.g_is + bg[:, 1],
                       g_ed=nrn.g_ed + bg[:, 2], g_id=nrn.g_id + bg[:, 3])  # fmt: skip
    counts = s.counts + torch.stack((first.sum(1), second.sum(1)), 1)
    return State(nrn, s.t + 1, counts)


def simulate(cfg: PopulationConfig, seeds: tuple[int, ...], seconds: float,
             compile: bool = True, warm: int = 200) -> dict:  # fmt: skip
    """Simulate `seconds` for every seed at once (after `warm` untimed steps, which compile
    the loop); event rate (Hz, first spikes), burst probability (second / first spikes)
    per seed and the wall-clock seconds of the timed part. Compiled, all steps run in one
    call (`apical.compiled.compile_loop`)."""
    keys = replica_keys(seeds, "cpu")
    args = (keys, *background_means(cfg, "cpu"), salts(6 * cfg.n), cfg)
    loop = compile_loop(step, compile)
    steps = round(seconds * 1000 / cfg.dt)
    with torch.inference_mode():  # the state too: a state made outside would recompile
        s = initial_state(cfg, keys)
        s = loop(s, warm, *args)
        s = s._replace(counts=torch.zeros_like(s.counts))
        t0 = time.perf_counter()
        s = loop(s, steps, *args)
        s.counts.sum().item()
        wall = time.perf_counter() - t0
    first, second = s.counts[:, 0], s.counts[:, 1]
    return {
        "event_rate_hz": (first / (cfg.n * seconds)).tolist(),
        "burst_probability": (second / first.clamp(min=1)).tolist(),
        "wall_seconds": wall,
        "simulated_seconds": seconds,
    }
