"""Optimisers that torch.optim does not have."""

from __future__ import annotations

import torch


class DecoupledMomentumSGD(torch.optim.Optimizer):
    """Burstprop's optimiser (NN 2021; the authors' rate-network code), per parameter p with
    direction g (its `.grad`):

        buf <- momentum * buf - lr * g
        p   <- p + buf - weight_decay * p

    The weight decay is applied at every step and is *not* scaled by the learning rate
    (unlike torch.optim.SGD's coupled decay and AdamW's lr-scaled one). A learned feedback
    tensor in its forward weight's group with the same direction gets the same increment,
    so W - Y shrinks by (1 - weight_decay) per step.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError("lr, momentum and weight_decay must be non-negative")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(p.grad, alpha=-lr)
                if decay:
                    p.mul_(1 - decay)
                p.add_(buf)
        return loss
