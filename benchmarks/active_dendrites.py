"""Time per training step of the active-dendrites network against an equal-width MLP
under plain PyTorch backprop, same process.

    python benchmarks/active_dendrites.py [--device cpu|cuda|all] [--reps 15] [--json]

Net: 784-2048-2048-10 on [image | 784-d context] rows, batch 256, kWTA 5 %, 50 % fixed
feed-forward sparsity (mask restored after every step), K = 10 and K = 100 segments,
absmax winners; trained by apical's backprop as the trainer trains it (directions,
`.grad`, fused Adam with the segments' sparse rows, `constrain`).
The MLP is an ordinary nn.Module (ReLU, same widths, loss.backward(), fused Adam).
A training batch holds one task, so its context is one row repeated: segment responses
are computed once and broadcast (the `cached` rows); `uncached` computes them per example
(the naive cost, about 6x and 50x an MLP's multiply-adds). A `4 tasks` row mixes four
contexts in the batch (the test-time case). Inputs are synthetic (random normal).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
from rules_vs_backprop import (  # this folder's helpers
    devices,
    interleaved_medians,
    machine,
    training_step,
)
from torch import nn

import apical
from apical import active_dendrites as ad
from apical.losses import get_loss

WIDTH, CONTEXT, BATCH = 2048, 784, 256


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 10)
    )


def _plain_step(model: nn.Module, x, y) -> Callable[[], None]:
    opt, loss = torch.optim.Adam(model.parameters(), 1e-3, fused=True), get_loss("cross_entropy")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss(model(x), y).backward()
        opt.step()

    return step


def _dendritic_step(model: nn.Module, x, y) -> Callable[[], None]:
    rule = apical.make_rule("backprop")
    model = apical.convert(model, rule, x[:2].cpu()).to(x.device)
    return training_step(rule, model, x, y, lr=1e-3, optimizer="adam")


def bench(device: torch.device, reps: int, steps: int, ks: list[int]) -> dict[str, float]:
    torch.manual_seed(0)
    image = torch.randn(BATCH, 784, device=device)
    prototypes = torch.randn(4, CONTEXT, device=device)
    one = torch.cat([image, prototypes[0].expand(BATCH, CONTEXT)], 1)
    four = torch.cat([image, prototypes[torch.arange(BATCH, device=device) % 4]], 1)
    y = torch.randint(0, 10, (BATCH,), device=device)
    fns = {"plain MLP backprop": _plain_step(_mlp().to(device), image, y)}
    # the same net without segments: what kWTA and the sparsity mask cost by themselves
    kwta_only = ad.active_dendrites((784 + CONTEXT,), 10, dendrites=False)
    fns["kWTA only (no segments)"] = _dendritic_step(kwta_only, one, y)
    for k in ks:
        model = ad.active_dendrites((784 + CONTEXT,), 10, segments=k)
        fns[f"K = {k}, one task (cached)"] = _dendritic_step(model, one, y)
        fns[f"K = {k}, 4 tasks in the batch (cached)"] = _dendritic_step(model, four, y)
    # the naive cost: responses per example
    model = ad.active_dendrites((784 + CONTEXT,), 10, segments=ks[0])
    for layer in model.hidden:
        layer.cache = False
    fns[f"K = {ks[0]}, one task (uncached)"] = _dendritic_step(model, one, y)
    medians = interleaved_medians(fns, device, reps, steps)
    base = medians["plain MLP backprop"]
    return {"plain MLP seconds per step": base} | {
        k: v / base for k, v in medians.items() if k != "plain MLP backprop"
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="all", help="cpu, cuda or all (cuda where present)")
    p.add_argument("--reps", type=int, default=15, help="interleaved repetitions")
    p.add_argument("--steps", type=int, default=3, help="steps per timed repetition")
    p.add_argument("--segments", default="10,100", help="segment counts K, comma-separated")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    ks = [int(k) for k in args.segments.split(",")]
    result = {**machine(), "ratios": {}}
    for name in devices(args.device):
        result["ratios"][name] = bench(torch.device(name), args.reps, args.steps, ks)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for name, rows in result["ratios"].items():
        print(f"{name}:")
        for label, v in rows.items():
            shown = f"{v * 1e3:.1f} ms" if "seconds" in label else f"{v:.3f}x"
            print(f"  {label:45s} {shown}")


if __name__ == "__main__":
    main()
