"""Spike rasters: a few neurons' spikes recorded on the device during a simulation (one
host copy per recording, none per step) and drawn with the analysis scripts' burst rule
(a spike within 16 ms of the same neuron's previous spike belongs to a burst,
§0).

Section numbers (§) refer to docs/models/spiking-burst-ensembles.md.
"""

from __future__ import annotations

import torch
from torch import Tensor

BURST_ISI = 16.0  # ms


class Recorder:
    """Records spikes (0/1) of the given neurons of replica 0 into a preallocated
    (steps, neurons) buffer; `spikes()` returns them as (time in ms, neuron) pairs."""

    def __init__(self, neurons: Tensor, steps: int, dt: float, t0: float = 0.0) -> None:
        self.neurons, self.dt, self.t0 = neurons, dt, t0
        self.buffer = torch.zeros(steps, len(neurons), dtype=torch.bool, device=neurons.device)
        self.row = 0

    def __call__(self, spiked: Tensor) -> None:
        """spiked: (R, N) booleans of this step."""
        self.buffer[self.row] = spiked[0, self.neurons]
        self.row += 1

    def spikes(self) -> list[list[float]]:
        step, neuron = self.buffer[: self.row].nonzero(as_tuple=True)
        times = (self.t0 + (step.double() + 1) * self.dt).tolist()
        return [[round(t, 4), int(k)] for t, k in zip(times, neuron.tolist(), strict=True)]


def in_bursts(spikes: list[list[float]]) -> Tensor:
    """Per (time, neuron) pair: whether the spike lies within 16 ms of the same neuron's
    previous or next spike."""
    if not spikes:
        return torch.zeros(0, dtype=torch.bool)
    t, k = torch.tensor(spikes, dtype=torch.float64).T
    order = torch.argsort(t, stable=True)
    order = order[torch.argsort(k[order], stable=True)]  # by neuron, then time
    close = (k[order].diff() == 0) & (t[order].diff() <= BURST_ISI)
    flags = torch.zeros(len(t), dtype=torch.bool)
    flags[order[1:][close]] = True
    flags[order[:-1][close]] = True
    return flags


def draw(ax, spikes: list[list[float]], offset: int = 0, color: str = "k") -> None:
    """Isolated spikes as dots in `color`, spikes in bursts in red (rows shifted by offset)."""
    if not spikes:
        return
    flags = in_bursts(spikes)
    t, k = torch.tensor(spikes, dtype=torch.float64).T
    for mask, c in ((~flags, color), (flags, "tab:red")):
        ax.scatter(t[mask].tolist(), (k[mask] + offset).tolist(), s=1.5, c=c, lw=0)
