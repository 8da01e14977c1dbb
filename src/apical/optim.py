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


class SparseRowsAdam(torch.optim.Adam):
    """torch's Adam (and AdamW with `decoupled_weight_decay=True`, fused where asked) that
    also takes a gradient given as a sparse tensor over rows (the active-dendrite segments,
    `apical.active_dendrites.gate_responses`). For such a parameter, on the rows r that have
    a gradient g_r at step t (Kingma & Ba 2015, Algorithm 1):

        m_r <- beta1 m_r + (1 - beta1) g_r,    v_r <- beta2 v_r + (1 - beta2) g_r^2
        p_r <- p_r - lr (m_r / (1 - beta1^t)) / (sqrt(v_r / (1 - beta2^t)) + eps)

    with weight decay as the group says (added to g_r, or p_r scaled by 1 - lr wd), and
    every other row is left as it is, its m and v included ("lazy" Adam). This equals dense
    Adam on every row that has a gradient at every step, and (without weight decay) on
    every row that never had one; a row that stops receiving one stops at once, where dense
    Adam would go on moving it for a while by its decaying momentum, and rows without a
    gradient are not decayed (docs/models/active-dendrites.md).
    """

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sparse = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    sparse.append((group, p, p.grad))
                    p.grad = None  # torch's step skips it
        super().step()
        for group, p, grad in sparse:
            p.grad = grad
            self._rows_step(group, p, grad.coalesce())
        return loss

    @torch.no_grad()
    def _rows_step(self, group: dict, p: torch.Tensor, grad: torch.Tensor) -> None:
        if grad.sparse_dim() != 1 or group["amsgrad"] or group["maximize"]:
            raise ValueError("sparse gradients must be over rows, without amsgrad or maximize")
        (beta1, beta2), lr, eps, decay = (
            group["betas"],
            group["lr"],
            group["eps"],
            group["weight_decay"],
        )
        state = self.state[p]
        if not state:  # the keys and kinds of torch's own state, so state dicts round-trip
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        rows, g = grad.indices()[0], grad.values()
        if decay and not group["decoupled_weight_decay"]:
            g = g + decay * p.index_select(0, rows)
        state["step"] += 1
        t = state["step"].double()  # bias corrections in float64, as torch computes them
        m = state["exp_avg"].index_select(0, rows).lerp_(g, 1 - beta1)
        v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(g, g, value=1 - beta2)
        state["exp_avg"].index_copy_(0, rows, m)
        state["exp_avg_sq"].index_copy_(0, rows, v)
        if decay and group["decoupled_weight_decay"]:
            p.index_copy_(0, rows, p.index_select(0, rows).mul_(1 - lr * decay))
        denom = v.sqrt_().div_((1 - beta2**t).sqrt()).add_(eps)  # in place: few temporaries
        p.index_add_(0, rows, m.div_(denom).mul_(-lr / (1 - beta1**t)))
