"""Time per training step of the energy-based rules against plain PyTorch backprop on the
same net, same process, and against each rule's cost model.

    python benchmarks/energy.py [--device cpu|cuda|all] [--reps 9] [--json]

Cost models (in backprop steps, a backprop step = 3 forward passes F; a relaxation step =
a forward and a backward pass through every stage, 2F):
- predictive coding at T inference steps: (2T + 2) / 3 (the feed-forward start, T steps,
  the weight gradient);
- Z-IL: (2(L - 1) + 1 + 2) / 3 for L stages (L - 1 inference steps, the feed-forward
  start, the per-stage weight gradients);
- equilibrium propagation, symmetric: 2 (T1 + 2 T2) / 3 + 2 / 3 (both nudged phases, one
  batch of 2B; the contrast is one pass over 2B);
- CHL: (2 (T- + T+) + 2) / 3 + 1 / 3 (the feed-forward start of the minus phase).
Goal: within 1.25x of the cost model. Training steps are taken as the trainer takes them
(directions, .grad, SGD with momentum). Nets: 784-500-500-10 (tanh; hard sigmoid for EP,
logistic for CHL) at batch 128; for predictive coding also pcx's MNIST MLP
(784-128-128-128-10 GELU) and the small conv net (`convnet` on 1x28x28, channels 32-64,
FC 256), and the learning step compiled (`compiled`: compiled in the warm-up, not timed).
Inputs are synthetic.
"""

from __future__ import annotations

import argparse
import json

import torch
from rules_vs_backprop import devices, interleaved_medians, machine, training_step

import apical
from apical.losses import get_loss
from apical.models import convnet, mlp

BATCH = 128


def _plain(model, x, y, loss: str):
    opt, fn = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9), get_loss(loss)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        fn(model(x), y).backward()
        opt.step()

    return step


CASES = {  # label: (net, rule, options, cost model in backprop steps)
    "PC T=5": ("mlp tanh", "predictive_coding", {"steps": 5}, (2 * 5 + 2) / 3),
    "PC T=10": ("mlp tanh", "predictive_coding", {"steps": 10}, (2 * 10 + 2) / 3),
    "PC T=20": ("mlp tanh", "predictive_coding", {"steps": 20}, (2 * 20 + 2) / 3),
    "PC T=5, compiled": ("mlp tanh", "predictive_coding", {"steps": 5, "compiled": True},
                         (2 * 5 + 2) / 3),
    "PC T=5, pcx MLP": ("pcx", "predictive_coding", {"steps": 5}, (2 * 5 + 2) / 3),
    "PC T=5, pcx MLP, compiled": ("pcx", "predictive_coding", {"steps": 5, "compiled": True},
                                  (2 * 5 + 2) / 3),
    "Z-IL": ("mlp tanh", "predictive_coding", {"schedule": "zil"}, (2 * 2 + 3) / 3),
    "EP T1=20 T2=4": ("mlp hard_sigmoid", "equilibrium_propagation",
                      {"free_steps": 20, "nudged_steps": 4}, 2 * (20 + 8) / 3 + 2 / 3),
    "CHL T-=T+=10": ("mlp sigmoid", "contrastive_hebbian",
                     {"minus_steps": 10, "plus_steps": 10}, (2 * 20 + 2) / 3 + 1 / 3),
    "PC T=8, conv": ("convnet", "predictive_coding", {"steps": 8}, (2 * 8 + 2) / 3),
    "PC T=8, conv, compiled": ("convnet", "predictive_coding", {"steps": 8, "compiled": True},
                               (2 * 8 + 2) / 3),
}  # fmt: skip


def _build(net: str):
    if net == "convnet":
        return convnet((1, 28, 28), 10), (1, 28, 28)
    if net == "pcx":  # pcx's MNIST MLP
        return mlp((784,), 10, hidden=(128, 128, 128), activation="gelu"), (784,)
    activation = net.split()[1]
    return mlp((784,), 10, hidden=(500, 500), activation=activation), (784,)


def bench(device: torch.device, reps: int, steps: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for label, (net, name, options, cost) in CASES.items():
        torch.manual_seed(0)
        model, shape = _build(net)
        x = torch.rand(BATCH, *shape, device=device)
        y = torch.randint(0, 10, (BATCH,), device=device)
        rule = apical.make_rule(name, **options)
        plain = _plain(_build(net)[0].to(device), x, y, rule.loss)
        ours = apical.convert(model, rule, x[:2].cpu()).to(device)
        fns = {"backprop": plain, label: training_step(rule, ours, x, y, 0.01, 0.9)}
        medians = interleaved_medians(fns, device, reps, steps)
        ratio = medians[label] / medians["backprop"]
        out[label] = {
            "backprop ms per step": medians["backprop"] * 1e3,
            "ms per step": medians[label] * 1e3,
            "ratio to backprop": ratio,
            "cost model": cost,
            "ratio / cost model": ratio / cost,
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="all", help="cpu, cuda or all (cuda where present)")
    p.add_argument("--reps", type=int, default=9, help="interleaved repetitions")
    p.add_argument("--steps", type=int, default=3, help="training steps per timed repetition")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    result = {**machine(), "batch": BATCH, "results": {}}
    for name in devices(args.device):
        result["results"][name] = bench(torch.device(name), args.reps, args.steps)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for name, rows in result["results"].items():
        print(f"{name} (batch {BATCH}):")
        for label, row in rows.items():
            cells = ", ".join(f"{k} {v:.2f}" for k, v in row.items())
            print(f"  {label:16s} {cells}")


if __name__ == "__main__":
    main()
