"""The energy-based rules' engine: a feed-forward net read as layers (`layered`), the
relaxation loop (`relax`), and the energies of predictive coding, equilibrium propagation
and contrastive Hebbian learning as pure functions; `Relaxing` is the module shell whose
forward pass is a free relaxation (the answer of an equilibrium network)."""

from apical.energy.layered import Layered, layered
from apical.energy.network import Relaxing

__all__ = ["Layered", "Relaxing", "layered"]
