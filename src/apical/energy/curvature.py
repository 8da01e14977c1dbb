"""Inference rates that the energy's curvature cannot outgrow (predictive coding).

Inference descends F (apical.energy.predictive_coding) in the value nodes x_1..x_{L-1}.
Its Hessian H is block tridiagonal (the chain rule on W&B 2017 Eqs. 2.7-2.8):

    H_ll = I + J_{l+1}^T C_{l+1} J_{l+1},   H_{l,l+1} = H_{l+1,l}^T = -J_{l+1}^T,

J_k the Jacobian of mu_k in x_{k-1} (stage k after the activation below), C_k = I below
the output and |beta| times the loss's curvature at it; left out are the terms of the
activations' second derivatives, which scale with the errors (none for piecewise-linear
activations within a piece). With g_k >= ||J_k|| (the weight map's operator norm, times the
gains of the pooling and flattening in the stage, times the largest slope of the activation
below) and c_k >= ||C_k||, v^T H v <= sum_l B_l ||v_l||^2 by 2ab <= a^2 + b^2, with

    B_l = 1 + c_{l+1} g_{l+1}^2 + g_{l+1} [node l+1 exists] + g_l [node l-1 exists].

A step of rate gamma_l <= 1 / B_l in node l therefore never raises a quadratic F (the
descent lemma with the diagonal preconditioner diag(gamma_l)): half the bound 2 / lambda_max
that a single rate must stay under, whatever the weights grow to. `node_rates` caps the
rate at that: min(gamma, 1 / B_l), a tensor computed once per learning step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from apical.energy.layered import WEIGHTS, Layered, run_stage
from apical.models import HardSigmoid

# sup |a'(u)| of the elementwise activations the layered net takes (GELU: Phi(u) + u phi(u)
# peaks at u = sqrt 2 at 1.1289)
_SLOPES: dict[type, float] = {nn.Identity: 1.0, nn.ReLU: 1.0, nn.Tanh: 1.0, nn.Hardtanh: 1.0,
                              HardSigmoid: 1.0, nn.Sigmoid: 0.25, nn.GELU: 1.129}  # fmt: skip
# the largest eigenvalue of each loss's Hessian in the output (mse: 1/2 ||o - t||^2;
# cross-entropy: diag(p) - p p^T, at most 1/2)
_LOSS_CURVATURE = {"mse": 1.0, "cross_entropy": 0.5}


def slope_bound(activation: nn.Module | None) -> float:
    """sup |a'| of an elementwise activation (1 for none)."""
    if activation is None:
        return 1.0
    if isinstance(activation, nn.LeakyReLU):
        return max(1.0, abs(activation.negative_slope))
    return _SLOPES[type(activation)]


def structural_gain(module: nn.Module) -> float:
    """An upper bound of a pooling or flattening module's operator norm (Schur's test: each
    output reads its window, each input lies in at most m windows)."""
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s = (torch.nn.modules.utils._pair(v) for v in (module.kernel_size, module.stride))
        m = math.ceil(k[0] / s[0]) * math.ceil(k[1] / s[1])
        return math.sqrt(m / (k[0] * k[1])) if isinstance(module, nn.AvgPool2d) else math.sqrt(m)
    return 1.0  # nn.Flatten


def operator_norm(layer: nn.Module, input_shape: torch.Size) -> Tensor:
    """||W||_2 of a weight layer's linear map (bias left out) on inputs of `input_shape`
    (without the batch): exact for a linear layer (the top eigenvalue of the smaller Gram
    matrix); for a convolution an upper bound, the largest singular value over the
    frequencies of its kernel's DFT on the zero-padded input's grid (a strided, padded
    convolution is a restriction of that circular one)."""
    weight = layer.weight.detach()
    if weight.dim() == 2:
        gram = weight @ weight.T if weight.shape[0] <= weight.shape[1] else weight.T @ weight
        return torch.linalg.eigvalsh(gram)[-1].clamp(min=0).sqrt()
    out_ch, in_per_group, kh, kw = weight.shape
    groups, (dh, dw) = layer.groups, layer.dilation
    dense = weight.new_zeros(out_ch, in_per_group * groups, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    o, i = out_ch // groups, in_per_group
    for g in range(groups):  # block-diagonal over groups
        rows, columns = slice(g * o, (g + 1) * o), slice(g * i, (g + 1) * i)
        dense[rows, columns, ::dh, ::dw] = weight[rows]
    padding = layer.padding
    if isinstance(padding, str):  # "valid" or "same"
        padding = (0, 0) if padding == "valid" else (dh * (kh - 1) / 2, dw * (kw - 1) / 2)
    grid = [max(math.ceil(n + 2 * p), k) for n, p, k in
            zip(input_shape[-2:], padding, dense.shape[-2:], strict=True)]  # fmt: skip
    spectrum = torch.fft.rfft2(dense, s=grid).permute(2, 3, 0, 1).flatten(0, 1)
    gram = spectrum.mH @ spectrum if out_ch >= spectrum.shape[-1] else spectrum @ spectrum.mH
    return torch.linalg.eigvalsh(gram)[..., -1].amax().clamp(min=0).sqrt()


def stage_gains(net: Layered, x: Tensor) -> list[Tensor]:
    """g_k >= ||J_k|| for stages 2..L (0-based 1..L-1): the weight map's operator norm on the
    stage's input, times its pooling and flattening gains, times the slope bound of the
    activation below. Shapes from the stages run on one example."""
    h = x[:1]
    gains = []
    for k, stage in enumerate(net.stages):
        gain = 1.0 if k == 0 else slope_bound(net.activations[k - 1])
        for m in list(stage) if isinstance(stage, nn.Sequential) else [stage]:
            if k > 0:
                gain = gain * (operator_norm(m, h.shape[1:]) if isinstance(m, WEIGHTS)
                               else structural_gain(m))  # fmt: skip
            h = run_stage(m, h)
        if k > 0:
            gains.append(gain)
        h = net.act(k, h)
    return gains


def node_rates(net: Layered, x: Tensor, gamma: float, beta: Tensor, loss: str) -> Tensor:
    """min(gamma, 1 / B_l) for each value node x_1..x_{L-1} (module docstring)."""
    with torch.no_grad():
        g = stage_gains(net, x)
        if not g:  # one stage: no node
            return x.new_empty(0)
        top = beta.abs().amax() * _LOSS_CURVATURE[loss] * slope_bound(net.activations[-1]) ** 2
        c = [torch.ones_like(top)] * (len(g) - 1) + [top]
        bounds = [1 + c[i] * g[i] ** 2 + (g[i] if i + 1 < len(g) else 0) + (g[i - 1] if i else 0)
                  for i in range(len(g))]  # fmt: skip
        return (1 / torch.stack(bounds)).clamp(max=gamma).to(x.dtype)
