"""Choose each run's learning rate of an experiment on its validation split.

    python scripts/choose_lr.py fa-mnist --lrs 0.01,0.05,0.2 --epochs 3 [--json]

Trains every run of the experiment at every learning rate for a few epochs and prints the
validation error (the test set is not looked at); the best lr per run is marked.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from apical.cli import format_table, parse_assignments
from apical.errors import ApicalError
from apical.experiments import load
from apical.experiments.train_runs import RUNNER
from apical.train import train_all


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("experiment")
    p.add_argument("--lrs", default="0.01,0.05,0.2", help="comma-separated learning rates")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--data-dir")
    p.add_argument("--device")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override a config field for every run, e.g. --set standardize=false",
    )
    p.add_argument("--runs", help="comma-separated run labels (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    exp = load(args.experiment)
    if exp.kind != "train":
        raise ApicalError(f"{exp.name} is a {exp.kind} experiment; choose_lr takes train ones")
    lrs = [float(s) for s in args.lrs.split(",")]
    extra = parse_assignments(args.set, "--set")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for lr in lrs:
            overrides = dict(epochs=args.epochs, lr=lr, data_dir=args.data_dir,
                             device=args.device, probe_every=0, **extra)  # fmt: skip
            overrides = {k: v for k, v in overrides.items() if v is not None}
            configs = RUNNER.configs(exp, Path(tmp) / str(lr) / exp.name, overrides)
            if args.runs:
                configs = {k: v for k, v in configs.items() if k in args.runs.split(",")}
            for label, run in train_all(configs, progress=False, echo=lambda s: None).items():
                # a diverged run (NaN loss) counts as 100 % error
                val = 0.0 if run.diverged else run.history[-1]["val_accuracy"]
                results.setdefault(label, {})[str(lr)] = 100 * (1 - val)
    best = {label: min(v, key=v.get) for label, v in results.items()}
    if args.json:
        print(json.dumps({"epochs": args.epochs, "val_error": results, "best_lr": best}))
        return
    rows = [[label, *(v[str(lr)] for lr in lrs), best[label]] for label, v in results.items()]
    print(f"{exp.name}: validation error (%) after {args.epochs} epochs")
    print(format_table(["run", *(f"lr={lr:g}" for lr in lrs), "best lr"], rows))


if __name__ == "__main__":
    try:
        main()
    except ApicalError as e:
        sys.exit(f"error: {e}")
