"""The eLife 2017 repeated weight tests (n = 20) of trained segregated-dendrite run folders.

Each run folder's final weights (its checkpoint) are tested `--repeats` times on the
10,000 MNIST test images, each repeat with its own keyed Poisson spikes; prints the mean,
s.d., min and max test error per run (the paper's Figs. 6B, 8B, 8D, 9B show min-max spreads
of 20 such tests; originals.md 1.14k), and with --json writes them as one JSON object.

    python scripts/dendrite_weight_tests.py RUN_DIR [RUN_DIR ...] [--data-dir DIR]
        [--repeats 20] [--images 10000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from apical.data import load_dataset
from apical.dendrites.evaluation import load_trained, run_config, spread, weight_tests
from apical.errors import ApicalError
from apical.run_folder import RunFolder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="segregated_dendrites run folders")
    p.add_argument("--data-dir", default=None, help="dataset folder (default: $APICAL_DATA)")
    p.add_argument("--repeats", type=int, default=20, help="test passes per run (paper: 20)")
    p.add_argument("--images", type=int, default=10000, help="the first N test images")
    p.add_argument("--json", type=Path, help="write the results to this file")
    args = p.parse_args()
    try:
        report(args)
    except ApicalError as e:
        sys.exit(f"error: {e}")


def report(args: argparse.Namespace) -> None:
    for run in args.runs:
        run_config(run)  # every folder checked before the first long test
    data = load_dataset("mnist", args.data_dir, val_size=10000, standardize=False)
    if not 1 <= args.images <= len(data.x_test):
        raise ApicalError(f"--images takes 1 to {len(data.x_test)}, got {args.images}")
    x, y = data.x_test[: args.images].reshape(args.images, -1), data.y_test[: args.images]
    where = f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    results = {"machine": where, "torch": torch.__version__, "repeats": args.repeats, "runs": {}}
    for run in args.runs:
        net, _ = load_trained(run, data.input_shape, data.n_classes, compile=True)
        t0 = time.perf_counter()
        errors = weight_tests(net, x, y, args.repeats)
        s = spread(errors)
        epochs = len(RunFolder(run).rows())
        results["runs"][str(run)] = {**s, "epochs": epochs, "errors": errors.tolist(),
                                     "seconds": time.perf_counter() - t0}  # fmt: skip
        print(f"{run} (epoch {epochs}, preset {net.config.preset}): test error "
              f"{s['mean']:.2f} +- {s['sd']:.2f} % (min {s['min']:.2f}, max {s['max']:.2f}; "
              f"{args.repeats} repeats, {time.perf_counter() - t0:.0f} s on {where})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"written: {args.json}")


if __name__ == "__main__":
    main()
