"""Dendritic cortical microcircuits (Sacramento, Costa, Bengio & Senn, NeurIPS 2018)."""
