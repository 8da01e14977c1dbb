"""Choose each run's learning rate of an experiment on its validation split.

    python scripts/choose_lr.py fa-mnist --lrs 0.01,0.05,0.2 --epochs 3 [--json]
    python scripts/choose_lr.py fa-mnist --lrs 0.01,0.05,0.2 --epochs 10 --asha
    python scripts/choose_lr.py burstprop-mnist --scales 0.3,1,3 --epochs 15 \
        --set 'schedule="cosine"'

Trains every run of the experiment at every learning rate for a few epochs and prints the
validation error (the test set is not looked at); the best lr per run is marked. With
--ray every (run, lr) pair is a Ray Tune trial (apical.tune), all at once as the CPUs
allow; --asha also lets Tune's ASHA scheduler stop a pair whose validation error trails
the others' at the same epoch (its row says where it stopped; the best lr is chosen
among the pairs that ran every epoch).

With --scales each run trains once, its learning rates (every layer's, output included)
multiplied by each factor, the factors side by side as replicas of one network (the same
seed: `seeds` and `lr_scales`, apical.replicas): a sweep that costs one batched run. Exact
for sgd without weight decay and decoupled_sgd, where scaling the direction is scaling the
rate; a replica that diverges alone counts as 100 % error while the others go on.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from apical.tune import RayOptions, train_on_ray


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
    p.add_argument("--ray", action="store_true", help="train the pairs as Ray Tune trials")
    p.add_argument("--asha", action="store_true", help="stop poor pairs early (ASHA; --ray)")
    p.add_argument("--trial-cpus", type=float, default=1.0, help="CPUs of each Ray trial")
    p.add_argument("--scales", help="comma-separated factors on each run's own rates, as replicas")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    exp = load(args.experiment)
    if exp.kind != "train":
        raise ApicalError(f"{exp.name} is a {exp.kind} experiment; choose_lr takes train ones")
    lrs = positive_numbers(args.lrs, "--lrs")
    extra = parse_assignments(args.set, "--set")
    if args.scales:
        return print_scales(exp, positive_numbers(args.scales, "--scales"), args, extra)
    results: dict[str, dict[str, float]] = {}
    stopped: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        configs = {}
        for lr in lrs:
            for label, cfg in picked_configs(exp, Path(tmp) / str(lr), args, extra, lr=lr).items():
                configs[(label, str(lr))] = cfg
        named = {f"{label}@lr={lr}": cfg for (label, lr), cfg in configs.items()}
        if args.ray or args.asha:
            scheduler = None
            if args.asha:
                from ray.tune.schedulers import ASHAScheduler

                scheduler = ASHAScheduler(metric="val_error", mode="min", max_t=args.epochs,
                                          grace_period=1, time_attr="epoch")  # fmt: skip
            runs = train_on_ray(named, RayOptions(cpus=args.trial_cpus), Path(tmp) / "ray",
                                echo=lambda s: None, scheduler=scheduler)  # fmt: skip
        else:
            runs = train_all(named, progress=False, echo=lambda s: None)
        for (label, lr), name in zip(configs, named, strict=True):
            run = runs[name]
            results.setdefault(label, {})[lr] = final_val_error(run)
            if run.history and run.history[-1]["epoch"] < args.epochs and not run.diverged:
                stopped.setdefault(label, {})[lr] = run.history[-1]["epoch"]
    best = {label: min((lr for lr in v if lr not in stopped.get(label, {})), key=v.get)
            for label, v in results.items()}  # fmt: skip
    if args.json:
        print(json.dumps({"epochs": args.epochs, "val_error": results, "best_lr": best,
                          "stopped_at_epoch": stopped}))  # fmt: skip
        return

    def cell(label: str, lr: float) -> str:
        at = stopped.get(label, {}).get(str(lr))
        return f"{results[label][str(lr)]:.2f}" + (f" (stopped, epoch {at})" if at else "")

    rows = [[label, *(cell(label, lr) for lr in lrs), best[label]] for label in results]
    print(f"{exp.name}: validation error (%) after {args.epochs} epochs")
    print(format_table(["run", *(f"lr={lr:g}" for lr in lrs), "best lr"], rows))


def positive_numbers(text: str, flag: str) -> list[float]:
    """Comma-separated positive numbers (ApicalError naming the flag otherwise)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(v > 0 for v in values):
        raise ApicalError(f"{flag} {text!r}: give comma-separated positive numbers, e.g. 0.5,1,2")
    return values


def picked_configs(exp, folder: Path, args: argparse.Namespace, extra: dict, **more) -> dict:
    """The configs of the runs picked by --runs (all by default), shortened to --epochs,
    without probes, with the --set fields and `more`, training under folder/NAME."""
    overrides = dict(epochs=args.epochs, data_dir=args.data_dir, device=args.device,
                     probe_every=0, **extra, **more)  # fmt: skip
    overrides = {k: v for k, v in overrides.items() if v is not None}
    configs = RUNNER.configs(exp, folder / exp.name, overrides)
    return {label: cfg for label, cfg in configs.items()
            if not args.runs or label in args.runs.split(",")}  # fmt: skip


def final_val_error(run) -> float:
    """Validation error (%) at the run's last epoch: the mean over its replicas (a run of
    `seeds`); a diverged run or replica (NaN loss) counts as 100 %."""
    if run.diverged or not run.history:
        return 100.0
    last = [r for r in run.history if r["epoch"] == run.history[-1]["epoch"]]
    errors = [100.0 if "diverged_step" in r else 100 * (1 - r["val_accuracy"]) for r in last]
    return sum(errors) / len(errors)


def print_scales(exp, scales: list[float], args: argparse.Namespace, extra: dict) -> None:
    """The --scales sweep: one replicated run per experiment run, a replica per factor."""
    if args.ray or args.asha:
        raise ApicalError("--scales trains each run as one batched run; leave out --ray/--asha")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        configs = picked_configs(exp, Path(tmp), args, extra)
        configs = {label: dataclasses.replace(cfg, seeds=[cfg.seed] * len(scales),
                                              lr_scales=scales)
                   for label, cfg in configs.items()}  # fmt: skip
        for label, cfg in configs.items():
            run = train_all({label: cfg}, progress=False, echo=lambda s: None)[label]
            last = {row["lr_scale"]: row for row in run.history if row["epoch"] == args.epochs}
            results[label] = {
                str(c): 100.0 if c not in last or "diverged_step" in last[c]
                else 100 * (1 - last[c]["val_accuracy"])
                for c in scales
            }  # fmt: skip
    best = {label: min(v, key=v.get) for label, v in results.items()}
    if args.json:
        print(json.dumps({"epochs": args.epochs, "scales": scales, "val_error": results,
                          "best_scale": best}))  # fmt: skip
        return
    rows = [[label, *(f"{v[str(c)]:.2f}" for c in scales), best[label]]
            for label, v in results.items()]  # fmt: skip
    print(f"{exp.name}: validation error (%) after {args.epochs} epochs, rates x scale")
    print(format_table(["run", *(f"x{c:g}" for c in scales), "best scale"], rows))


if __name__ == "__main__":
    try:
        main()
    except ApicalError as e:
        sys.exit(f"error: {e}")
