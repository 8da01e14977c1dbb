"""Time per training example of the dendritic microcircuit against plain PyTorch backprop
on the same 784-500-500-10 logistic net, same process; and the continuous dynamics'
simulated steps per second.

    python benchmarks/microcircuit.py [--device cpu|cuda|all] [--reps 15] [--json]

Training steps are taken as the trainer takes them (directions, `.grad`, SGD with momentum
0.9, `after_step`) at batch 10 (the paper's minibatch) and 128. The microcircuit runs the
simplified dynamics with the paper's MNIST plasticity (forward and pyramid-to-interneuron
weights learn; top-down and interneuron-to-pyramid weights fixed); the cost model is 6-8
forward passes against backprop's 3, so at most 3x. Backprop is an ordinary nn.Sequential
(Linear + Sigmoid, MSE, loss.backward()). The continuous dynamics are timed per Euler step
of the whole network (pyramids and interneurons) at batch 1 and 128. Inputs are synthetic.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable

import torch
from rules_vs_backprop import devices, interleaved_medians, machine, training_step
from torch import nn

import apical
from apical.losses import get_loss
from apical.microcircuit import dynamics
from apical.microcircuit.network import microcircuit

SIZES = (784, 500, 500, 10)


def _plain_step(x, y) -> Callable[[], None]:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(SIZES):
        layers += [nn.Linear(a, b), nn.Sigmoid()]
    model = nn.Sequential(*layers).to(x.device)
    opt, loss = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9), get_loss("mse")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss(model(x), y).backward()
        opt.step()

    return step


def _euler(batch: int, device: torch.device, steps: int) -> Callable[[], None]:
    net = microcircuit((784,), 10, dynamics="continuous").to(device)
    x = torch.rand(batch, 784, device=device)
    target = net.target_potentials(torch.randint(0, 10, (batch,), device=device))
    params = net.params()

    def run() -> None:
        with torch.no_grad():
            dynamics.euler(net.config, params, x, target, steps=steps)

    return run


def bench(device: torch.device, reps: int, steps: int, euler_steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    out: dict[str, float] = {}
    for batch in (10, 128):
        x = torch.rand(batch, 784, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        net = microcircuit((784,), 10).to(device)
        fns = {
            "backprop": _plain_step(x, y),
            "microcircuit": training_step(apical.make_rule("microcircuit"), net, x, y, 0.01, 0.9),
        }
        medians = interleaved_medians(fns, device, reps, steps)
        out[f"batch {batch}: backprop ms per example"] = medians["backprop"] / batch * 1e3
        out[f"batch {batch}: microcircuit / backprop"] = (
            medians["microcircuit"] / medians["backprop"]
        )
    euler = {b: _euler(b, device, euler_steps) for b in (1, 128)}
    medians = interleaved_medians({f"batch {b}": f for b, f in euler.items()}, device, reps, 1)
    for b in euler:
        out[f"continuous, batch {b}: Euler steps per second"] = euler_steps / medians[f"batch {b}"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="all", help="cpu, cuda or all (cuda where present)")
    p.add_argument("--reps", type=int, default=15, help="interleaved repetitions")
    p.add_argument("--steps", type=int, default=5, help="training steps per timed repetition")
    p.add_argument("--euler-steps", type=int, default=100, help="Euler steps per timed call")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    result = {**machine(), "results": {}}
    for name in devices(args.device):
        result["results"][name] = bench(torch.device(name), args.reps, args.steps, args.euler_steps)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for name, rows in result["results"].items():
        print(f"{name}:")
        for label, v in rows.items():
            print(f"  {label:50s} {v:.3f}")


if __name__ == "__main__":
    main()
