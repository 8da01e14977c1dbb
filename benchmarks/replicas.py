"""Training R replicas side by side (apical.replicas) against R separate networks.

    python benchmarks/replicas.py [--device cpu|cuda|all] [--replicas 1,3,9] [--reps 5]
                                  [--net mlp|conv] [--json]

Model (`--net mlp`): the NN 2021 MNIST net 784-500x3-10 (logistic, squared error) at batch
32; (`--net conv`) the NN 2021 CIFAR-10 conv net on 1x28x28 images (Fashion-MNIST's
shape; conv Z for burstprop), batch 32; for backprop, FA and burstprop with learned
feedback and Z. One step = the rule's directions,
`.grad`, an SGD-with-momentum step and after_step, on synthetic inputs. Reported per rule
and R: seconds per step of the replicated model divided by R times the seconds per step of
one ordinary network (below 1: replicas pay); medians of interleaved repetitions in a
shuffled order. CPU denormals are flushed to zero, as in the trainer's epoch loop.
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

import apical
from apical.models import burstprop_convnet, burstprop_mlp
from apical.replicas import replicate
from apical.train import denormals_flushed

RULES = {
    "backprop": {"loss": "mse"},
    "fa": {"loss": "mse"},
    "burstprop (learned feedback + Z)": {"learn_feedback": True, "recurrent": True},
}
NETS = {"mlp": burstprop_mlp, "conv": burstprop_convnet}


def _step(rule, model, x, y) -> Callable[[], None]:
    return training_step(rule, model, x, y, lr=0.01, momentum=0.9)


def bench(device: torch.device, counts: list[int], reps: int, steps: int, net: str) -> dict:
    out = {}
    for label, opts in RULES.items():
        name = "burstprop" if label.startswith("burstprop") else label
        if name == "burstprop" and net == "conv":
            opts = {**opts, "recurrent_conv": True}
        rule = apical.make_rule(name, **opts)
        fns = {}
        for r in [1, *counts]:
            torch.manual_seed(r)
            x = torch.randn(r, 32, 1, 28, 28, device=device)
            y = torch.randint(0, 10, (r, 32), device=device)
            models = [apical.convert(NETS[net]((1, 28, 28), 10), rule, x[0, :2].cpu())
                      for _ in range(r)]  # fmt: skip
            if r == 1:
                fns["single"] = _step(rule, models[0].to(device), x[0], y[0])
            fns[r] = _step(rule, replicate(models).to(device), x, y)
        medians = interleaved_medians(fns, device, reps, steps)
        single = medians["single"]
        out[label] = {"single network seconds per step": single}
        out[label].update({
            f"R={r}": medians[r] / (r * single) for r in counts
        })  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="all", help="cpu, cuda or all (cuda where present)")
    p.add_argument("--replicas", default="1,3,9", help="comma-separated replica counts")
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    p.add_argument("--steps", type=int, default=10, help="steps per timed repetition")
    p.add_argument("--net", default="mlp", choices=list(NETS))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    counts = [int(v) for v in args.replicas.split(",")]
    with denormals_flushed():  # as in the trainer's epoch loop
        result = {
            **machine(),
            "net": args.net,
            "time per replica-step / single network": {
                d: bench(torch.device(d), counts, args.reps, args.steps, args.net)
                for d in devices(args.device)
            },
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for dev, rules in result["time per replica-step / single network"].items():
        where = result["gpu"] if dev == "cuda" else f"CPU, {result['threads']} threads"
        print(f"\n{dev} ({where}): time per replica-step / one ordinary network's step")
        for label, row in rules.items():
            single = row["single network seconds per step"]
            ratios = "  ".join(f"{k} {v:.2f}" for k, v in row.items() if k.startswith("R="))
            print(f"  {label:<34} single {1e3 * single:.1f} ms   {ratios}")


if __name__ == "__main__":
    main()
