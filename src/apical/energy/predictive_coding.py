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

J_{l+1} the Jacobian of mu_{l+1} in x_l (a'(x_l) W^T for a linear stage). Learning (Eq.
2.10) descends F in the weights at the end of inference: dF/dW_l = -eps_l a(x_{l-1})^T, a
local Hebbian product. With no target (beta = 0) the feed-forward pass is the minimum
(eps = 0 everywhere), so a trained network is read out by one forward pass.

Z-IL: with gamma = 1, inference from the feed-forward pass, and the weights of stage l
taken after L - l inference steps, eps_l equals backprop's -dloss/du_l and the updates are
backprop's gradient exactly (Song et al. 2020, Theorem 1).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from apical.compiled import compile_step
from apical.energy.layered import Layered
from apical.energy.relax import States, per_example, relax, state_gradient
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
    net: Layered, x: Tensor, nodes: States, y: Tensor, beta: Tensor, loss: str
) -> list[Tensor]:
    """dF_beta / dmu_l per example at fixed nodes: mu_l - x_l (= -eps_l) below the output,
    beta dloss/dmu_L at it; a stage's error signal, whose product with its input is its
    weight gradient."""
    with torch.no_grad():
        out = [prediction(net, x, nodes, k) - nodes[k] for k in range(net.depth - 1)]
    with torch.enable_grad():
        mu = prediction(net, x, [n.detach() for n in nodes], net.depth - 1).detach()
        mu.requires_grad_(True)
        top = (beta * per_example_loss(loss, net.act(net.depth - 1, mu), y)).sum()
        (grad,) = torch.autograd.grad(top, mu)
    return [*out, grad]


def energy(net: Layered, x: Tensor, nodes: States, y: Tensor, beta: Tensor, loss: str) -> Tensor:
    """F_beta per example."""
    return torch.stack(layer_energies(net, x, nodes, y, beta, loss)).sum(0)


def infer(
    net: Layered,
    x: Tensor,
    y: Tensor,
    beta: Tensor,
    loss: str,
    gamma: float,
    steps: int,
    tol: float | None = None,
    nodes: States | None = None,
    compiled: bool = False,
    feedforward: States | None = None,
) -> tuple[States, int]:
    """Value nodes after inference from `nodes` (else from the feed-forward pass, computed
    here unless given as `feedforward`, its pre-activations u_1..u_L), and the steps taken.
    `compiled`: the whole fixed-step loop as one torch.compile'd function
    (`compiled_inference`; not with `tol`)."""
    with torch.no_grad():
        if nodes is None:
            feedforward = net.feedforward(x) if feedforward is None else feedforward
            nodes = feedforward[:-1]
        # stage_1(x) is the feed-forward u_1 where that is at hand
        clamped = net.with_input(x) if feedforward is None else net._replace(first=feedforward[0])
    if not nodes:  # one stage: nothing to infer
        return [], 0
    if compiled:  # fixed steps (the rule refuses compiled with tol)
        nodes = [n.detach() for n in nodes]
        return compiled_inference(clamped, x, nodes, y, beta, loss, gamma, steps), steps

    def step(nodes: States) -> States:
        grads = state_gradient(lambda s: energy(clamped, x, s, y, beta, loss).sum(), nodes, False)
        return torch._foreach_sub([n.detach() for n in nodes], grads, alpha=gamma)

    return relax(step, nodes, steps, tol)


def _inference(net: Layered, x: Tensor, nodes: States, y: Tensor, beta: Tensor, loss: str,
               gamma: float, steps: int) -> States:  # fmt: skip
    """`steps` inference steps at rate gamma, the gradient by torch.func (traceable)."""
    gradient = torch.func.grad(lambda s: energy(net, x, s, y, beta, loss).sum())
    for _ in range(steps):
        nodes = [n - gamma * g for n, g in zip(nodes, gradient(nodes), strict=True)]
    return nodes


@functools.cache
def _compiled() -> Callable:
    """`_inference` compiled, made on first use (wrapping it imports the compiler, seconds
    that every `import apical` would pay); then compiled once per net, shapes and constants
    (torch.compile's own cache and guards)."""
    return compile_step(_inference)


def compiled_inference(*args):
    return _compiled()(*args)


def weight_gradients(
    net: Layered,
    x: Tensor,
    nodes: States,
    y: Tensor,
    beta: Tensor,
    loss: str,
    params: list[Tensor],
    weights: Tensor,
) -> list[Tensor]:
    """d/dtheta of sum_n weights_n F_beta,n at fixed nodes (every parameter in `params`)."""
    nodes = [n.detach() for n in nodes]
    with torch.enable_grad():
        total = (weights * energy(net, x, nodes, y, beta, loss)).sum()
        return list(torch.autograd.grad(total, params, allow_unused=True))


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
            grads = state_gradient(
                lambda s: energy(clamped, x, s, y, beta, loss).sum(), nodes, False
            )
            nodes = torch._foreach_sub(fixed, grads)
    return out
