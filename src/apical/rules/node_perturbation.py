"""Node perturbation (the NN 2021 Fig. 6b baseline; Williams 1992 REINFORCE on pre-activations)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from apical.errors import ConfigError
from apical.losses import get_loss, per_example_loss
from apical.rules.base import Rule, Step
from apical.rules.chain import local_directions, run_chain, sequential_chain


@dataclass(frozen=True, kw_only=True)
class NodePerturbation(Rule):
    """Every layer's pre-activations are perturbed at once with xi_l ~ N(0, sigma^2); one
    clean and one perturbed forward pass per example give per-example losses L and L~, and

        direction(W_l) = sum_n [(L~_n - L_n) xi_{l,n} / sigma^2] e_{l-1,n}^T

    (NN Methods; the authors' `*NP` layers), an unbiased estimate of the gradient of the
    per-example loss up to O(sigma). Batch reduction: **sum**. Sequential chains only.
    """

    name: ClassVar[str] = "node_perturbation"
    summary: ClassVar[str] = "node perturbation: loss change under pre-activation noise"
    reduction: ClassVar[str] = "sum"
    diagnoses: ClassVar[bool] = True  # probes get the error signals
    loss: str = "mse"
    sigma: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sigma <= 0:
            raise ConfigError(f"node perturbation needs sigma > 0, got {self.sigma}")

    @torch.no_grad()
    def directions(self, model, x, y, generator=None, diagnose: bool = False) -> Step:
        """The step; with `diagnose` also each layer's per-example error estimate
        (L~ - L) xi / sigma^2 (`Step.errors`)."""
        stages = sequential_chain(model, self.name)
        clean = run_chain(stages, x)
        noise = [
            torch.randn(r.v.shape, generator=generator, device=r.v.device, dtype=r.v.dtype)
            * self.sigma
            for r in clean
        ]
        noisy = run_chain(stages, x, noise)
        outputs = clean[-1].e
        change = per_example_loss(self.loss, noisy[-1].e, y) - per_example_loss(
            self.loss, outputs, y
        )
        factor = [change.reshape(*change.shape, *[1] * (xi.dim() - change.dim())) for xi in noise]
        deltas = [f * xi / self.sigma**2 for f, xi in zip(factor, noise, strict=True)]
        directions = local_directions(stages, clean, deltas)
        for name, p in model.named_parameters():
            directions.setdefault(name, torch.zeros_like(p))
        errors = {st.name: d for st, d in zip(stages, deltas, strict=True)} if diagnose else {}
        return Step(get_loss(self.loss)(outputs, y), outputs, directions, errors=errors)
