"""Every constant and variant of the segregated-dendrite network, as one frozen config.

Defaults are eLife 2017 Table 1 (Guerguiev, Lillicrap & Richards) in the code's units: time
in ms (dt = 1), rates in spikes per ms (phi_max = 0.2, i.e. 200 Hz). Two presets fix how
the simulation is read (§8):

- ``original-code``: what produced the published numbers, the authors' code in its paper
  mode: PSP kernel truncated to 10 steps (51 % of its mass), averages over the last 20
  steps of each phase, a 250-step test phase averaged over its last 220 steps.
- ``paper``: the text: the full PSP kernel, averages over everything after the 30 ms
  settling time, a 500 ms test phase.

Section numbers (§) refer to docs/models/segregated-dendrites.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from apical.config import from_dict
from apical.errors import ConfigError

PRESETS: dict[str, dict] = {
    "original-code": {"psp_steps": 10, "window": 20, "test_steps": 250, "test_window": 220},
    "paper": {"psp_steps": None, "window": None, "test_steps": 500, "test_window": None},
}
MODES = ("spiking", "rate")
FEEDBACK_SIGNALS = ("spikes", "rates")
FEEDBACK_INITS = ("random", "symmetric")


@dataclass(frozen=True)
class DendriteConfig:
    """The network and its simulation protocol (hashable: compiled steps are cached on it)."""

    n_inputs: int = 784
    hidden: tuple[int, ...] = (500,)
    n_outputs: int = 10
    preset: str = "original-code"
    mode: str = "spiking"  # "rate": the authors' non-spiking mode (§11)
    feedback: str = "spikes"  # "rates": the output's rate reaches the apical dendrites
    feedback_init: str = "random"  # "symmetric": Y = W^T of the layers above, re-set
    feedback_noise: float = 0.0  # s.d. of fixed noise added to symmetric feedback
    feedback_keep: float = 1.0  # fraction of feedback entries kept (sparse feedback)
    feedback_rescale: bool = True  # survivors of sparse feedback scaled by 1/keep
    plateau_jitter: bool = False  # per-neuron random plateau times (Fig. 6-suppl. 1)
    g_a: float = 0.0  # apical -> soma coupling (0: total segregation)
    g_b: float = 0.6  # basal -> soma
    g_d: float = 0.6  # output dendrite -> soma
    g_l: float = 0.1  # leak
    e_exc: float = 8.0  # teaching reversal potentials
    e_inh: float = -8.0
    rate_max: float = 0.2  # phi_max, spikes per ms
    tau_s: float = 3.0  # PSP kernel rise, ms
    tau_l: float = 10.0  # PSP kernel decay, ms
    settle: int = 30  # steps excluded from the averages at the start of a phase
    phase_min: int = 50  # phase length = phase_min + floor(Wald(extra_mean, extra_scale))
    phase_extra_mean: float = 2.0
    phase_extra_scale: float = 1.0
    psp_steps: int | None = 10  # None: the full kernel (exact, two traces)
    # multiplies the kernel, i.e. its mass: 0.512 gives the full kernel the truncated one's
    # mass (an ablation of the presets' difference; spiking mode)
    psp_scale: float = 1.0
    window: int | None = 20  # None: every step after `settle`
    test_steps: int = 250
    test_window: int | None = 220  # None: every test step after `settle`
    carry_state: bool = True  # training images start from the previous image's end state
    # torch.compile the presentation's functions (the first call of each shape compiles,
    # tens of seconds; then 2-5x faster: benchmarks/segregated_dendrites.py); False: eager
    compile: bool = True
    # input rows (steps x examples) drawn, filtered and weighted at once: chunk // B steps
    # per chunk (one chunk per presentation at B = 4; memory chunk x n_in, not time)
    chunk: int = 4096
    unroll: int = 8  # training steps per call of the compiled step (the rest one at a time)
    # with g_a = 0, every step of a chunk at once (dynamics.driven_chunk): nothing feeds
    # back within a step, so each layer is a linear recurrence (a doubling scan) and each
    # PSP a short filter, a few large operations per chunk instead of a loop of small
    # steps. False: the step loop (always used when g_a > 0); None: the same as True
    all_at_once: bool | None = True

    @property
    def k_b(self) -> float:
        """Hidden steady-state gain g_b / (g_l + g_b + g_a) (eLife Eq. 14 at rest)."""
        return self.g_b / (self.g_l + self.g_b + self.g_a)

    @property
    def k_d(self) -> float:
        """Output steady-state gain g_d / (g_l + g_d)."""
        return self.g_d / (self.g_l + self.g_d)

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.n_inputs, *self.hidden, self.n_outputs)

    def check(self) -> None:
        def bad(what: str) -> ConfigError:
            return ConfigError(f"segregated dendrites: {what}")

        if self.preset not in PRESETS:
            raise bad(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
        for name, known in (
            ("mode", MODES),
            ("feedback", FEEDBACK_SIGNALS),
            ("feedback_init", FEEDBACK_INITS),
        ):
            if getattr(self, name) not in known:
                raise bad(f"unknown {name} {getattr(self, name)!r}; known: {', '.join(known)}")
        if any(not isinstance(n, int) or n < 1 for n in self.sizes):
            raise bad(f"layer sizes must be positive integers, got {self.sizes}")
        if not 0 < self.feedback_keep <= 1:
            raise bad(f"feedback_keep must be in (0, 1], got {self.feedback_keep}")
        for name in ("g_a", "g_b", "g_d", "g_l", "feedback_noise"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise bad(f"{name} must be a non-negative number, got {value}")
        if self.window is None and self.settle >= self.phase_min:
            raise bad(f"settle {self.settle} must be shorter than phase_min {self.phase_min}")
        if self.window is not None and not 0 < self.window <= self.phase_min:
            raise bad(f"window {self.window} must be between 1 and phase_min {self.phase_min}")
        test_window = self.test_window or self.test_steps - self.settle
        if not 0 < test_window <= self.test_steps:
            raise bad(f"test_window {self.test_window} does not fit test_steps {self.test_steps}")
        if self.all_at_once not in (None, True, False):
            raise bad(f"all_at_once must be true, false or None (auto), got {self.all_at_once!r}")
        for name in ("chunk", "unroll"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise bad(f"{name} must be a positive integer, got {value}")
        if not self.psp_scale > 0:  # also refuses NaN
            raise bad(f"psp_scale must be positive, got {self.psp_scale}")
        if self.psp_steps is not None and self.psp_steps < 1:
            raise bad(f"psp_steps must be None (full kernel) or >= 1, got {self.psp_steps}")


def dendrite_config(preset: str = "original-code", **options) -> DendriteConfig:
    """A config from a preset plus overrides (unknown names give one clear line)."""
    if preset not in PRESETS:
        raise ConfigError(
            f"segregated dendrites: unknown preset {preset!r}; known: {', '.join(PRESETS)}"
        )
    config = from_dict(DendriteConfig, {"preset": preset, **PRESETS[preset], **options},
                       "segregated dendrites option")  # fmt: skip
    config.check()
    return config
