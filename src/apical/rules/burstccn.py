"""BurstCCN: burst-dependent plasticity in one pass (Greedy, Zhu, Pemberton, Mellor & Costa,
NeurIPS 2022; "CCN" below), the single-phase successor of burstprop.

Burstprop evaluates every input twice (without and with teacher) and learns from the
difference. BurstCCN needs one pass: feedback reaches a layer's apical dendrites on two
pathways, the bursts of the layer above through facilitating synapses Y and its events
(single spikes) through depressing synapses Q onto dendrite-targeting interneurons, and
when Q = p_b Y the events cancel the baseline bursting, leaving only the teaching signal.
Per layer l (L = output), logistic event rates, squared-error teacher:

- events, bottom-up:     e_l = sigmoid(v_l), v_l = W_l e_{l-1} + c_l;
- output burst probability:  p_L = p_b [1 + (t - e_L)(1 - e_L)], b_L = p_L e_L;
- apical potential:      u_l = Y_l b_{l+1} - Q_l e_{l+1}  (Y_l = Y^T stored with W_{l+1}'s
                         shape, as burstprop's feedback; Q likewise);
- burst probability:     p_l = sigmoid(4 u_l (1 - e_l)), b_l = p_l e_l;
- update (batch mean):   dW_l ∝ [(p_l - p_b) e_l] e_{l-1}^T, dc_l ∝ (p_l - p_b) e_l.

With Q = p_b Y, u_l = Y_l [(p_{l+1} - p_b) e_{l+1}]: the signal of the layer above, and
without a teacher (t = e_L) every p is p_b and every update zero; this needs p_b = 1/2,
the burst probability of a silent apical dendrite (sigmoid(0)), so p_b is that constant.
Near u = 0, sigmoid(4 z) = 1/2 + z, so (p_l - p_b) e_l ≈ e_l (1 - e_l) u_l = f'(v_l) u_l:
with Y = W^T (`symmetric`) and `linearize` the update is p_b times backprop's gradient of
the batch-mean squared error, exactly.

Options: `feedback`, how Y is drawn (`symmetric`: Y = W at the start instead; `tied`:
Y = W at the start and after every step, the code's "tied" mode, weight-symmetric
feedback as the CCN paper compares with backprop); `q`:
"cancel" (Q = p_b Y, the paper's symmetric initialisation, fixed) or "independent" (Q drawn
as Y is, which breaks the cancellation: for tests and ablations). Under "cancel" the two
pathways are summed before the feedback product, u_l = Y_l [(p_{l+1} - p_b) e_{l+1}]
(one product per layer instead of two; the same u up to rounding, tested against the
two-pathway form). Apart from `tied`, Y and Q are fixed (the paper's optional learning
of Y and Q is not implemented). Both are kept in the layer's feedback tensor, stacked:
(2, *W.shape) = [Y; Q].

Diagnostics per hidden layer: `apical`, the mean |u_l|; with `diagnose`, the error signals
-(p_l - p_b) e_l for the probes' delta angles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from apical.errors import ApicalError, ConfigError
from apical.layers import FeedbackInit, FeedbackLayer, FeedbackSpec
from apical.losses import get_loss
from apical.rules.base import Rule, Step, require_feedback
from apical.rules.chain import Stage, local_directions, model_chain, run_chain

P_BASELINE = 0.5  # sigmoid(0): the burst probability of a silent apical dendrite


@dataclass(frozen=True, kw_only=True)
class BurstCCN(Rule):
    """BurstCCN (CCN 2022); see the module docstring."""

    name: ClassVar[str] = "burstccn"
    summary: ClassVar[str] = "single-phase bursts, baseline cancelled by Q = p_b Y (CCN 2022)"
    diagnoses: ClassVar[bool] = True
    loss: str = "mse"
    feedback: FeedbackInit = field(
        default_factory=lambda: FeedbackInit(distribution="normal", scale=1.0)
    )
    symmetric: bool = False
    tied: bool = False
    q: Literal["cancel", "independent"] = "cancel"
    linearize: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss != "mse":
            raise ConfigError("rule burstccn: its output teacher is the squared error's; set "
                              "loss = mse")  # fmt: skip
        if self.feedback.scale is None:
            raise ConfigError("rule burstccn: give the feedback's scale (Y and Q are drawn "
                              "as one stacked tensor, whose fan-in is not Y's)")  # fmt: skip

    # -- what convert gives each layer ------------------------------------------------------
    def feedback_spec(self, weight_shape, input_shape, n_outputs) -> FeedbackSpec:
        return FeedbackSpec(self.feedback, (2, *weight_shape))

    def wrap(self, model: nn.Module) -> nn.Module:
        """Y = W where `symmetric` or `tied`; Q = p_b Y where `q` is "cancel"."""
        with torch.no_grad():
            for layer in model.modules():
                if isinstance(layer, FeedbackLayer) and layer.feedback is not None:
                    y, q = _pathways(layer)
                    if self.symmetric or self.tied:
                        y.copy_(layer.weight)
                    if self.q == "cancel":
                        q.copy_(y).mul_(P_BASELINE)
        return model

    def after_step(self, model: nn.Module, step: Step) -> None:
        super().after_step(model, step)
        if self.tied:  # Y follows W (and Q = p_b Y)
            self.wrap(model)

    def feedback_matrix(self, layer, generator=None) -> Tensor | None:
        return None if layer.feedback is None else _pathways(layer)[0]

    # -- the rule ---------------------------------------------------------------------------
    def _burst(self, z: Tensor) -> Tensor:
        return 0.5 + z if self.linearize else torch.sigmoid(4 * z)

    @torch.no_grad()
    def directions(self, model, x, y, generator=None, diagnose: bool = False) -> Step:
        stages, x = model_chain(model, x, self.name)
        _check_logistic(stages)
        records = run_chain(stages, x)
        outputs = records[-1].e
        loss = get_loss(self.loss)(outputs, y)
        e = outputs
        t = (
            y.to(e.dtype)
            if y.dtype.is_floating_point
            else nn.functional.one_hot(y, e.shape[-1]).to(e.dtype)
        )
        p = P_BASELINE * (1 + (t - e) * (1 - e))
        signals = {len(stages) - 1: (p - P_BASELINE) * e}  # (p_l - p_b) e_l
        diagnostics = {}
        for i in range(len(stages) - 2, -1, -1):
            above, rec = stages[i + 1], records[i]
            require_feedback(above.layer, self.name)
            fb_y, fb_q = _pathways(above.layer)
            send = above.layer.through(fb_y, records[i + 1].x)
            if self.q == "cancel":  # Y b - Q e = Y (p - p_b) e: one product, not two
                u = send(signals[i + 1])
            else:
                events = records[i + 1].e
                u = send(p * events)
                u.sub_(above.layer.through(fb_q, records[i + 1].x)(events))
            u = u.reshape(rec.e.shape)  # the layer above may read a flattened view
            bdim = 1 if above.layer.replicas else 0
            diagnostics[stages[i].name] = {"apical": u.abs().mean(tuple(range(bdim, u.dim())))}
            p = self._burst(u * (1 - rec.e))
            signals[i] = (p - P_BASELINE) * rec.e
        n = x.shape[1 if stages[0].layer.replicas else 0]
        deltas = [signals[i].div(-n) for i in range(len(stages))]  # batch mean, -dW
        directions = local_directions(stages, records, deltas)
        for name, param in model.named_parameters():
            directions.setdefault(name, torch.zeros_like(param))
        errors = {st.name: d for st, d in zip(stages, deltas, strict=True)} if diagnose else {}
        return Step(loss, outputs, directions, diagnostics=diagnostics, errors=errors)


def _pathways(layer: FeedbackLayer) -> tuple[Tensor, Tensor]:
    """(Y, Q) of a layer's stacked feedback tensor (per replica for replicated layers)."""
    stack = layer.feedback
    dim = 1 if layer.replicas else 0
    return stack.select(dim, 0), stack.select(dim, 1)


def _check_logistic(stages: list[Stage]) -> None:
    for st in stages:
        if st.activation != "sigmoid":
            raise ApicalError(
                f"rule burstccn needs logistic units (a Sigmoid after every layer); layer "
                f"{st.name!r} has {st.activation or 'no activation'}"
            )
