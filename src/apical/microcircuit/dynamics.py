"""The microcircuit's dynamics and plasticity as pure functions over batched state.

Layer k = 1..N of pyramidal neurons (N the output), interneuron population k = 1..N-1 in
each hidden layer, paired one-to-one with the pyramids of layer k + 1. Tensors are
(batch, units); weights are (out, in) as in nn.Linear. phi is the rate function: logistic
(MNIST), or the soft rectifier 0.1 log(1 + e^(u - 3)) of the paper's regression task.

Membrane equations (Sacramento et al. 2018, Eqs. 1-3; §2 of docs/models/microcircuit.md):

    du_k/dt   = -g_l u_k + g_b (v_B,k - u_k) + g_a (v_A,k - u_k)        hidden pyramids
    du_N/dt   = -g_l u_N + g_b (v_B,N - u_N) + g_som (u_trgt - u_N)      output (target on)
    du^I_k/dt = -g_l u^I_k + g_d (v^I_k - u^I_k) + g_som (u_{k+1} - u^I_k)  interneurons
    v_B,k = W_k phi(u_{k-1}) + b_k,   v_A,k = B_k phi(u_{k+1}) + W^PI_k phi(u^I_k),
    v^I_k = W^IP_k phi(u_k) + b^IP_k,  phi(u_0) = x.

Plasticity, dendritic prediction of somatic activity (Urbanczik & Senn 2014; paper Eqs.
5-8), batch means (the paper averages over minibatches of 10):

    dW_k    ~ (phi(u_k) - phi(uhat_k)) r_{k-1}^T,  uhat_k = (basal gain) v_B,k
    dW^IP_k ~ (phi(u^I_k) - phi(uhat^I_k)) phi(u_k)^T,  uhat^I_k = g_d/(g_l+g_d) v^I_k
    dW^PI_k ~ (0 - v_A,k) phi(u^I_k)^T                     (v_rest = 0)
    dB_k    ~ (phi(u_k) - phi(B_k r_{k+1})) r_{k+1}^T        (optional top-down rule)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from apical.microcircuit.config import MicrocircuitConfig


def soft_rectifier(u: Tensor) -> Tensor:
    """phi(u) = 0.1 log(1 + exp(u - 3)) (paper, non-linear regression task)."""
    return 0.1 * F.softplus(u - 3.0)


RATES = {"logistic": torch.sigmoid, "soft_rectifier": soft_rectifier}


def rate_function(config: MicrocircuitConfig):
    return RATES[config.activation]


def potential_of_rate(config: MicrocircuitConfig, rate: Tensor) -> Tensor:
    """phi^-1: logit for the logistic function, 3 + log(e^(10 r) - 1) for the soft rectifier
    (rates clamped into phi's open range)."""
    if config.activation == "logistic":
        return torch.logit(rate.clamp(1e-6, 1 - 1e-6))
    return 3.0 + torch.log(torch.expm1(10.0 * rate.clamp_min(1e-6)))


class Params(NamedTuple):
    weights: tuple[Tensor, ...]  # W_k (n_k, n_{k-1}), k = 1..N
    biases: tuple[Tensor, ...]  # b_k (n_k,)
    ip_weights: tuple[Tensor, ...]  # W^IP_k (n_{k+1}, n_k), hidden k
    ip_biases: tuple[Tensor, ...]  # b^IP_k (n_{k+1},)
    pi_weights: tuple[Tensor, ...]  # W^PI_k (n_k, n_{k+1})
    top_down: tuple[Tensor, ...]  # B_k (n_k, n_{k+1})


class State(NamedTuple):
    """A settled presentation. `pre[k]` is the rate reaching layer k + 1's basal dendrites
    (pre[0] = x); `basal[k]` the basal prediction uhat of layer k + 1's soma; `inter_pred`
    the interneurons' dendritic prediction uhat^I; `apical` v_A per hidden layer."""

    pre: tuple[Tensor, ...]
    basal: tuple[Tensor, ...]
    soma: tuple[Tensor, ...]
    inter_pred: tuple[Tensor, ...]
    inter: tuple[Tensor, ...]
    apical: tuple[Tensor, ...]


def _linear(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    return x @ w.T if b is None else torch.addmm(b, x, w.T)


def bottom_up(config: MicrocircuitConfig, params: Params, x: Tensor) -> tuple[list, list]:
    """The bottom-up sweep: rates r_0 = x, r_k = phi(uhat_k) with uhat_k the basal
    prediction (apical silent), layer by layer. Returns (rates r_0..r_N, uhat_1..uhat_N)."""
    phi = rate_function(config)
    rates, basal = [x], []
    for gain, w, b in zip(config.basal_gains, params.weights, params.biases, strict=True):
        basal.append(gain * _linear(rates[-1], w, b))
        rates.append(phi(basal[-1]))
    return rates, basal


def settle(config: MicrocircuitConfig, params: Params, x: Tensor, target: Tensor | None) -> State:
    """The simplified dynamics (§4): every compartment at its steady state, computed in one
    bottom-up sweep (apical silent), the output nudged, u_N = (1 - lambda_N) uhat_N +
    lambda_N u_trgt (no target: u_N = uhat_N), then one top-down sweep, k = N-1..1:
    u^I_k = (1 - lambda_I) uhat^I_k + lambda_I u_{k+1}, v_A,k from phi(u_{k+1}) and
    phi(u^I_k), u_k = uhat_k + (apical gain) v_A,k. `target` holds the target potentials."""
    m, phi = config.mixing, rate_function(config)
    rates, basal = bottom_up(config, params, x)
    soma = list(basal)
    if target is not None:
        soma[-1] = torch.lerp(basal[-1], target, m.output_nudge)
    inter_pred, inter, apical = [], [], []
    for k in reversed(range(len(params.ip_weights))):  # hidden layer k + 1, 0-based k
        pred = m.inter * _linear(rates[k + 1], params.ip_weights[k], params.ip_biases[k])
        u_i = torch.lerp(pred, soma[k + 1], m.inter_nudge)
        v_a = _linear(phi(soma[k + 1]), params.top_down[k])
        v_a = v_a + _linear(phi(u_i), params.pi_weights[k])
        soma[k] = basal[k] + m.apical * v_a
        inter_pred.insert(0, pred)
        inter.insert(0, u_i)
        apical.insert(0, v_a)
    return State(tuple(rates[:-1]), tuple(basal), tuple(soma), tuple(inter_pred), tuple(inter),
                 tuple(apical))  # fmt: skip


def euler(
    config: MicrocircuitConfig,
    params: Params,
    x: Tensor,
    target: Tensor | None,
    steps: int | None = None,
    start: tuple[tuple[Tensor, ...], tuple[Tensor, ...]] | None = None,
    generator: torch.Generator | None = None,
) -> State:
    """The continuous dynamics (§5): `steps` forward-Euler steps of size dt of the membrane
    equations of the module docstring, every layer at once per step, from `start`
    (soma, interneurons) or from rest (all potentials 0); with `config.noise` = sigma, each
    soma also gets sigma sqrt(dt) N(0, 1) per step. Returns the state at the last step."""
    m, c = config.mixing, config
    dt, steps = c.dt, c.steps if steps is None else steps
    n = len(params.weights)
    batch = x.shape[0]
    if start is None:
        soma = [x.new_zeros(batch, w.shape[0]) for w in params.weights]
        inter = [x.new_zeros(batch, w.shape[0]) for w in params.ip_weights]
    else:
        soma, inter = list(start[0]), list(start[1])
    sd = c.noise * dt**0.5
    for _ in range(steps):
        pre, basal, inter_pred, apical = _inputs(config, params, x, soma, inter)
        new_soma = []
        for k, gain in enumerate(c.basal_gains):
            du = -c.g_l * soma[k] + c.g_b * (basal[k] / gain - soma[k])
            if k < n - 1:
                du = du + c.g_a * (apical[k] - soma[k])
            elif target is not None:
                du = du + c.g_som * (target - soma[k])
            u = soma[k] + dt * du
            if sd:
                u = u + sd * torch.randn(u.shape, generator=generator, dtype=u.dtype,
                                         device=u.device)  # fmt: skip
            new_soma.append(u)
        inter = [
            u_i + dt * (-c.g_l * u_i + c.g_d * (pred / m.inter - u_i) + c.g_som * (up - u_i))
            for u_i, pred, up in zip(inter, inter_pred, soma[1:], strict=True)
        ]
        soma = new_soma
    pre, basal, inter_pred, apical = _inputs(config, params, x, soma, inter)
    return State(pre, basal, tuple(soma), inter_pred, tuple(inter), apical)


def _inputs(config, params: Params, x: Tensor, soma: list, inter: list) -> tuple:
    """Dendritic potentials from the current somatic potentials: (pre, uhat, uhat^I, v_A)."""
    m, phi = config.mixing, rate_function(config)
    n = len(params.weights)
    pre = (x, *(phi(u) for u in soma[:-1]))
    layers = zip(config.basal_gains, pre, params.weights, params.biases, strict=True)
    basal = tuple(gain * _linear(r, w, b) for gain, r, w, b in layers)
    inter_pred = tuple(
        m.inter * _linear(r, w, b)
        for r, w, b in zip(pre[1:], params.ip_weights, params.ip_biases, strict=True)
    )
    apical = tuple(
        _linear(phi(soma[k + 1]), params.top_down[k]) + _linear(phi(inter[k]), params.pi_weights[k])
        for k in range(n - 1)
    )
    return pre, basal, inter_pred, apical


class Updates(NamedTuple):
    """The plasticity rules' changes (batch means) times a factor each, in the direction they
    move the weights; None where no factor was given (a tensor that does not learn)."""

    weights: tuple[Tensor | None, ...]
    biases: tuple[Tensor | None, ...]
    ip_weights: tuple[Tensor | None, ...]
    ip_biases: tuple[Tensor | None, ...]
    pi_weights: tuple[Tensor | None, ...]
    top_down: tuple[Tensor | None, ...]


Factors = tuple[float | None, ...]


def plasticity(
    config: MicrocircuitConfig,
    params: Params,
    state: State,
    forward: Factors,
    ip: Factors,
    pi: Factors,
    top_down: Factors,
    pi_state: State | None = None,
) -> Updates:
    """The four rules of the module docstring on a settled state (batch means), each
    layer's change times its factor (forward: W_k and b_k; ip: W^IP_k and b^IP_k; pi; and
    top_down: B_k). The factor multiplies the error vector before the outer product, so a
    change costs one matrix product and nothing is computed for a factor None. The W^PI
    rule reads `pi_state` where given (the presentation without target), else `state`."""
    batch, phi = state.pre[0].shape[0], rate_function(config)
    pi_state = state if pi_state is None else pi_state

    def scaled(err: Tensor, f: float) -> Tensor:
        return err * (f / batch)

    weights, biases, ip_w, ip_b, pi_w, td = ([] for _ in range(6))
    for k, f in enumerate(forward):
        e = None if f is None else scaled(phi(state.soma[k]) - phi(state.basal[k]), f)
        weights.append(None if e is None else e.T @ state.pre[k])
        biases.append(None if e is None else e.sum(0))
    for k, (f_ip, f_pi, f_td) in enumerate(zip(ip, pi, top_down, strict=True)):
        r_i = phi(state.inter[k])
        e = None if f_ip is None else scaled(r_i - phi(state.inter_pred[k]), f_ip)
        ip_w.append(None if e is None else e.T @ state.pre[k + 1])
        ip_b.append(None if e is None else e.sum(0))
        if f_pi is None:
            pi_w.append(None)
        else:
            r_pi = r_i if pi_state is state else phi(pi_state.inter[k])
            pi_w.append(scaled(-pi_state.apical[k], f_pi).T @ r_pi)
        if f_td is None:
            td.append(None)
        else:
            above, here = phi(state.soma[k + 1]), phi(state.soma[k])
            e = scaled(here - phi(_linear(above, params.top_down[k])), f_td)
            td.append(e.T @ above)
    return Updates(*(tuple(u) for u in (weights, biases, ip_w, ip_b, pi_w, td)))


def backprop_scales(config: MicrocircuitConfig, n_layers: int) -> tuple[float, ...]:
    """kappa_k / c_k per forward layer (§6): with transposed top-down weights, weak nudging and
    interneurons that predict the layer above exactly, the forward update of layer k tends
    to (kappa_k / c_k) times minus the gradient of the output loss, where c_k is layer k's
    basal gain, kappa_N = lambda_N and kappa_k = kappa_{k+1} (apical gain)(1 - lambda_I) /
    c_{k+1}."""
    m, gains = config.mixing, config.basal_gains
    kappa = [0.0] * n_layers
    kappa[-1] = m.output_nudge
    for k in reversed(range(n_layers - 1)):
        kappa[k] = kappa[k + 1] * m.apical * (1 - m.inter_nudge) / gains[k + 1]
    return tuple(kp / g for kp, g in zip(kappa, gains, strict=True))


def output_error(config: MicrocircuitConfig, basal_out: Tensor, target: Tensor) -> Tensor:
    """dL/duhat_N = phi'(uhat_N)(uhat_N - u_trgt): the gradient of the loss the forward
    updates follow as the nudging weakens (§6), L(uhat_N) = sum_i int_{u_trgt}^{uhat}
    phi'(s)(s - u_trgt) ds >= 0 (for the logistic phi: (uhat - u_trgt) phi(uhat) -
    softplus(uhat) + softplus(u_trgt)); its negative is the output error of the rules."""
    with torch.enable_grad():
        u = basal_out.detach().requires_grad_()
        (slope,) = torch.autograd.grad(rate_function(config)(u).sum(), u)
    return slope * (basal_out - target)
