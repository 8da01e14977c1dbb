"""Validation error of the segregated-dendrite network after one pass over N MNIST images,
for a batch size and learning rate (the online protocol is B = 1, lr 0.21).

    python scripts/dendrites_first_pass.py --batch 1 --lr 0.21 --images 3000 [--preset P]
                                          [--data-dir DIR] [--json]

2,000 training images are held out for validation; the test set is reported too.
"""

from __future__ import annotations

import argparse
import json
import sys

from apical.errors import ApicalError
from apical.train import TrainConfig, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.21)
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--preset", default="original-code")
    p.add_argument("--data-dir")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    config = TrainConfig(
        dataset="mnist", data_dir=args.data_dir, val_size=2000, train_size=args.images,
        standardize=False, model="segregated_dendrites",
        model_options={"preset": args.preset, "compile": True}, rule="segregated_dendrites",
        loss="mse", optimizer="sgd", momentum=0.0, lr=args.lr, batch_size=args.batch,
        epochs=1, probe_every=0, seed=0,
    )  # fmt: skip
    last = train(config, progress=False).history[-1]
    row = {
        "batch": args.batch, "lr": args.lr, "images": args.images, "preset": args.preset,
        "val_error": 100 * (1 - last["val_accuracy"]),
        "test_error": 100 * (1 - last["test_accuracy"]),
        "train_seconds": last["seconds"],
    }  # fmt: skip
    print(json.dumps(row) if args.json else "  ".join(f"{k} {v}" for k, v in row.items()))


if __name__ == "__main__":
    try:
        main()
    except ApicalError as e:
        sys.exit(f"error: {e}")
