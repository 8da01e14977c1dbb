"""Optimisers that torch.optim does not have."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RowsChanged:
    """What `SparseRowsAdam`'s last step changed in a parameter: `rows`, taking the
    tensor from version `before` to version `after` (its `_version` counter). Set as the
    parameter's `rows_changed`, so that what was computed from the other rows can be kept
    (`apical.active_dendrites.KeptResponses`)."""

    before: int
    after: int
    rows: torch.Tensor


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
        """Adam on the rows of a sparse gradient: the rows of p, m and v gathered, updated
        by torch's own fused Adam (AdamW) kernel, written back."""
        if grad.sparse_dim() != 1 or group["amsgrad"] or group["maximize"]:
            raise ValueError("sparse gradients must be over rows, without amsgrad or maximize")
        state = self.state[p]
        if not state:  # the keys and kinds of torch's own state, so state dicts round-trip
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        rows, g = grad.indices()[0], grad.values()
        before = p._version
        tensors = [p, state["exp_avg"], state["exp_avg_sq"]]
        w, m, v = (t.index_select(0, rows) for t in tensors)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        fused = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
        fused([w], [g.contiguous()], [m], [v], [], [state["step"]], amsgrad=False,
              lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
              eps=group["eps"], maximize=False, grad_scale=None, found_inf=None)  # fmt: skip
        for t, rows_now in zip(tensors, (w, m, v), strict=True):
            t.index_copy_(0, rows, rows_now)
        p.rows_changed = RowsChanged(before, p._version, rows)
