"""Feedback layers: forward weight W, bias b and a feedback tensor B.

Outside a learning rule a feedback layer computes and differentiates exactly like
`nn.Linear` / `nn.Conv2d`. Inside a rule's `directions` call the rule installs a
*backward path* (see `backward_path`) that decides, per layer, what carries the error
from the layer's output back to its input:

    backprop:             delta_in = W^T delta_out
    feedback alignment:   delta_in = B^T delta_out          (Lillicrap et al. 2016, Eq. 1)
    direct feedback:      delta_in = D^T e                  (Nøkland 2016, Eq. 3)

The weight and bias gradients are always the exact local ones (delta_out x^T), so a
rule changes only the signal sent down. B is stored with W's shape (so B = W gives
backprop exactly); a direct-feedback projection D has shape (n_outputs, prod(input shape)).
B is a buffer when it is fixed and a parameter when it learns (Kolen–Pollack).
Outside a rule, `feedback` and `recurrent` play no part in the forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apical.errors import ApicalError, ConfigError

SendBack = Callable[[Tensor], Tensor]


class BackwardPath(Protocol):
    """What a rule installs: for one layer and its input, the map from the gradient at the
    layer's output to the signal sent to its input; None means the exact gradient (W^T)."""

    def send_back(self, layer: FeedbackLayer, x: Tensor) -> SendBack | None: ...


# The path in force for the current call (like torch.no_grad, scoped to a `with` block
# and to the running thread or task; None outside any rule).
_PATH: ContextVar[BackwardPath | None] = ContextVar("apical_backward_path", default=None)


@contextmanager
def backward_path(path: BackwardPath | None) -> Iterator[None]:
    """Run the enclosed forward passes with `path` deciding the backward signals."""
    token = _PATH.set(path)
    try:
        yield
    finally:
        _PATH.reset(token)


@dataclass(frozen=True)
class FeedbackInit:
    """How a feedback tensor is drawn.

    distribution: "uniform" or "normal", zero mean.
    scale: standard deviation of the entries; None gives PyTorch's default forward init
        for the same fan-in (std 1/sqrt(3 fan_in), fan_in = prod(shape[1:])).
    sparsity: fraction of entries set to zero (eLife 2017 Fig. 8A uses 0.8).
    rescale: multiply the survivors by 1/(1 - sparsity) (eLife's "x5" for 80 % sparsity),
        which keeps the expected feedback input E[B^T e] of a dense matrix; the second
        moment of the entries grows to scale^2 / (1 - sparsity).
    """

    distribution: Literal["uniform", "normal"] = "uniform"
    scale: float | None = None
    sparsity: float = 0.0
    rescale: bool = True

    def __post_init__(self) -> None:
        if self.distribution not in ("uniform", "normal"):
            raise ConfigError(
                f"unknown feedback distribution {self.distribution!r}; use 'uniform' or 'normal'"
            )
        if not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"feedback sparsity must be in [0, 1), got {self.sparsity}")
        if self.scale is not None and self.scale <= 0:
            raise ConfigError(f"feedback scale must be positive, got {self.scale}")

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
        fan_in = math.prod(shape[1:])
        std = self.scale if self.scale is not None else 1.0 / math.sqrt(3.0 * fan_in)
        if self.distribution == "uniform":
            b = (torch.rand(shape, generator=generator) * 2 - 1) * (math.sqrt(3.0) * std)
        else:
            b = torch.randn(shape, generator=generator) * std
        if self.sparsity > 0:
            keep = torch.rand(shape, generator=generator) >= self.sparsity
            b = b * keep
            if self.rescale:
                b = b / (1.0 - self.sparsity)
        return b


@dataclass(frozen=True)
class FeedbackSpec:
    """The feedback tensor of a layer: how it is drawn, its shape (None: the forward
    weight's shape), and whether it learns (a parameter) or stays fixed (a buffer)."""

    init: FeedbackInit = field(default_factory=FeedbackInit)
    shape: tuple[int, ...] | None = None
    learn: bool = False


class Constrained(nn.Module):
    """A module whose parameters must keep a property an optimizer step can break (a fixed
    sparsity mask): the trainer calls `constrain_` after every step."""

    def constrain_(self) -> None:
        raise NotImplementedError


def constrain(model: nn.Module) -> None:
    """Restore the constraint of every Constrained module of `model` (after a step)."""
    for module in model.modules():
        if isinstance(module, Constrained):
            module.constrain_()


@dataclass(frozen=True)
class Through:
    """The signal at a linear layer's output sent back through `matrix` (W's shape, or
    (R, out, in) for replicas): grad @ matrix. A SendBack whose matrix a sparse backward
    can read (`sparse_linear_backward`)."""

    matrix: Tensor

    def __call__(self, grad: Tensor) -> Tensor:
        return grad @ self.matrix


# the largest fraction of nonzero output gradients at which the sparse backward is used
# (at 5 %, 2048 x 2048 and batch 256 it took about a third of the dense products' time on
# a 2-core CPU; the threshold itself was not tuned)
SPARSE_GRAD_DENSITY = 0.1


class _FeedbackFunction(torch.autograd.Function):
    """y = layer(x; W, b); backward: exact dW, db, and `send_back(delta)` for dx (through
    the nonzeros of delta alone where the caller says most are zero: `sparse_grad`)."""

    @staticmethod
    def forward(ctx, x, weight, bias, layer, send_back, sparse_grad=False):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.layer, ctx.send_back, ctx.has_bias = layer, send_back, bias is not None
        ctx.sparse_grad = sparse_grad
        return layer._compute(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        need_b = need_b and ctx.has_bias
        if ctx.sparse_grad and grad.dim() == 2 and weight.dim() == 2:
            grads = sparse_linear_backward(grad, x, ctx.send_back, need_x, need_w, need_b)
            if grads is not None:
                return *grads, None, None, None
        gw, gb = ctx.layer._local_grads(grad, x, weight, need_w, need_b)
        gx = ctx.send_back(grad) if need_x else None
        return gx, gw, gb, None, None, None


def sparse_linear_backward(
    grad: Tensor, x: Tensor, send_back: SendBack, need_x: bool, need_w: bool, need_b: bool
) -> tuple[Tensor | None, Tensor | None, Tensor | None] | None:
    """dx, dW, db of a linear layer from the nonzero entries of its output gradient delta
    (N, out), or None when more than SPARSE_GRAD_DENSITY of them are nonzero. Each product
    sums rows over the nonzeros alone (embedding_bag; the output of k-winners-take-all has
    5 % of the units of a row):

        dW_u = sum_n delta_nu x_n       per unit u, the rows of x of its nonzeros
        dx_n = sum_u delta_nu M_u       per example n, the rows of M (W's shape) of its
                                        nonzeros; M = send_back's matrix (W for the exact
                                        gradient); any other send_back gets delta itself

    The same sums as the dense products in another order (equal to rounding)."""
    rows, units = grad.nonzero(as_tuple=True)  # by example, then unit
    if rows.numel() > SPARSE_GRAD_DENSITY * grad.numel():
        return None
    values = grad[rows, units]
    gw = gx = None
    if need_w:
        order = torch.argsort(units, stable=True)  # by unit, then example
        gw = _row_sums(x, rows[order], units, grad.shape[1], values[order])
    if need_x:
        matrix = send_back.matrix if isinstance(send_back, Through) else None
        if matrix is not None and matrix.dim() == 2:
            gx = _row_sums(matrix, units, rows, grad.shape[0], values)
        else:
            gx = send_back(grad)
    gb = grad.sum(0) if need_b else None
    return gx, gw, gb


def _row_sums(table: Tensor, picks: Tensor, bags: Tensor, n_bags: int, weights: Tensor) -> Tensor:
    """out_j = sum of weights_i table[picks_i] over the i with bags_i = j, for `picks` sorted
    by bag (n_bags rows; a bag without picks sums to zero)."""
    offsets = torch.zeros(n_bags, dtype=torch.long, device=table.device)
    offsets[1:] = torch.bincount(bags, minlength=n_bags)[:-1].cumsum(0)
    return F.embedding_bag(picks, table.detach().contiguous(), offsets, mode="sum",
                           per_sample_weights=weights)  # fmt: skip


class FeedbackLayer(nn.Module):
    """Shared behaviour of FeedbackLinear and FeedbackConv2d.

    position: "hidden" or "output" (set by `apical.convert` from the forward order); it
    selects the optimizer parameter group (see `apical.param_groups`).
    recurrent: an optional lateral matrix Z (n x n, or C x C for a conv layer) for rules
    that use one (burstprop's dendrite-targeting inhibition); a buffer changed only by
    the rule's `after_step`.
    """

    weight: nn.Parameter
    bias: nn.Parameter | None
    feedback: Tensor | None
    recurrent: Tensor | None
    position: str

    def _init_feedback(
        self,
        spec: FeedbackSpec | None,
        recurrent: FeedbackSpec | None,
        generator: torch.Generator | None,
    ) -> None:
        self.position = "hidden"
        for name, s in (("feedback", spec), ("recurrent", recurrent)):
            if s is None:
                self.register_buffer(name, None)
                continue
            t = s.init.draw(tuple(s.shape or self.weight.shape), generator)
            t = t.to(self.weight.device, self.weight.dtype)
            if s.learn:
                setattr(self, name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)

    @property
    def replicas(self) -> int | None:
        """Number of independent replicas stacked in this layer (apical.replicas), or None."""
        return None

    @property
    def learns_feedback(self) -> bool:
        return isinstance(self.feedback, nn.Parameter)

    def forward(self, x: Tensor, sparse_grad: bool = False) -> Tensor:
        """`sparse_grad`: the caller's word that most of the gradient at the output will be
        zero (a k-winners-take-all after it), so the backward works from its nonzeros
        (`sparse_linear_backward`; linear layers, rows of 2-d inputs)."""
        path = _PATH.get()
        # no error is sent into an input that needs none (the data): exact local gradients
        needs_path = path is not None and x.requires_grad
        send_back = path.send_back(self, x) if needs_path else None
        own_backward = self.replicas is not None or sparse_grad  # even for the exact gradient
        if send_back is None and own_backward and torch.is_grad_enabled():
            # exact gradients; for replicas with dW = delta^T x in the orientation batched
            # matrix products are fast in (autograd's baddbmm backward computes (x^T delta)^T)
            send_back = self.through(self.weight, x)
        if send_back is None:
            return self._compute(x, self.weight, self.bias)
        return _FeedbackFunction.apply(x, self.weight, self.bias, self, send_back, sparse_grad)

    def through(self, matrix: Tensor, x: Tensor) -> SendBack:
        """The map that sends a signal at the layer's output through `matrix` (W's shape)
        instead of W to the shape of its input `x`; any batch size (only x's per-example
        shape is used)."""
        raise NotImplementedError

    def _compute(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _local_grads(self, grad, x, weight, need_w, need_b):
        raise NotImplementedError


class FeedbackLinear(FeedbackLayer):
    """nn.Linear with an optional feedback tensor (by default of W's shape, (out, in))."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        feedback: FeedbackSpec | None = None,
        recurrent: FeedbackSpec | None = None,
        generator: torch.Generator | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        base = nn.Linear(in_features, out_features, bias, device=device, dtype=dtype)
        self.in_features, self.out_features = in_features, out_features
        self.weight, self.bias = base.weight, base.bias
        self._init_feedback(feedback, recurrent, generator)

    @property
    def replicas(self) -> int | None:
        return self.weight.shape[0] if self.weight.dim() == 3 else None

    def extra_repr(self) -> str:
        fb = None if self.feedback is None else tuple(self.feedback.shape)
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, feedback={fb}, position={self.position}"
        )

    def _compute(self, x, weight, bias):
        if weight.dim() == 3:  # replicas: x (R, N, in), W (R, out, in)
            if bias is None:
                return torch.bmm(x, weight.mT)
            return torch.baddbmm(bias.unsqueeze(1), x, weight.mT)
        return F.linear(x, weight, bias)

    def _local_grads(self, grad, x, weight, need_w, need_b):
        if weight.dim() == 3:  # replicas: sums over each replica's batch
            gw = grad.mT @ x if need_w else None
            gb = grad.sum(1) if need_b else None
            return gw, gb
        g2 = grad.reshape(-1, grad.shape[-1])
        gw = g2.T @ x.reshape(-1, x.shape[-1]) if need_w else None
        gb = g2.sum(0) if need_b else None
        return gw, gb

    def through(self, matrix: Tensor, x: Tensor) -> SendBack:
        return Through(matrix)  # also (S, R, N, out) @ (R, out, in) for replicas


def _numeric_padding(padding: str, kernel_size, dilation) -> tuple[int, int]:
    """'valid' -> 0; 'same' -> the symmetric padding that keeps the size at stride 1."""
    if padding == "valid":
        return (0, 0)
    total = [d * (k - 1) for k, d in zip(kernel_size, dilation, strict=True)]
    if any(t % 2 for t in total):
        raise ApicalError(
            f"padding='same' with kernel {tuple(kernel_size)} and dilation {tuple(dilation)} "
            "pads unevenly, which FeedbackConv2d does not support; pad explicitly instead"
        )
    return (total[0] // 2, total[1] // 2)


class FeedbackConv2d(FeedbackLayer):
    """nn.Conv2d (zero padding) with a feedback kernel B of the weight's shape by default.

    Sending the error through B is the transposed convolution with B, which restores the
    input's shape (`convolution_backward` with B in place of W)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        *,
        feedback: FeedbackSpec | None = None,
        recurrent: FeedbackSpec | None = None,
        generator: torch.Generator | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        base = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            device=device, dtype=dtype,
        )  # fmt: skip
        if isinstance(base.padding, str):
            base.padding = _numeric_padding(base.padding, base.kernel_size, base.dilation)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = base.kernel_size, base.stride
        self.padding, self.dilation, self.groups = base.padding, base.dilation, groups
        self.weight, self.bias = base.weight, base.bias
        self._init_feedback(feedback, recurrent, generator)

    def extra_repr(self) -> str:
        fb = None if self.feedback is None else tuple(self.feedback.shape)
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, feedback={fb}, "
            f"position={self.position}"
        )

    @property
    def replicas(self) -> int | None:
        return self.weight.shape[0] if self.weight.dim() == 5 else None

    # Replicas (apical.replicas): W (R, out, in/g, kh, kw), x (R, N, C, H, W). They run as
    # one grouped convolution with the replicas' channels side by side: x (N, R C, H, W),
    # W (R out, in/g, kh, kw), R g groups; replica r's output channels are block r.
    def _fold(self, t: Tensor) -> Tensor:
        """(R, N, C, H, W) -> (N, R C, H, W)."""
        return t.transpose(0, 1).flatten(1, 2)

    def _unfold(self, t: Tensor, r: int) -> Tensor:
        """(N, R C, H, W) -> (R, N, C, H, W)."""
        return t.unflatten(1, (r, -1)).transpose(0, 1)

    def _groups(self, weight: Tensor) -> int:
        return self.groups * (weight.shape[0] if weight.dim() == 5 else 1)

    def _compute(self, x, weight, bias):
        if weight.dim() == 5:
            r = weight.shape[0]
            b = None if bias is None else bias.flatten()
            y = F.conv2d(self._fold(x), weight.flatten(0, 1), b, self.stride, self.padding,
                         self.dilation, self._groups(weight))  # fmt: skip
            return self._unfold(y, r)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def _conv_backward(self, grad, x, weight, mask):
        bias_sizes = [weight.shape[0]] if mask[2] else None
        return torch.ops.aten.convolution_backward(
            grad, x, weight, bias_sizes, list(self.stride), list(self.padding),
            list(self.dilation), False, [0, 0], self.groups, mask,
        )  # fmt: skip

    def _folded_backward(self, grad, folded_x, weight, mask):
        """convolution_backward of replicas (`folded_x`: the input folded as in `_compute`;
        the results unfolded)."""
        r = weight.shape[0]
        flat = weight.flatten(0, 1)
        bias_sizes = [flat.shape[0]] if mask[2] else None
        gx, gw, gb = torch.ops.aten.convolution_backward(
            self._fold(grad), folded_x, flat, bias_sizes, list(self.stride),
            list(self.padding), list(self.dilation), False, [0, 0], self._groups(weight), mask,
        )  # fmt: skip
        return (
            None if gx is None else self._unfold(gx, r),
            None if gw is None else gw.unflatten(0, (r, -1)),
            None if gb is None else gb.unflatten(0, (r, -1)),
        )

    def _local_grads(self, grad, x, weight, need_w, need_b):
        if not (need_w or need_b):
            return None, None
        if weight.dim() == 5:
            _, gw, gb = self._folded_backward(grad, self._fold(x), weight, [False, need_w, need_b])
        else:
            _, gw, gb = self._conv_backward(grad, x, weight, [False, need_w, need_b])
        return gw, gb

    def through(self, matrix: Tensor, x: Tensor) -> SendBack:
        if matrix.dim() == 5:  # replicas: grad (R, M, out, H', W') -> (R, M, C, H, W)

            def send_replicas(grad: Tensor) -> Tensor:
                r, m, c = grad.shape[0], grad.shape[1], x.shape[2]  # only sizes are read
                like = grad.new_empty(1).expand(m, r * c, *x.shape[3:])
                return self._folded_backward(grad, like, matrix, [True, False, False])[0]

            return send_replicas

        def send(grad: Tensor) -> Tensor:
            lead = grad.shape[:-3]  # any leading dimensions, flattened into the batch
            grad = grad.reshape(-1, *grad.shape[-3:])
            like = grad.new_empty(1).expand(grad.shape[0], *x.shape[1:])  # only its size is read
            out = self._conv_backward(grad, like, matrix, [True, False, False])[0]
            return out.reshape(*lead, *out.shape[1:])

        return send
