"""Figures, all written through `apical.plots.base.save`: training runs and sweeps
(`training`), the spiking protocols (`spiking`)."""

from apical.plots.base import save
from apical.plots.training import load_runs, plot_dendrite_traces, plot_runs, plot_sweep

__all__ = ["load_runs", "plot_dendrite_traces", "plot_runs", "plot_sweep", "save"]
