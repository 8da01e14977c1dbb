"""Constants of the spiking burst-ensemble simulations (Payeur et al. 2021), as frozen
dataclasses with the paper code's values as defaults (docs/models/spiking-burst-ensembles.md).
Options are applied and validated by `apical.config.replace`.

Units throughout: ms, mV, pA, pF, nS (so pA / pF = mV / ms and nS x mV = pA); rates in Hz.
Synaptic weights are dimensionless conductance jumps in units of the target compartment's
leak conductance (§0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from apical.errors import ConfigError


@dataclass(frozen=True)
class BurstNeuron:
    """Simplified stochastic-burst pyramidal neuron (§1; `BurstPoissonGroup`)."""

    c_s: float = 370.0  # pF; somatic leak g = C/tau = 23.1 nS
    tau_s: float = 16.0
    c_d: float = 170.0  # pF; dendritic leak 24.3 nS
    tau_d: float = 7.0
    e_l: float = -70.0
    e_reset: float = -70.0
    e_exc: float = 0.0
    e_inh: float = -80.0
    theta0: float = -50.0
    dtheta: float = 2.0
    tau_theta: float = 27.0
    b_w: float = -200.0  # pA per unit of somatic adaptation w_s
    tau_ws: float = 100.0
    a_w: float = -13.0  # nS: dendritic adaptation current a_w * w_d (w_d in mV)
    tau_wd: float = 30.0
    w_d0: float = 0.1  # initial w_d (mV)
    e_d: float = -57.0  # burst probability sigma((V_d - E_d) / D)
    slope_d: float = 6.0
    refractory: float = 20.0
    isi_min: float = 5.0  # second spike of a burst after floor((isi_min + isi_span u)/dt) - 1 steps
    isi_span: float = 10.0
    tau_ampa: float = 5.0
    tau_gaba: float = 10.0
    v0_sd: float = 5.0  # initial V_s ~ N(E_L, v0_sd)
    # Quirk 5: the paper code drives dendritic synapses with the *somatic* voltage.
    dendritic_driving: str = "soma"  # or "dendrite"
    integrator: str = "exponential"  # or "euler" (the paper code's, right at dt = 0.1 ms)
    # "integrated": injected currents solved inside the exponential integrator's step
    # (exact, so dt = 1 ms keeps dt = 0.1 ms's operating point: scripts/
    # burst_neuron_dt_check.py); "after-threshold": added after the threshold check
    # (Auryn's order; what forward Euler always does)
    currents: str = "integrated"

    def __post_init__(self) -> None:
        for name, known in (("integrator", ("exponential", "euler")),
                            ("currents", ("integrated", "after-threshold")),
                            ("dendritic_driving", ("soma", "dendrite"))):  # fmt: skip
            if getattr(self, name) not in known:
                raise ConfigError(
                    f"neuron.{name} must be one of {', '.join(known)}, got {getattr(self, name)!r}"
                )


@dataclass(frozen=True)
class BurstRule:
    """Burst-dependent plasticity with homeostasis as the code runs it (§4)."""

    tau_pre: float = 100.0  # presynaptic event trace
    tau_avg: float = 2000.0  # event and burst moving averages (P-bar = B-hat / E-hat)
    e_min: float = 2.0  # Hz
    e_max: float = 10.0  # Hz
    w_max: float = 1.0
    tau_rate: float = 30000.0  # the lower homeostatic term's trace of all spikes
    rate0: float = 0.1  # Hz, that trace's initial value
    burst_window: float = 16.0  # tau of the event/burst detection trace


@dataclass(frozen=True)
class Background:
    """One-to-one Poisson input of a population: rate (Hz) and weight per target."""

    soma_exc: tuple[float, float] = (150.0, 0.35)
    soma_inh: tuple[float, float] = (150.0, 0.35)
    dend_exc: tuple[float, float] = (500.0, 0.05)
    dend_inh: tuple[float, float] = (500.0, 0.05)


BACKGROUNDS = ("bernoulli", "poisson")


def check_background(kind: str) -> None:
    """Background trains per step: "bernoulli" (at most one spike per neuron and step with
    probability rate x dt, as the paper code's Auryn `PoissonGroup` delivers them) or
    "poisson" (Poisson counts of mean rate x dt: the same mean and, at coarse dt, the
    variance of the fine-step trains summed over the step)."""
    if kind not in BACKGROUNDS:
        raise ConfigError(f"unknown background {kind!r}; use one of {', '.join(BACKGROUNDS)}")


@dataclass(frozen=True)
class XorConfig:
    """The XOR network and protocol of NN Fig. 4 (§5); the paper's values."""

    n: int = 500  # neurons per ensemble: input1, input2, hidden1, hidden2, output
    p: float = 0.2  # connection probability of every projection
    dt: float = 0.1
    example: float = 8000.0  # tau_ex
    teach_fraction: float = 0.1  # teacher in the last 10 % of each example
    examples: int = 2000  # 500 repetitions of (0,0), (1,0), (0,1), (1,1)
    burn_in: float | None = None  # None: 3 tau_avg
    test_example: float | None = None  # pre/post-test presentation; None: `example`
    eta_hidden: float = 8e-3
    eta_output: float = 4e-3
    w_ff: float = 0.234
    w_ff_inh: float = 0.25
    w_fb_h1: tuple[float, float] = (0.26, 0.06)  # output bursts -> hidden1 dendrites (exc, inh)
    w_fb_h2: tuple[float, float] = (0.026, 0.27)
    bg_input: Background = Background((500.0, 0.35), (500.0, 0.35))
    bg_hidden: Background = Background((150.0, 0.385), (150.0, 0.49))
    bg_output: Background = Background()
    background: str = "bernoulli"  # or "poisson" (check_background)
    i_output_d: float = 400.0  # constant dendritic currents (pA)
    i_hidden1_d: float = 0.0
    i_hidden2_d: float = 500.0
    i_on: float = 150.0  # input soma current for a "1"
    i_off: float = -350.0  # ... and for a "0"
    teacher_max: float = 1000.0  # I_0 (pA)
    teacher_tolerance: float = 1.0  # Hz: dead zone near the correct bound
    threshold: float = 6.0  # Hz: (e_min + e_max) / 2, the solved criterion
    bin: float | None = None  # monitor bin; None: example / 20
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    spike_capacity: int | None = None  # transmitted spikes per ensemble per step; None: auto
    checkpoint_every: int = 40  # examples
    compile: bool = True
    neuron: BurstNeuron = field(default_factory=BurstNeuron)
    rule: BurstRule = field(default_factory=BurstRule)

    def __post_init__(self) -> None:
        check_positive(self, ("n", "dt", "example", "examples", "eta_hidden", "eta_output"))
        if not 0 < self.p <= 1 or not 0 < self.teach_fraction < 1:
            raise ConfigError("p and teach_fraction must lie in (0, 1]; fix the config")
        if self.dt > 1.0:
            raise ConfigError(
                f"dt = {self.dt} ms is coarser than 1 ms, which the 5-15 ms burst ISIs and "
                "20-ms refractoriness do not survive; use dt <= 1"
            )
        if not self.seeds:
            raise ConfigError("seeds is empty; give at least one seed")
        if not 0 <= self.w_ff <= self.rule.w_max:  # plasticity keeps weights in [0, w_max]
            raise ConfigError(
                f"w_ff = {self.w_ff} lies outside [0, rule.w_max = {self.rule.w_max}]; set a "
                "starting weight within the range the rule clips to"
            )
        check_background(self.background)

    def steps(self, ms: float) -> int:
        return max(1, round(ms / self.dt))

    @property
    def capacity(self) -> int:
        """Events (or bursts) of one ensemble transmitted per step: twice what it emits when
        every neuron fires at its refractory limit (50 Hz; the ensembles fire at 2-15 Hz),
        at least 16; plasticity handles twice as many postsynaptic spikes. More in one step
        (synchronous volleys) are transmitted a step late / counted as missed updates, and
        a run reports both."""
        if self.spike_capacity is not None:
            return self.spike_capacity
        return max(16, math.ceil(2 * self.n * self.dt / self.neuron.refractory))


def check_positive(obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        if not getattr(obj, name) > 0:
            raise ConfigError(f"{name} must be positive, got {getattr(obj, name)!r}")
