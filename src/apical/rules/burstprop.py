"""Burstprop: burst-dependent plasticity in deep rate networks (Payeur, Guerguiev, Zenke,
Richards & Naud, Nature Neuroscience 24:1010–1019, 2021; "NN" below).

Ensemble form of NN Eq. 2, dW/dt = eta (p - p_bar) e_post e_pre, as the deep networks use
it: the same input is evaluated without teacher (p) and with teacher (p^t), and

    dW_l  ∝  (b_l^t - b_l) e_{l-1}^T = [(p_l^t - p_l) * e_l] e_{l-1}^T.

Per layer l (L = output), following NN Methods and the authors' rate-network code:

- events, bottom-up:      e_l = f(v_l), v_l = W_l e_{l-1} + c_l; h(e) = f'(v)/e
                          (1 - e for the logistic, 1[e > 0]/e for ReLU);
- output, logistic + squared error:  b_L = p_b e_L,
                          b_L^t - b_L = p_b f'(v_L) (t - e_L)   (= -p_b dL/dv_L);
- output, softmax + cross-entropy (small kappa):  a = softmax(v_L), b_L = p_b a,
                          b_L^t = min(p_b [1 + kappa (t - a)/a], 1) a, and what is sent down
                          and learned from is (b_L^t - b_L)/kappa, computed in closed form as
                          min(p_b (t - a), (1 - p_b) a / kappa)  (≈ -p_b dCE/dv_L);
- feedback to layer l:    g_l = Y_l b_{l+1}, g_l^t = Y_l b_{l+1}^t, Y_l = B_{l+1}^T stored
                          with W_{l+1}'s shape (a transposed convolution for conv layers);
- recurrent inhibition:   b~_l = sigmoid(g_l) e_l; u_l = h(e_l) g_l - Z_l b~_l,
                          u_l^t = h(e_l) g_l^t - Z_l b~_l;
- burst probability:      p_l = sigmoid(beta u_l), p_l^t = sigmoid(beta u_l^t);
                          b_l = p_l e_l, b_l^t = p_l^t e_l;
- Z rule (after the step): dZ_l = eta_Z u_l b~_l^T, gradient descent on 1/2 ||u_l||^2,
                          which drives the no-teacher apical potential towards zero (for
                          the optional conv Z, a C x C 1x1 convolution, averaged over
                          positions);
- learned feedback:       Y receives W's increment (same direction, same optimizer
                          group: momentum and weight decay alike), as in the paper;
- `symmetric`:            Y = W at the start (the "symmetric feedback" of the CCN 2022
                          re-run; with learned feedback Y then stays equal to W).

Near u = 0, sigmoid' = 1/4, so b_l^t - b_l ≈ (beta/4) f'(v_l) Y_l (b_{l+1}^t - b_{l+1}):
with Y = W^T the update is p_b (beta/4)^(L-l) times the backprop gradient. With
`linearize=True` the burst function is replaced by its linearisation 1/2 + beta u/4, and
that identity is exact for any Z. `rescale=True` (not in the paper, which has one rate for
every hidden layer) divides layer l's direction by (beta/4)^(L-l), so that in that limit
every layer's update is p_b times backprop's gradient; what travels down is unchanged.

Batch reduction: **sum** over the batch (as in the authors' code since June 2021), so
learning rates are not comparable with the batch-mean rules; the paper configs use the
decoupled optimiser `apical.optim.DecoupledMomentumSGD`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from apical.errors import ApicalError, ConfigError
from apical.layers import FeedbackConv2d, FeedbackInit, FeedbackLayer, FeedbackSpec
from apical.losses import get_loss
from apical.rules.base import LowRank, Rule, Step, require_feedback, weight_direction
from apical.rules.chain import (
    Record,
    Stage,
    derivative,
    local_directions,
    model_chain,
    run_chain,
)


def _h(kind: str | None, e: Tensor, fprime: Tensor | None = None) -> Tensor:
    """h(e) = f'(v)/e: 1 - e for the logistic, 1[e > 0]/e for ReLU, f'(v)/e for a gated
    unit (0 where e = 0: a unit that kWTA or the rectification silenced)."""
    if kind == "gated" and fprime is not None:
        tiny = torch.finfo(e.dtype).tiny
        return torch.where(e != 0, fprime / torch.where(e.abs() < tiny, tiny, e), 0.0)
    if kind == "sigmoid":
        return 1 - e
    if kind == "relu":
        return torch.where(e > 0, 1 / e.clamp_min(torch.finfo(e.dtype).tiny), 0.0)
    raise ApicalError(f"burstprop's hidden layers need Sigmoid or ReLU units, got {kind}")


def _target(y: Tensor, like: Tensor) -> Tensor:
    """One-hot targets from labels, or float targets as given (e.g. soft or partial ones)."""
    if y.dtype.is_floating_point:
        return y.to(like.dtype)
    return nn.functional.one_hot(y, like.shape[-1]).to(like.dtype)


def _subtract_lateral(u: Tensor, z: Tensor, x: Tensor) -> None:
    """u -= Z x per example, in place: Z a matrix on features (per replica for replicated
    layers; fused into the product), or a C x C 1x1 convolution across channels."""
    if x.dim() == 2:
        u.addmm_(x, z.mT, alpha=-1)
    elif x.dim() == 3:
        u.baddbmm_(x, z.mT, alpha=-1)
    elif x.dim() == 4:
        u.sub_(torch.einsum("dc,nchw->ndhw", z, x))
    else:  # replicas of a conv layer
        u.sub_(torch.einsum("rdc,rnchw->rndhw", z, x))


def _lateral_update(u: Tensor, x: Tensor) -> Tensor:
    """A conv layer's u x^T, summed over the batch and averaged over positions, so that
    eta_Z means the same per example as in a fully connected layer (a sum over 144
    positions made the conv Z diverge at the paper's eta_Z)."""
    if u.dim() == 5:  # replicas
        return torch.einsum("rnchw,rndhw->rcd", u, x) / (u.shape[3] * u.shape[4])
    return torch.einsum("nchw,ndhw->cd", u, x) / (u.shape[2] * u.shape[3])


@dataclass(frozen=True, kw_only=True)
class Burstprop(Rule):
    """Burst-dependent plasticity (NN 2021, Eq. 2 in ensemble form); see the module docstring.

    loss: "mse" (logistic output, squared-error teacher) or "cross_entropy" (linear output
    read through a softmax, small-kappa teacher).
    """

    name: ClassVar[str] = "burstprop"
    summary: ClassVar[str] = "burst-dependent plasticity with apical feedback (Payeur 2021)"
    reduction: ClassVar[str] = "sum"
    diagnoses: ClassVar[bool] = True  # probes get the error signals (b^t - b)
    loss: str = "mse"
    p_baseline: float = 0.2
    beta: float = 1.0
    kappa: float = 1e-5
    linearize: bool = False
    learn_feedback: bool = False
    feedback: FeedbackInit = field(
        default_factory=lambda: FeedbackInit(distribution="normal", scale=1.0)
    )
    symmetric: bool = False
    recurrent: bool = True
    recurrent_conv: bool = False
    recurrent_lr: float = 1e-4
    recurrent_init: float = 0.01
    rescale: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.p_baseline < 1:
            raise ConfigError(f"p_baseline must be in (0, 1), got {self.p_baseline}")
        if self.kappa <= 0 or self.beta <= 0:
            raise ConfigError("burstprop's kappa and beta must be positive")

    # -- what convert gives each layer ------------------------------------------------------
    def feedback_spec(self, weight_shape, input_shape, n_outputs) -> FeedbackSpec:
        return FeedbackSpec(self.feedback, weight_shape, learn=self.learn_feedback)

    def recurrent_spec(self, weight_shape, position) -> FeedbackSpec | None:
        conv = len(weight_shape) == 4
        if position != "hidden" or not (self.recurrent_conv if conv else self.recurrent):
            return None
        n = weight_shape[0]
        init = FeedbackInit("uniform", scale=self.recurrent_init / math.sqrt(3))
        return FeedbackSpec(init, (n, n))

    def wrap(self, model: nn.Module) -> nn.Module:
        """Y = W at the start where `symmetric`."""
        if self.symmetric:
            with torch.no_grad():
                for layer in model.modules():
                    if isinstance(layer, FeedbackLayer) and layer.feedback is not None:
                        layer.feedback.copy_(layer.weight)
        return model

    def feedback_matrix(self, layer, generator=None) -> Tensor | None:
        return layer.feedback

    def feedback_direction(self, name, directions, param) -> Tensor:
        return weight_direction(name, directions)

    # -- the rule ---------------------------------------------------------------------------
    def _burst(self, u: Tensor) -> Tensor:
        if self.linearize:
            return 0.5 + self.beta * u / 4
        return torch.sigmoid(u if self.beta == 1 else self.beta * u)

    def output_bursts(self, st: Stage, rec: Record, y: Tensor) -> tuple[Tensor, Tensor]:
        """(b_L, what the output sends down and learns from: b_L^t - b_L, or that / kappa)."""
        pb = self.p_baseline
        if self.loss == "mse":
            if st.activation != "sigmoid":
                raise ApicalError(
                    "burstprop with loss 'mse' needs a Sigmoid after the output layer "
                    "(logistic output units); use loss 'cross_entropy' for a softmax read-out"
                )
            t = _target(y, rec.e)
            return pb * rec.e, pb * derivative("sigmoid", rec.v, rec.e) * (t - rec.e)
        if st.activation is not None:
            raise ApicalError(
                "burstprop with loss 'cross_entropy' reads the output layer's v through a "
                "softmax: remove the activation after the output layer"
            )
        a = torch.softmax(rec.v, dim=-1)
        t = _target(y, a)
        return pb * a, torch.minimum(pb * (t - a), (1 - pb) * a / self.kappa)

    @torch.no_grad()
    def directions(self, model, x, y, generator=None, diagnose: bool = False) -> Step:
        """The step; with `diagnose` also each layer's error signal -(b^t - b) per example
        (`Step.errors`, the NN 2021 Fig. 5c/d delta angles)."""
        stages, x = model_chain(model, x, self.name)
        records = run_chain(stages, x)
        outputs = records[-1].e
        loss = get_loss(self.loss)(outputs, y)
        b, db = self.output_bursts(stages[-1], records[-1], y)
        deltas = {len(stages) - 1: db}
        # bursts without teacher and the teacher's increment travel stacked on the batch
        # dimension (1 for replicas): one feedback product and one burst function for both
        bdim = 1 if stages[0].layer.replicas else 0
        stacked = torch.cat([b, db], bdim)
        increments, diagnostics = {}, {}
        for i in range(len(stages) - 2, -1, -1):
            above, st, rec = stages[i + 1], stages[i], records[i]
            send = above.layer.through(require_feedback(above.layer, self.name), records[i + 1].x)
            e = rec.e.unsqueeze(bdim)
            gs = send(stacked).reshape(*e.shape[:bdim], 2, *e.shape[bdim + 1 :])
            fprime = None if rec.slope is None else rec.slope.unsqueeze(bdim)
            us = gs * _h(st.activation, e, fprime)  # (h g, h (g^t - g)) along bdim
            u = us.select(bdim, 0)
            z = st.layer.recurrent
            if z is not None:
                pre = torch.sigmoid(gs.select(bdim, 0)).mul_(rec.e)  # b~: pre-recurrence rate
                _subtract_lateral(u, z, pre)
                name = f"{st.name}.recurrent"
                if not isinstance(st.layer, FeedbackConv2d):  # dZ = eta_Z u^T b~, in place
                    increments[name] = LowRank(u * self.recurrent_lr, pre)
                else:
                    increments[name] = _lateral_update(u * self.recurrent_lr, pre)
            per = tuple(range(bdim, u.dim()))  # per replica
            diagnostics[st.name] = {"apical": u.abs().mean(per)}
            us.select(bdim, 1).add_(u)  # u^t
            ps = self._burst(us)  # (p, p^t)
            ps.select(bdim, 1).sub_(ps.select(bdim, 0))
            ps.mul_(e)  # (b, b^t - b)
            deltas[i] = ps.select(bdim, 1)
            stacked = ps.flatten(bdim, bdim + 1)
        signals = [-deltas[i] for i in range(len(stages))]
        if self.rescale:  # undo (beta/4)^(L-l), in place on the fresh negations
            for i, signal in enumerate(signals):
                signal.mul_((4 / self.beta) ** (len(stages) - 1 - i))
        directions = local_directions(stages, records, signals)
        for i, st in enumerate(stages):  # a gate's own parameters (dendritic segments)
            if st.gate is not None:
                directions.update(st.gate.directions(-signals[i]))
        for st in stages:  # learned feedback (fixed feedback is a buffer)
            if st.layer.learns_feedback:
                name = f"{st.name}.feedback"
                directions[name] = self.feedback_direction(name, directions, st.layer.feedback)
        errors = {st.name: -deltas[i] for i, st in enumerate(stages)} if diagnose else {}
        return Step(loss, outputs, directions, increments, diagnostics=diagnostics, errors=errors)
