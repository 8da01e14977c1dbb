"""Time per training step of every rule as a ratio to plain PyTorch backprop, same model,
same process.

    python benchmarks/rules_vs_backprop.py [--device cpu|cuda|all] [--reps 15] [--json]

Models: an MLP 784-1024-1024-10 (ReLU) at batch 256 and a small CIFAR-size conv net
(apical's `convnet`: two 3x3 conv + pool blocks of 32 and 64 channels, FC 4096-256-10) at
batch 128, for the feedback-alignment family (cross-entropy); and the NN 2021 MNIST net
(784-500x3-10) and CIFAR-10 net at batch 32, logistic units and squared error, for
burstprop with fixed feedback and no Z, and with learned feedback and Z (the paper's
configuration), and BurstCCN (its single pass, feedback through Y and Q). One step =
forward, the rule's directions (autograd for plain backprop), writing `.grad`, an
SGD-with-momentum step, and the rule's after_step (burstprop's Z).
Inputs are synthetic (random normal). Repetitions are interleaved across rules
(in a shuffled order) and the median time of each is reported, divided by plain
backprop's median. CPU denormals are flushed to zero, as in the trainer's epoch loop.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import apical
from apical.layers import constrain
from apical.losses import get_loss
from apical.models import burstprop_convnet, burstprop_mlp, convnet, mlp
from apical.optim import SparseRowsAdam
from apical.train import denormals_flushed

FA_FAMILY = {
    "backprop (apical)": ("backprop", {}),
    "fa": ("fa", {}),
    "dfa": ("dfa", {}),
    "sign_symmetry": ("sign_symmetry", {}),
    "sign_symmetry (random magnitudes)": ("sign_symmetry", {"random_magnitudes": True}),
    "kolen_pollack": ("kolen_pollack", {}),
}
BURSTPROP = {
    "backprop (apical)": ("backprop", {"loss": "mse"}),
    "burstprop, fixed feedback, no Z": (
        "burstprop",
        {"learn_feedback": False, "recurrent": False},
    ),
    "burstprop, learned feedback + Z (paper)": (
        "burstprop",
        {"learn_feedback": True, "recurrent": True},
    ),
    "burstccn (one pass, Y and Q)": ("burstccn", {}),
}


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    shape: tuple[int, ...]
    batch: int
    loss: str
    rules: dict[str, tuple[str, dict]]


MODELS = {
    "mlp 784-1024-1024-10, batch 256": Case(
        lambda: mlp((784,), 10, hidden=(1024, 1024), activation="relu"), (784,), 256,
        "cross_entropy", FA_FAMILY,
    ),
    "convnet 32x32x3, batch 128": Case(
        lambda: convnet((3, 32, 32), 10), (3, 32, 32), 128, "cross_entropy", FA_FAMILY
    ),
    "NN 2021 MNIST net 784-500x3-10 (logistic, MSE), batch 32": Case(
        lambda: burstprop_mlp((784,), 10), (784,), 32, "mse", BURSTPROP
    ),
    "NN 2021 CIFAR-10 net (logistic, MSE), batch 32": Case(
        lambda: burstprop_convnet((3, 32, 32), 10), (3, 32, 32), 32, "mse", BURSTPROP
    ),
}  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _plain_step(model: nn.Module, opt, x, y, loss: str) -> Callable[[], None]:
    loss_fn = get_loss(loss)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def _rule_step(model: nn.Module, rule, opt, x, y, gen) -> Callable[[], None]:
    params = dict(model.named_parameters())

    def step() -> None:
        opt.zero_grad(set_to_none=True)  # as the trainer: last step's directions go first
        result = rule.directions(model, x, y, gen)
        for name, d in result.directions.items():
            params[name].grad = d
        opt.step()
        constrain(model)
        rule.after_step(model, result)

    return step


def bench_model(case: Case, device, reps: int, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    x = torch.randn(case.batch, *case.shape, device=device)
    y = torch.randint(0, 10, (case.batch,), device=device)
    plain = case.build().to(device)
    opt = torch.optim.SGD(plain.parameters(), 0.01, 0.9)
    fns = {"plain backprop": _plain_step(plain, opt, x, y, case.loss)}
    gen = torch.Generator(device).manual_seed(0)
    for label, (name, opts) in case.rules.items():
        rule = apical.make_rule(name, **{"loss": case.loss, **opts})
        model = apical.convert(case.build(), rule, x[:2].cpu()).to(device)
        opt = torch.optim.SGD(apical.param_groups(model, 0.01), lr=0.01, momentum=0.9)
        fns[label] = _rule_step(model, rule, opt, x, y, gen)
    medians = interleaved_medians(fns, device, reps, steps)
    base = medians["plain backprop"]
    out = {"plain backprop seconds per step": base}
    out.update({k: v / base for k, v in medians.items() if k != "plain backprop"})
    return out


def training_step(
    rule, model, x, y, lr: float, momentum: float = 0.0, optimizer: str = "sgd"
) -> Callable[[], None]:
    """One training step of `rule` as a closure, as the trainer takes it: directions,
    `.grad`, an SGD step (or the trainer's fused Adam: optimizer "adam"), the model's
    constraints (shared by this folder's benchmarks)."""
    if optimizer == "adam":
        opt = SparseRowsAdam(model.parameters(), lr, fused=True)
    else:
        opt = torch.optim.SGD(apical.param_groups(model, lr), lr=lr, momentum=momentum)
    params = dict(model.named_parameters())

    def step() -> None:
        opt.zero_grad(set_to_none=True)  # as the trainer: last step's directions go first
        result = rule.directions(model, x, y)
        for name, d in result.directions.items():
            params[name].grad = d
        opt.step()
        constrain(model)
        rule.after_step(model, result)

    return step


def interleaved_medians(fns: dict, device: torch.device, reps: int, steps: int) -> dict[str, float]:
    """Median seconds per call of each function: after 3 warm-up calls each, `reps` rounds
    in which every function runs `steps` times, in a shuffled order per round (so no
    function always runs right after another)."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    times: dict = {k: [] for k in fns}
    order = random.Random(0)
    for _ in range(reps):
        labels = list(fns)
        order.shuffle(labels)
        for label in labels:
            fn = fns[label]
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            _sync(device)
            times[label].append((time.perf_counter() - t0) / steps)
    return {k: statistics.median(v) for k, v in times.items()}


def devices(choice: str) -> list[str]:
    """The devices a --device value names: cpu, cuda or all (cuda only where present)."""
    names = ["cpu", "cuda"] if choice == "all" else [choice]
    return [d for d in names if d != "cuda" or torch.cuda.is_available()]


def positive(kind: type):
    """An argparse type: a positive int or float (one line on anything else)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def positive_list(kind: type):
    """An argparse type: comma-separated positive numbers, e.g. 1,5."""
    one = positive(kind)
    return lambda text: [one(part) for part in text.split(",")]


def machine() -> dict:
    """Where a benchmark ran: torch version, CPU, threads, GPU name."""
    return {
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="all", help="cpu, cuda or all (cuda where present)")
    p.add_argument("--reps", type=int, default=15, help="interleaved repetitions")
    p.add_argument("--steps", type=int, default=5, help="steps per timed repetition")
    p.add_argument("--only", help="run only the models whose name contains this text")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    result: dict = {
        **machine(),
        "ratios": {},
        # the authors' code against its own autograd baseline, 2 CPU cores (originals.md
        # section 3: 0.016 / 0.0044 s per MNIST batch, 0.081 / 0.051 s per CIFAR-10 batch)
        "original_code_ratios": {
            "burstprop learned feedback + Z, MNIST 784-500x3-10": 3.6,
            "burstprop learned feedback + Z, CIFAR-10 net": 1.6,
        },
    }
    with denormals_flushed():  # as in the trainer's epoch loop
        for dev in devices(args.device):
            device = torch.device(dev)
            result["ratios"][dev] = {
                name: bench_model(case, device, args.reps, args.steps)
                for name, case in MODELS.items()
                if not args.only or args.only in name
            }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for dev, models in result["ratios"].items():
        where = result["gpu"] if dev == "cuda" else f"CPU, {result['threads']} threads"
        print(f"\n{dev} ({where}), torch {result['torch']}: time per step / plain backprop")
        for model, rows in models.items():
            print(
                f"  {model}: plain backprop {1e3 * rows['plain backprop seconds per step']:.1f} ms"
            )
            for rule, ratio in rows.items():
                if rule != "plain backprop seconds per step":
                    print(f"    {rule:<42} {ratio:.3f}x")


if __name__ == "__main__":
    main()
