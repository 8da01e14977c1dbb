"""Accuracy and the alignment diagnostics, identical for every rule.

For each feedback layer l (named as in the model):
- `angle`: degrees between the rule's direction for W_l and backprop's gradient, on the
  same probe batch (Lillicrap 2016 Fig. 2; eLife 2017 Fig. 7A; NN 2021 Fig. 5c);
- `sign_agreement`: fraction of entries of the two whose signs match;
- `feedback_angle`, `feedback_norm_ratio`: for the matrix that carries the error down
  through layer l (B_l, stored with W_l's shape, i.e. Y_{l-1} = B_l^T in the papers'
  notation), the angle to W_l and ||B_l|| / ||W_l||; omitted where the rule has no
  matrix of W's shape (DFA's hidden projections);
- any per-layer diagnostics the rule reports (burstprop: `apical`, the mean absolute
  apical potential).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from apical.layers import FeedbackLayer
from apical.losses import get_loss
from apical.rules.backprop import Backprop
from apical.rules.base import Rule


def angle(a: Tensor, b: Tensor) -> float:
    """Angle in degrees between two tensors seen as vectors; nan if either is zero."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return math.nan
    cos = (a @ b / (na * nb)).clamp(-1.0, 1.0)
    return math.degrees(math.acos(float(cos)))


def sign_agreement(a: Tensor, b: Tensor) -> float:
    """Fraction of entries whose signs agree (sign 0 agrees only with 0)."""
    return float((torch.sign(a) == torch.sign(b)).double().mean())


def accuracy(outputs: Tensor, y: Tensor, k: int = 1) -> Tensor:
    """Fraction of rows whose label is among the k largest outputs (labels, or one-hot /
    float targets, whose arg-max is the label)."""
    target = y.argmax(-1) if y.dtype.is_floating_point else y
    top = outputs.topk(min(k, outputs.shape[-1]), dim=-1).indices
    return (top == target[:, None]).any(-1).double().mean()


@torch.no_grad()
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, loss: str = "cross_entropy", batch_size: int = 2048
) -> dict[str, float]:
    """Mean loss, accuracy and top-5 accuracy over (x, y) in eval mode, in batches (one host
    sync at the end)."""
    was_training = model.training
    model.eval()
    loss_fn = get_loss(loss)
    total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros(2, dtype=torch.float64, device=x.device)
    for i in range(0, len(x), batch_size):
        out = model(x[i : i + batch_size])
        yb = y[i : i + batch_size]
        total_loss += loss_fn(out, yb).double() * len(yb)
        correct += torch.stack([accuracy(out, yb), accuracy(out, yb, k=5)]) * len(yb)
    model.train(was_training)
    n = max(len(x), 1)
    top1, top5 = (float(c) / n for c in correct)
    return {"loss": float(total_loss) / n, "accuracy": top1, "top5_accuracy": top5}


def alignment(
    model: nn.Module,
    rule: Rule,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator | None = None,
) -> dict[str, dict[str, float]]:
    """Per feedback layer: angle and sign agreement of the rule's W direction with the
    backprop gradient, and the feedback matrix's angle and norm ratio to W.

    A probe: the model's buffers (BatchNorm statistics) are restored afterwards, and
    `generator` should be a dedicated one so that training's random draws are untouched.
    """
    saved = {k: v.clone() for k, v in model.named_buffers()}
    try:
        step = rule.directions(model, x, y, generator)
        ours = step.directions
        exact = Backprop(loss=rule.loss).directions(model, x, y).directions
    finally:
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(saved[k])
    out: dict[str, dict[str, float]] = {}
    for name, layer in model.named_modules():
        if not isinstance(layer, FeedbackLayer):
            continue
        key = f"{name}.weight" if name else "weight"
        row = {
            "angle": angle(ours[key], exact[key]),
            "sign_agreement": sign_agreement(ours[key], exact[key]),
        }
        fb = rule.feedback_matrix(layer, generator)
        if fb is not None and fb.shape == layer.weight.shape:
            row["feedback_angle"] = angle(fb, layer.weight)
            row["feedback_norm_ratio"] = float(fb.detach().norm() / layer.weight.detach().norm())
        row.update({k: float(v) for k, v in step.diagnostics.get(name, {}).items()})
        out[name] = row
    return out


def mean_hidden_angle(model: nn.Module, rows: dict[str, dict[str, float]]) -> float:
    """Mean of `angle` over the hidden feedback layers (nan if there are none)."""
    hidden = [
        rows[n]["angle"]
        for n, m in model.named_modules()
        if isinstance(m, FeedbackLayer) and m.position == "hidden" and n in rows
    ]
    return sum(hidden) / len(hidden) if hidden else math.nan
