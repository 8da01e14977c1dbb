"""Plateau potentials, local targets, weight updates and diagnostics (eLife Eqs. 5-10, 21-35).

From the window averages of one presentation (B examples at once; per example, as in the
paper's online protocol, and summed over the batch):

- plateaus (Eq. 21): alpha^f = sigma(mean V^a over the forward window), alpha^t likewise;
- output (Eqs. 22-28): Delta W^out = eta P_o k_d phi_max [(phi* - phi_max sigma(Vbar^f))
  * sigma'(Vbar^f)] sbar^f^T, phi* = the output's target-phase mean rate, P_o = 20/phi_max^2;
- hidden layer l (Eqs. 29-35, 38-41): Delta W^l = eta P_h k_b phi_max [(alpha^t - alpha^f)
  * sigma'(Vbar^{l,f})] sbar^{l-1,f}^T, P_h = 20/phi_max; biases take the bracket alone.

The losses are L^out = mean over outputs of (phi* - phi_max sigma(Vbar^f))^2 (as the
authors' code records it) and L^l = ||alpha^t - alpha^f||^2 (Eq. 8). Learning rates eta
stay outside (the optimizer's), so the directions returned are -Delta W / eta, summed over
the batch (B = 1 is the paper's online update).

Section numbers (§) refer to docs/models/segregated-dendrites.md.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from apical.dendrites.config import DendriteConfig
from apical.dendrites.dynamics import Params
from apical.dendrites.simulate import Averages


class Errors(NamedTuple):
    """Per-example error vectors (B, n_l) of every layer, output last: the bracket of the
    update times its factor P k phi_max; and the per-example losses (B,)."""

    errors: tuple[Tensor, ...]
    output_loss: Tensor
    hidden_loss: tuple[Tensor, ...]


def sigmoid_slope(v: Tensor) -> Tensor:
    s = torch.sigmoid(v)
    return s * (1 - s)


def errors(config: DendriteConfig, avg: Averages) -> Errors:
    """eLife Eqs. 28 and 33 per example (see the module docstring)."""
    c = config
    v_out = avg.soma_f[-1]
    miss = avg.rate_t - c.rate_max * torch.sigmoid(v_out)
    e_out = (20 * c.k_d / c.rate_max) * miss * sigmoid_slope(v_out)  # P_o k_d phi_max
    hidden, losses = [], []
    for v, a_f, a_t in zip(avg.soma_f[:-1], avg.apical_f, avg.apical_t, strict=True):
        jump = torch.sigmoid(a_t) - torch.sigmoid(a_f)
        hidden.append(20 * c.k_b * jump * sigmoid_slope(v))  # P_h k_b phi_max
        losses.append((jump**2).sum(-1))
    return Errors((*hidden, e_out), (miss**2).mean(-1), tuple(losses))


def directions(errs: Errors, avg: Averages) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """-Delta W / eta and -Delta b / eta of every layer, summed over the batch; each W's
    direction laid out as the network stores W (input-major: the transpose contiguous)."""
    weights = tuple((s.T @ -e).T for e, s in zip(errs.errors, avg.basal_f, strict=True))
    biases = tuple(-e.sum(0) for e in errs.errors)
    return weights, biases


def backprop_errors(config: DendriteConfig, params: Params, avg: Averages) -> tuple[Tensor, ...]:
    """The errors backprop would send to each hidden layer, from the same window averages
    (§9; rate approximation of eLife Eqs. 24, 26): delta^out = k_d phi_max
    sigma'(Vbar^out) (phi* - phi_max sigma(Vbar^out)), delta^l = k_b phi_max sigma'(Vbar^l)
    (W^{l+1}^T delta^{l+1}); pre-update weights."""
    c = config
    v_out = avg.soma_f[-1]
    miss = avg.rate_t - c.rate_max * torch.sigmoid(v_out)
    delta = c.k_d * c.rate_max * sigmoid_slope(v_out) * miss
    out = []
    for layer in reversed(range(len(c.hidden))):
        slope = c.k_b * c.rate_max * sigmoid_slope(avg.soma_f[layer])
        delta = slope * (delta @ params.weights[layer + 1])
        out.append(delta)
    return tuple(reversed(out))


def row_angles(a: Tensor, b: Tensor) -> Tensor:
    """Angle in degrees between matching rows (nan where a row is zero)."""
    a, b = a.double(), b.double()
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    return torch.rad2deg(torch.acos(cos.clamp(-1, 1)))


def theorem1_eigenvalue(config: DendriteConfig, params: Params, avg: Averages) -> Tensor:
    """Largest eigenvalue of (I - U)^T (I - U), U = mean over the batch of J_beta J_gamma
    (eLife Theorem 1, Fig. 5-suppl. 1; §9): J_beta = diag(phi_max
    sigma'(Vbar^out)) k_d W^out, J_gamma = diag(sigma'(Y phi_max sigma(Vbar^out))) Y, for the
    last hidden layer's feedback Y. Below 1, reducing the hidden loss reduces the output's."""
    c = config
    v_out = avg.soma_f[-1]
    w, y = params.weights[-1], params.feedback[-1]
    j_beta = (c.rate_max * sigmoid_slope(v_out))[:, :, None] * (c.k_d * w)
    j_gamma = sigmoid_slope((c.rate_max * torch.sigmoid(v_out)) @ y.T)[:, :, None] * y
    u = torch.bmm(j_beta, j_gamma).mean(0).double()
    m = torch.eye(u.shape[0], dtype=u.dtype, device=u.device) - u
    return torch.linalg.eigvalsh(m.T @ m)[-1]


def correlation(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of two (B,) vectors (nan for B < 2 or a constant vector)."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return (a * b).sum() / (a.norm() * b.norm())


# -- initialisation (§7) --------------------------------------------
V_AVG, V_SD, B_AVG, B_SD = 3.0, 3.0, 0.8, 0.001
SPREAD = 3.465  # the code's W_avg + 3.465 W_sd U(-1, 1): s.d. 2 W_sd


def init_moments(config: DendriteConfig, fan_in: int) -> tuple[float, float]:
    """(W_avg, W_sd) that put dendritic potentials at mean 3, s.d. 3 (authors' heuristic:
    presynaptic signals i.i.d. with mean nu V_avg and second moment nu^2 M, nu =
    phi_max / 4, M = V_sd^2 + V_avg^2, bias the constant b_avg)."""
    nu, n, m = config.rate_max / 4, fan_in, V_SD**2 + V_AVG**2
    w_avg = (V_AVG - B_AVG) / (n * nu * V_AVG)
    cross = nu**2 * n * (n - 1) * V_AVG**2 * w_avg**2 + 2 * n * nu * V_AVG * B_AVG * w_avg
    w_sq = (m - cross - B_AVG**2) / (n * nu**2 * m)
    return w_avg, math.sqrt(w_sq - w_avg**2)


def spread_uniform(shape, mean: float, sd: float, generator: torch.Generator | None) -> Tensor:
    return mean + SPREAD * sd * (2 * torch.rand(shape, generator=generator) - 1)


def symmetric_feedback(weights: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Y^l = the product of the transposed forward weights above layer l (Y = W^out^T for
    one hidden layer; eLife Fig. 8C-D)."""
    if len(weights) == 1:
        return ()
    out, y = [], weights[-1].T
    for w in reversed(weights[1:-1]):
        out.append(y)
        y = w.T @ y
    out.append(y)
    return tuple(reversed(out))
