"""Accuracy and the alignment diagnostics, identical for every rule.

For each feedback layer l (named as in the model):
- `angle`: degrees between the rule's direction for W_l and backprop's gradient, on the
  same probe batch (Lillicrap 2016 Fig. 2; eLife 2017 Fig. 7A; NN 2021 Fig. 5c);
- `sign_agreement`: fraction of entries of the two whose signs match;
- `feedback_angle`, `feedback_norm_ratio`: for the matrix that carries the error down
  through layer l (B_l, stored with W_l's shape, i.e. Y_{l-1} = B_l^T in the papers'
  notation), the angle to W_l and ||B_l|| / ||W_l||; omitted where the rule has no
  matrix of W's shape (DFA's hidden projections);
- `delta_angle`: the mean over the probe batch of the per-example angle between the
  error signal the rule delivers to the layer's output u_l and backprop's d loss / d u_l
  (NN 2021 Fig. 5c/d), where the rule has one: read from the backward pass of autograd
  rules (the FA family), or given by the rule (`Step.errors`: burstprop's b^t - b,
  BurstCCN's, node perturbation's estimate, predictive coding's prediction errors);
- any per-layer diagnostics the rule reports (burstprop: `apical`, the mean absolute
  apical potential).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

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


def example_angles(a: Tensor, b: Tensor) -> Tensor:
    """Per example (dim 0), the angle in degrees between a[n] and b[n] seen as vectors;
    nan where either is zero. Kahan's 2 atan2(|a^ - b^|, |a^ + b^|) of the unit vectors,
    accurate near 0 and 180 degrees where acos of the cosine is not."""
    a, b = a.detach().double().flatten(1), b.detach().double().flatten(1)
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na, b / nb
    theta = 2 * torch.atan2((ua - ub).norm(dim=1), (ua + ub).norm(dim=1))
    return torch.where((na * nb).squeeze(1) > 0, torch.rad2deg(theta), math.nan)


@contextlib.contextmanager
def output_gradients(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Within the block, the gradient that each backward pass delivers to every feedback
    layer's output, by layer name (the last pass's; none for layers run without autograd)."""
    found: dict[str, Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, inputs, out) -> None:
            if isinstance(out, Tensor) and out.requires_grad:
                out.register_hook(lambda g: found.__setitem__(name, g.detach()))

        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in model.named_modules()
               if isinstance(m, FeedbackLayer)]  # fmt: skip
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


def predicted_classes(outputs: Tensor) -> Tensor:
    """Which classes are the arg-max of at least one row: a bool mask over classes (per
    replica if (R, N, C)). A class never predicted has an output unit that never wins,
    the plateaus of top-5 accuracy in a net whose output units come alive one by one."""
    wins = torch.zeros_like(outputs, dtype=torch.bool)
    wins.scatter_(-1, outputs.argmax(-1, keepdim=True), True)
    return wins.any(-2)


def accuracy(outputs: Tensor, y: Tensor, k: int = 1) -> Tensor:
    """Fraction of rows whose label is among the k largest outputs (labels, or one-hot /
    float targets, whose arg-max is the label)."""
    target = y.argmax(-1) if y.dtype.is_floating_point else y
    top = outputs.topk(min(k, outputs.shape[-1]), dim=-1).indices
    return (top == target[..., None]).any(-1).double().mean(-1)  # per replica if (R, N, C)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode within the block, in the mode it had after it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


EVALUATED = ("loss", "accuracy", "top5_accuracy", "classes_predicted")  # evaluate's keys


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss: str = "cross_entropy",
    batch_size: int = 2048,
    replicas: int | None = None,
) -> dict[str, float | list[float]]:
    """Mean loss, accuracy, top-5 accuracy and the number of classes predicted at all over
    (x, y) in eval mode, in batches (one host sync at the end). For a replicated model
    (`replicas` = R) every replica sees the same (x, y) and each value is a list of R. An
    empty split gives None for every value."""
    if len(x) == 0:  # no such split (val_size = 0): nothing measured, not zero
        empty = None if replicas is None else [None] * replicas
        return dict.fromkeys(EVALUATED, empty)
    loss_fn = get_loss(loss)
    shape = () if replicas is None else (replicas,)
    total_loss = torch.zeros(shape, dtype=torch.float64, device=x.device)
    correct = torch.zeros(2, *shape, dtype=torch.float64, device=x.device)
    predicted = None
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            n_b = len(xb)
            if replicas is not None:
                xb, yb = xb.expand(replicas, *xb.shape), yb.expand(replicas, *yb.shape)
            out = model(xb)
            total_loss += loss_fn(out, yb).double() * n_b
            correct += torch.stack([accuracy(out, yb), accuracy(out, yb, k=5)]) * n_b
            now = predicted_classes(out)
            predicted = now if predicted is None else predicted | now
    n = len(x)
    values = {"loss": total_loss / n, "accuracy": correct[0] / n, "top5_accuracy": correct[1] / n,
              "classes_predicted": predicted.sum(-1)}  # fmt: skip
    return {k: v.tolist() for k, v in values.items()}


def alignment(
    model: nn.Module,
    rule: Rule,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator | None = None,
) -> dict[str, dict[str, float]] | list[dict[str, dict[str, float]]]:
    """Per feedback layer: angle and sign agreement of the rule's W direction with the
    backprop gradient, and the feedback matrix's angle and norm ratio to W. For a
    replicated model (apical.replicas), one such dict per replica.

    A probe: the model's buffers (BatchNorm statistics) are restored afterwards, and
    `generator` should be a dedicated one so that training's random draws are untouched.
    """
    saved = {k: v.clone() for k, v in model.named_buffers()}
    try:
        with output_gradients(model) as carried:
            step = rule.probe_step(model, x, y, generator)
        if rule.probes == "diagnostics":
            return {
                name: {k: float(v) for k, v in row.items()}
                for name, row in step.diagnostics.items()
            }
        ours = step.directions
        errors = {**carried, **step.errors}
        with output_gradients(model) as true_errors:
            exact = Backprop(loss=rule.loss).directions(model, x, y).directions
    finally:
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(saved[k])
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, FeedbackLayer)]
    feedback = {n: rule.feedback_matrix(m, generator) for n, m in layers}

    def rows(r: int | None) -> dict[str, dict[str, float]]:
        def pick(t: Tensor) -> Tensor:
            return t if r is None else t[r]

        out: dict[str, dict[str, float]] = {}
        for name, layer in layers:
            key = f"{name}.weight" if name else "weight"
            a, b, w = pick(ours[key]), pick(exact[key]), pick(layer.weight)
            row = {"angle": angle(a, b), "sign_agreement": sign_agreement(a, b)}
            fb = feedback[name]
            if fb is not None and fb.shape == layer.weight.shape:
                fb = pick(fb)
                row["feedback_angle"] = angle(fb, w)
                row["feedback_norm_ratio"] = float(fb.detach().norm() / w.detach().norm())
            if name in errors and name in true_errors:
                angles = example_angles(pick(errors[name]), pick(true_errors[name]))
                row["delta_angle"] = float(angles.nanmean())
            row.update({k: float(pick(v)) for k, v in step.diagnostics.get(name, {}).items()})
            out[name] = row
        return out

    replicas = layers[0][1].replicas if layers else None
    return rows(None) if replicas is None else [rows(r) for r in range(replicas)]


def mean_hidden_angle(model: nn.Module, rows: dict[str, dict[str, float]]) -> float:
    """Mean of `angle` over the hidden feedback layers (nan if there are none)."""
    hidden = [
        rows[n]["angle"]
        for n, m in model.named_modules()
        if getattr(m, "position", None) == "hidden" and n in rows
    ]
    return sum(hidden) / len(hidden) if hidden else math.nan
