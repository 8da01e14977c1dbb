"""Predictive coding (Whittington & Bogacz 2017, Neural Comput 29:1229) and Z-IL (Song,
Lukasiewicz, Xu & Bogacz 2020, NeurIPS 33) on a layered network (apical.energy.layered).

Value nodes x_1..x_{L-1} (one per hidden stage, pre-activations); x_0 is the input.
Predictions and errors (W&B 2017 Eqs. 2.7-2.8, in the stage notation):

    mu_l = stage_l(a_{l-1}(x_{l-1})),   eps_l = x_l - mu_l,
    F_beta = sum_{l<L} 1/2 ||eps_l||^2 + beta * loss(a_L(mu_L), y)          (per example)

The output is not a node: its energy is the training loss of the prediction, weighted by
beta (beta = 1 with the squared error and a linear read-out is W&B's clamped output,
1/2 ||y - mu_L||^2; the cross-entropy energy of the pcx benchmark is the same with the
cross-entropy loss; beta < 0 is its negative nudging). Inference (W&B Eq. 2.9) is gradient
descent on F with rate gamma from the feed-forward pass (eps = 0 below the output):

    x_l <- x_l - gamma dF/dx_l = x_l - gamma (eps_l - J_{l+1}^T eps_{l+1}),

J_{l+1} the Jacobian of mu_{l+1} in x_l (a'(x_l) W^T for a linear stage); gamma may differ
per node (apical.energy.curvature: capped where the energy's curvature would make one rate
diverge as the weights grow). Learning (Eq.
2.10) descends F in the weights at the end of inference: dF/dW_l = -eps_l a(x_{l-1})^T, a
local Hebbian product. Both are computed as written (each stage's transposed product and
its layer's local product; autograd only inside a stage where pooling follows the weight
layer), so a step costs a forward and a transposed product per stage, and the weight
gradient no forward pass at all. With no target (beta = 0) the feed-forward pass is the minimum
(eps = 0 everywhere), so a trained network is read out by one forward pass.

Z-IL: with gamma = 1, inference from the feed-forward pass, and the weights of stage l
taken after L - l inference steps, eps_l equals backprop's -dloss/du_l and the updates are
backprop's gradient exactly (Song et al. 2020, Theorem 1).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from apical.compiled import compile_step
from apical.energy.layered import Layered, run_stage
from apical.energy.relax import States, gradient, per_example, relax, slope, vjp
from apical.layers import FeedbackLayer
from apical.losses import per_example_loss


def prediction(net: Layered, x: Tensor, nodes: States, k: int) -> Tensor:
    """mu_{k+1} (0-based stage k) from the input or the value node below."""
    return net.stage(k, net.act(k - 1, nodes[k - 1]) if k else x)


def predictions(net: Layered, x: Tensor, nodes: States) -> States:
    """mu_1..mu_L from the input and the value nodes x_1..x_{L-1}."""
    return [prediction(net, x, nodes, k) for k in range(net.depth)]


def stage_energy(net: Layered, x: Tensor, nodes: States, y: Tensor, beta: Tensor, loss: str,
                 k: int) -> Tensor:  # fmt: skip
    """Stage k's term of F_beta per example: 1/2 ||eps||^2, or beta * loss at the output."""
    mu = prediction(net, x, nodes, k)
    if k < net.depth - 1:
        return 0.5 * per_example((nodes[k] - mu).pow(2))
    return beta * per_example_loss(loss, net.act(k, mu), y)


def layer_energies(
    net: Layered, x: Tensor, nodes: States, y: Tensor, beta: Tensor, loss: str
) -> list[Tensor]:
    """Per stage and example: 1/2 ||eps_l||^2 (l < L) and beta * loss (the output)."""
    return [stage_energy(net, x, nodes, y, beta, loss, k) for k in range(net.depth)]


def prediction_errors(
    net: Layered,
    x: Tensor,
    nodes: States,
    y: Tensor,
    beta: Tensor,
    loss: str,
    mus: States | None = None,
) -> list[Tensor]:
    """dF_beta / dmu_l per example at fixed nodes: mu_l - x_l (= -eps_l) below the output,
    beta dloss/dmu_L at it; a stage's error signal, whose product with its input is its
    weight gradient. `mus`: the predictions at `nodes` where already computed."""
    nodes = [n.detach() for n in nodes]
    mus = [m.detach() for m in (predictions(net, x, nodes) if mus is None else mus)]

    def top(mu: Tensor) -> Tensor:
        return (beta * per_example_loss(loss, net.act(net.depth - 1, mu), y)).sum()

    return [*(m - n for m, n in zip(mus, nodes, strict=False)), gradient(top, mus[-1])]


def act_and_slope(net: Layered, k: int, u: Tensor) -> tuple[Tensor, Tensor]:
    """a_k(u) and its elementwise derivative a_k'(u)."""
    f = net.activations[k]
    return (u, torch.ones_like(u)) if f is None else slope(f, u)


Send = Callable[[Tensor], Tensor]


def stage_and_transpose(
    net: Layered, k: int, h: Tensor, forward: bool
) -> tuple[Tensor | None, Send]:
    """stage_k(h) (None where not `forward` and it can be left out) and the map
    e -> (d stage_k / dh)^T e at `h`: a feedback layer's own product and transposed product
    (W^T e for a linear stage), the stage's vector-Jacobian product otherwise."""
    stage = net.stages[k]
    if isinstance(stage, FeedbackLayer):
        mu = stage._compute(h, stage.weight, stage.bias) if forward else None
        return mu, stage.through(stage.weight, h)
    return vjp(lambda h: run_stage(stage, h), h)


def inference_step(
    net: Layered,
    x: Tensor,
    nodes: States,
    y: Tensor,
    beta: Tensor,
    loss: str,
    gamma: float | Tensor,
    mus: States | None = None,
) -> States:
    """W&B 2017 Eq. 2.9 written out, every node from the same previous state:

        x_l <- x_l - gamma_l (-e_l + a_l'(x_l) * J_{l+1}^T e_{l+1}),  e_l = dF/dmu_l,

    the prediction errors e of `prediction_errors` (`mus`: the predictions at `nodes` where
    known, as at the feed-forward pass) sent down by each stage's transposed map. `gamma`:
    one rate, or a tensor of one per node (apical.energy.curvature.node_rates)."""
    new_mus, sends = [net.stage(0, x)], []
    for k in range(1, net.depth):
        a, slope = act_and_slope(net, k - 1, nodes[k - 1])
        mu, send = stage_and_transpose(net, k, a, forward=mus is None)
        new_mus.append(mu)
        sends.append((slope, send))
    errors = prediction_errors(net, x, nodes, y, beta, loss, new_mus if mus is None else mus)
    rates = gamma.unbind() if isinstance(gamma, Tensor) else [gamma] * len(nodes)
    per_node = zip(nodes, rates, errors[:-1], errors[1:], sends, strict=True)
    return [n - rate * (slope * send(above) - e) for n, rate, e, above, (slope, send) in per_node]


def stage_gradients(
    net: Layered, x: Tensor, nodes: States, errors: list[Tensor], weights: Tensor
) -> list[dict[str, Tensor]]:
    """d/dtheta of sum_n weights_n F_beta,n at fixed nodes, per stage by the name of the
    parameter in the stage: the product of the stage's error signal (`prediction_errors`)
    with its input, W&B Eq. 2.10 (dF/dW_l = -eps_l a(x_{l-1})^T for a linear stage); the
    weight layer's own local gradient (no forward pass again), or autograd through the stage
    where modules follow its weight layer."""
    out = []
    for k, e in enumerate(errors):
        h = x if k == 0 else net.act(k - 1, nodes[k - 1].detach())
        cotangent = e * weights.view(-1, *[1] * (e.dim() - 1))
        found = net.weight_input(k, h)
        stage = net.stages[k]
        if found is not None and isinstance(found[0], FeedbackLayer):
            layer, h = found
            prefix = f"{len(stage) - 1}." if isinstance(stage, nn.Sequential) else ""
            has_bias = layer.bias is not None and layer.bias.requires_grad
            gw, gb = layer._local_grads(cotangent, h, layer.weight, True, has_bias)
            out.append({f"{prefix}weight": gw} | ({f"{prefix}bias": gb} if has_bias else {}))
            continue
        params = {n: p for n, p in stage.named_parameters() if p.requires_grad}
        with torch.enable_grad():
            grads = torch.autograd.grad(run_stage(stage, h), list(params.values()), cotangent)
        out.append(dict(zip(params, grads, strict=True)))
    return out


def energy(net: Layered, x: Tensor, nodes: States, y: Tensor, beta: Tensor, loss: str) -> Tensor:
    """F_beta per example."""
    return torch.stack(layer_energies(net, x, nodes, y, beta, loss)).sum(0)


def infer(
    net: Layered,
    x: Tensor,
    y: Tensor,
    beta: Tensor,
    loss: str,
    gamma: float | Tensor,
    steps: int,
    tol: float | None = None,
    nodes: States | None = None,
    feedforward: States | None = None,
) -> tuple[States, int]:
    """Value nodes after inference from `nodes` (else from the feed-forward pass, computed
    here unless given as `feedforward`, its pre-activations u_1..u_L), and the steps taken:
    `steps` inference steps of rate gamma (one, or one per node), or fewer where no node
    moved by more than `tol`."""
    with torch.no_grad():
        mus = None
        if nodes is None:
            feedforward = net.feedforward(x) if feedforward is None else feedforward
            nodes, mus = feedforward[:-1], feedforward
        # stage_1(x) is the feed-forward u_1 where that is at hand
        clamped = net.with_input(x) if feedforward is None else net._replace(first=feedforward[0])
        if not nodes:  # one stage: nothing to infer
            return [], 0

        def step(nodes: States, mus: States | None = None) -> States:
            return inference_step(clamped, x, nodes, y, beta, loss, gamma, mus)

        if mus is None or steps == 0:
            return relax(step, nodes, steps, tol)
        # the first step from the feed-forward pass, whose predictions are known (with
        # `tol`, its change is not checked: at most one step more)
        nodes, taken = relax(step, step(nodes, mus), steps - 1, tol)
        return nodes, taken + 1


class Learned(NamedTuple):
    """One learning step: the feed-forward output u_L, the relaxed value nodes, the inference
    steps taken, the error signals there and the stages' weight gradients."""

    output: Tensor
    nodes: States
    taken: int
    errors: list[Tensor]
    gradients: list[dict[str, Tensor]]


def learn(
    net: Layered,
    x: Tensor,
    y: Tensor,
    beta: Tensor,
    weights: Tensor,
    loss: str,
    gamma: float | Tensor,
    steps: int,
    tol: float | None = None,
    compiled: bool = False,
) -> Learned:
    """Feed-forward pass, inference from it, and d/dtheta of sum_n weights_n F_beta,n at the
    relaxed nodes. `compiled`: all of it one torch.compile'd function (fixed steps; compiled
    on first use, again per net, shapes and constants: torch.compile's cache and guards)."""
    if compiled:
        return _compiled()(net, x, y, beta, weights, loss, gamma, steps)
    return _learn(net, x, y, beta, weights, loss, gamma, steps, tol)


def _learn(net: Layered, x: Tensor, y: Tensor, beta: Tensor, weights: Tensor, loss: str,
           gamma: float | Tensor, steps: int, tol: float | None = None) -> Learned:  # fmt: skip
    with torch.no_grad():
        feedforward = net.feedforward(x)
        nodes, taken = infer(net, x, y, beta, loss, gamma, steps, tol, feedforward=feedforward)
        clamped = net._replace(first=feedforward[0])
        errors = prediction_errors(clamped, x, nodes, y, beta, loss)
        gradients = stage_gradients(net, x, nodes, errors, weights)
    return Learned(feedforward[-1], nodes, taken, errors, gradients)


@functools.cache
def _compiled() -> Callable:
    """`_learn` compiled, made on first use (wrapping it imports the compiler, seconds that
    every `import apical` would pay)."""
    return compile_step(_learn)


def zero_divergence_gradients(
    net: Layered, x: Tensor, y: Tensor, loss: str, params_by_stage: list[list[Tensor]]
) -> list[list[Tensor]]:
    """Z-IL: per stage, the gradient of its own energy term in its own parameters after
    L - l inference steps at rate 1 (batch sum; divide by N for the batch mean)."""
    beta = torch.ones(len(x), dtype=x.dtype, device=x.device)
    with torch.no_grad():
        nodes, clamped = net.feedforward(x)[:-1], net.with_input(x)
    out: list[list[Tensor]] = [[] for _ in net.stages]
    for t in range(net.depth):
        k = net.depth - 1 - t  # the stage whose error is exact after t steps
        fixed = [n.detach() for n in nodes]
        with torch.enable_grad():
            term = stage_energy(net, x, fixed, y, beta, loss, k).sum()
            out[k] = list(torch.autograd.grad(term, params_by_stage[k]))
        if t < net.depth - 1:
            with torch.no_grad():
                nodes = inference_step(clamped, x, fixed, y, beta, loss, 1.0)
    return out
