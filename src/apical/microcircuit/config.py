"""The dendritic-microcircuit network (Sacramento et al. 2018) as one frozen config.

Conductances are the paper's (its Eqs. 1-3: leak g_l, basal g_b, apical g_a, interneuron
dendrite g_d, somatic nudging g_som); every mixing factor of the steady state follows from
them (`Mixing`). Which weights learn is part of the network: the forward pyramid-to-pyramid
weights always (but the layers named in `frozen`), the pyramid-to-interneuron weights
always, the interneuron-to-pyramid and top-down weights only when asked.

Section numbers (§) refer to docs/models/microcircuit.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, NamedTuple

from apical.config import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range, from_dict
from apical.errors import ConfigError

Size = Annotated[int, AT_LEAST_ONE]
Conductance = Annotated[float, POSITIVE]
Rate = Annotated[float, Range(gt=0, lt=1)]


class Mixing(NamedTuple):
    """Steady-state gains of the membrane equations (§2): a hidden soma settles to
    u = hidden v_B + apical v_A, an output soma to u = (1 - output_nudge) output v_B +
    output_nudge u_trgt, an interneuron to u^I = (1 - inter_nudge) inter v^I +
    inter_nudge u_{k+1}."""

    hidden: float  # g_b / (g_l + g_b + g_a)
    apical: float  # g_a / (g_l + g_b + g_a)
    output: float  # g_b / (g_l + g_b)
    inter: float  # g_d / (g_l + g_d)
    output_nudge: float  # lambda_N = g_som / (g_l + g_b + g_som)
    inter_nudge: float  # lambda_I = g_som / (g_l + g_d + g_som)


@dataclass(frozen=True)
class MicrocircuitConfig:
    """Layer sizes, conductances, targets, top-down weights and the dynamics used."""

    n_inputs: Size = 784
    hidden: tuple[Size, ...] = (500, 500)
    n_outputs: Size = 10
    g_l: Conductance = 0.1
    g_b: Conductance = 1.0
    g_a: Conductance = 0.8
    g_d: Conductance = 1.0
    g_som: Conductance = 0.1  # weak nudging (lambda_N = 0.083); 0.8 is too strong (§7)
    # the rate function phi: logistic, or 0.1 log(1 + e^(u - 3)) (the paper's regression)
    activation: Literal["logistic", "soft_rectifier"] = "logistic"
    # one-hot targets as rates; the output soma is nudged towards phi^-1(rate) (§2)
    target_low: Rate = 0.1
    target_high: Rate = 0.8
    # top-down pyramid-to-pyramid weights B_k: random; W_{k+1}^T re-set after every step
    # (the paper's transposed case); or W_{k+1}^T at the start, then left alone. Fixed
    # unless `learn_top_down` (the top-down rule, §6)
    top_down: Literal["random", "transposed", "transposed_at_init"] = "random"
    learn_top_down: bool = False
    learn_interneuron_to_pyramid: bool = False  # W^PI (fixed at -B in the paper's MNIST)
    frozen: tuple[Annotated[int, NON_NEGATIVE], ...] = ()  # forward layers kept fixed
    # start in the self-predicting state (W^IP from the layer above, W^PI = -B), or not
    self_predicting: bool = True
    init_gain: Conductance = 1.0  # Xavier-normal gain of the forward and top-down weights
    # "simplified": one bottom-up and one top-down sweep of steady states (the benchmark
    # path); "continuous": Euler steps of the membrane equations
    dynamics: Literal["simplified", "continuous"] = "simplified"
    dt: Annotated[float, POSITIVE] = 0.1
    steps: Size = 200  # Euler steps per presentation (continuous)
    noise: Annotated[float, NON_NEGATIVE] = 0.0  # s.d. of the somatic noise per unit time

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.n_inputs, *self.hidden, self.n_outputs)

    @property
    def mixing(self) -> Mixing:
        gl, gb, ga, gd, gs = self.g_l, self.g_b, self.g_a, self.g_d, self.g_som
        return Mixing(
            hidden=gb / (gl + gb + ga),
            apical=ga / (gl + gb + ga),
            output=gb / (gl + gb),
            inter=gd / (gl + gd),
            output_nudge=gs / (gl + gb + gs),
            inter_nudge=gs / (gl + gd + gs),
        )

    @property
    def basal_gains(self) -> tuple[float, ...]:
        """c_k per forward layer: uhat_k = c_k v_B,k (hidden, then the output's)."""
        m = self.mixing
        return (m.hidden,) * len(self.hidden) + (m.output,)

    def check(self) -> None:
        def bad(what: str) -> ConfigError:
            return ConfigError(f"microcircuit: {what}")

        if not self.hidden:
            raise bad("needs at least one hidden layer (hidden = [500, 500], for example)")
        n_layers = len(self.hidden) + 1
        wrong = [i for i in self.frozen if i >= n_layers]
        if wrong:
            last = n_layers - 1
            raise bad(f"frozen names layer {wrong[0]}, but the forward layers are 0..{last}")
        if self.learn_top_down and self.top_down == "transposed":
            raise bad("transposed top-down weights follow W^T and cannot also learn; "
                      "set top_down = \"random\" or learn_top_down = false")  # fmt: skip
        if self.activation == "soft_rectifier" and self.target_high >= 0.1 * 30:
            raise bad("the soft rectifier's targets must be rates it reaches below 3")
        if self.target_low >= self.target_high:
            raise bad(f"target_low {self.target_low} must be below target_high {self.target_high}")


def microcircuit_config(**options) -> MicrocircuitConfig:
    """A config from options (unknown names and bad values give one clear line)."""
    config = from_dict(MicrocircuitConfig, options, "microcircuit option")
    config.check()
    return config
