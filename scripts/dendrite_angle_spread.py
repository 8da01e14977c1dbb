"""How much the segregated-dendrite angle to backprop (eLife Fig. 7A) moves with the probe.

For a trained run folder, on several probe sets of training images (each with its own
spike draws), simulated from rest: the mean per-image angle between the hidden update and
backprop's, its 10/50/90 % quantiles, and the mean angle when backprop's error is formed
with the output weights already updated for that image (as the authors' code did;
originals.md 1.14h). One-hidden-layer nets only.

    python scripts/dendrite_angle_spread.py RUN_DIR [--data-dir DIR] [--sets 4] [--size 256]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from apical.data import load_dataset
from apical.dendrites import learning
from apical.dendrites.evaluation import load_trained, run_config
from apical.errors import ApicalError
from apical.keyed import example_keys


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--sets", type=int, default=4, help="probe sets (seeds 0, 1, ...)")
    p.add_argument("--size", type=int, default=256, help="images per probe set")
    args = p.parse_args()
    try:
        report(args)
    except ApicalError as e:
        sys.exit(f"error: {e}")


@torch.no_grad()
def report(args: argparse.Namespace) -> None:
    config = run_config(args.run)
    if len(config.get("model_options", {}).get("hidden", [])) != 1:
        raise ApicalError(f"{args.run} is not a one-hidden-layer segregated_dendrites run")
    data = load_dataset("mnist", args.data_dir, val_size=config["val_size"], standardize=False)
    net, _ = load_trained(args.run, data.input_shape, data.n_classes)
    c, params = net.config, net.params()
    lr_out = config.get("output_lr") or config["lr"]
    q = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    print(f"{args.run}: {args.size} training images per set, simulated from rest")
    for s in range(args.sets):
        pick = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(s))
        pick = pick[: args.size]
        x, y = data.x_train[pick].reshape(len(pick), -1), data.y_train[pick]
        avg, _ = net.present(x, y, example_keys(s, 0, pick), carry=False)
        errs = learning.errors(c, avg)
        ours, before = errs.errors[0], learning.backprop_errors(c, params, avg)[0]
        # backprop's error through W_out + lr * (output update of this image): delta^out's
        # product with the update adds (lr e^out . delta^out) sbar along the hidden rates
        v_out = avg.soma_f[-1]
        delta = c.k_d * c.rate_max * learning.sigmoid_slope(v_out)
        delta = delta * (avg.rate_t - c.rate_max * torch.sigmoid(v_out))
        slope = c.k_b * c.rate_max * learning.sigmoid_slope(avg.soma_f[0])
        shift = lr_out * (errs.errors[-1] * delta).sum(-1, keepdim=True) * avg.basal_f[-1]
        after = slope * (delta @ params.weights[-1] + shift)
        angles = learning.row_angles(ours, before)
        lo, mid, hi = angles.nanquantile(q).tolist()
        moved = float(learning.row_angles(ours, after).nanmean())
        print(
            f"set {s}: mean {float(angles.nanmean()):.1f} deg (10/50/90 %: {lo:.0f}/{mid:.0f}/"
            f"{hi:.0f}); with the updated output weights {moved:.2f} deg"
        )


if __name__ == "__main__":
    main()
