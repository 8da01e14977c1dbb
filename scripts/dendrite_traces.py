"""eLife Fig. 4 for one MNIST image: a hidden neuron's basal, somatic and apical voltages,
its plateaus, and the output somata through the forward and target phases.

    python scripts/dendrite_traces.py [RUN_DIR] [--data-dir DIR] [--index 0] [--out FILE]

With RUN_DIR (a segregated_dendrites run folder) the trained weights of its checkpoint
are used, else a freshly initialised 784-500-10 net (seed 0, preset original-code).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from apical.data import load_dataset
from apical.dendrites.evaluation import load_trained, run_config
from apical.dendrites.simulate import record
from apical.errors import ApicalError
from apical.models import build_model
from apical.plots import plot_dendrite_traces


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", nargs="?", type=Path)
    p.add_argument("--data-dir")
    p.add_argument("--index", type=int, default=0, help="test image to show")
    p.add_argument("--out", type=Path, default=Path("dendrite-traces.png"))
    args = p.parse_args()
    if args.run is not None:
        run_config(args.run)  # a clear error before the data loads
    data = load_dataset("mnist", args.data_dir, val_size=1000, standardize=False)
    if args.run is not None:
        net, _ = load_trained(args.run, data.input_shape, data.n_classes)
    else:
        torch.manual_seed(0)
        options = {"preset": "original-code", "hidden": [500]}
        net = build_model("segregated_dendrites", data.input_shape, data.n_classes, **options)
    x, label = data.x_test[args.index : args.index + 1].reshape(1, -1), int(data.y_test[args.index])
    trace = record(net.config, net.params(), x, label, key=args.index)
    where = f"trained ({args.run})" if args.run else "untrained"
    title = f"test image {args.index} (a {label}), {where}, preset {net.config.preset}"
    print(f"figure: {plot_dendrite_traces(trace, label, args.out, title)}")


if __name__ == "__main__":
    try:
        main()
    except ApicalError as e:
        sys.exit(f"error: {e}")
