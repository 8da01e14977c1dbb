"""Contrastive Hebbian learning on O'Reilly's small tasks: XOR and the 8-3-8 encoder, ten
seeds each, trained by the one trainer; a task is solved when every pattern's output
arg-max is right after the last epoch.

    python scripts/chl_small_tasks.py [--seeds 10] [--variant chl|generec] [--json]

Nets: 2-4-2 (XOR, two one-hot outputs) and 8-3-8 (the eight one-hot patterns reproduced),
logistic hidden and output units, 30 minus and 30 plus settling steps, full-batch SGD.
XOR: full feedback (gamma 1), lr 1, the plain settling iteration, 500 epochs. The
encoder: feedback gain gamma 0.5 with Xie & Seung's layer-wise rates (the hidden layer's
lr / gamma), lr 1 with momentum 0.5, settling steps of 0.5, 3,000 epochs (in development
runs, full feedback left some seeds stuck for good with two patterns merged, and momentum
0.9 more of them). `--rule backprop` trains the same nets with the
same budget; `--gamma` overrides the task's gain. The seconds each task took are in the
output (one CPU thread).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from apical.data import Dataset, load_dataset
from apical.train import TrainConfig, train

TASKS = {  # task: (hidden units, lr, momentum, epochs, settling step, feedback gain)
    "xor": (4, 1.0, 0.0, 500, 1.0, 1.0),
    "encoder-8-3-8": (3, 1.0, 0.5, 3000, 0.5, 0.5),
}


def encoder(n: int = 8) -> Dataset:
    x, y = torch.eye(n), torch.arange(n)
    return Dataset(f"encoder-{n}", x, y, x, y, x, y, n)


def solve(task: str, seed: int, rule: str, variant: str, gamma: float | None) -> bool:
    hidden, lr, momentum, epochs, step_size, task_gamma = TASKS[task]
    gamma = task_gamma if gamma is None else gamma
    data = load_dataset("xor") if task == "xor" else encoder()
    config = TrainConfig.from_dict({
        "dataset": "xor", "model": "mlp", "seed": seed, "device": "cpu",
        "model_options": {"hidden": [hidden], "activation": "sigmoid",
                          "output_activation": "sigmoid"},
        "rule": rule, "loss": "mse", "momentum": momentum,
        "rule_options": {"variant": variant, "gamma": gamma, "minus_steps": 30,
                         "plus_steps": 30, "scale_layers": gamma != 1.0, "step_size": step_size}
        if rule == "contrastive_hebbian" else {},
        "lr": lr, "batch_size": len(data.x_train), "epochs": epochs, "eval_every": epochs,
        "probe_every": 0,
    })  # fmt: skip
    run = train(config, progress=False, data=data)
    return run.history[-1]["test_accuracy"] == 1.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument(
        "--rule", default="contrastive_hebbian", choices=["contrastive_hebbian", "backprop"]
    )
    p.add_argument("--variant", default="chl", choices=["chl", "generec"])
    p.add_argument("--gamma", type=float, help="feedback gain (default: the task's)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = {
        "rule": args.rule,
        "variant": args.variant,
        "gamma": args.gamma,
        "tasks": {},
    }
    for task in args.tasks:
        hidden, lr, momentum, epochs, step_size, gamma = TASKS[task]
        t0 = time.perf_counter()
        solved = [solve(task, s, args.rule, args.variant, args.gamma)
                  for s in range(args.seeds)]  # fmt: skip
        out["tasks"][task] = {
            "hidden": hidden, "lr": lr, "momentum": momentum, "epochs": epochs,
            "step_size": step_size, "seeds": args.seeds,
            "gamma": gamma if args.gamma is None else args.gamma,
            "solved": sum(solved), "unsolved_seeds": [s for s, ok in enumerate(solved) if not ok],
            "seconds": time.perf_counter() - t0,
        }  # fmt: skip
    if args.json:
        print(json.dumps(out, indent=1))
        return
    for task, row in out["tasks"].items():
        print(f"{task}: solved {row['solved']} of {row['seeds']} ({row['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
