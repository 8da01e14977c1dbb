"""Recall of every class on a trained run's test (or validation) split, per replica: which
classes a net predicts, and which it never does.

    python scripts/class_recall.py RUN_DIR [RUN_DIR ...] [--split test|val] [--data-dir PATH]

Builds each run's model from its config.json, loads the weights of its checkpoint.pt (the
last epoch it saved) and predicts the split (the argmax of the output, as the accuracy of
the metrics rows). Prints per run and replica the accuracy, the recall of each class and
the classes never predicted at all. A class whose output unit never wins shows as 0 %
recall; one that is never among the top five caps top-5 accuracy at 90 % on a balanced
10-class split, the plateaus of a logistic net whose output units come alive one by one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from apical.errors import ApicalError
from apical.run_folder import RunFolder
from apical.train import TrainConfig, build, load_config_data


def recall(run_dir: Path, split: str, data_dir: str | None) -> list[dict]:
    """Per replica: accuracy, recall per class and the classes never predicted."""
    folder = RunFolder(run_dir)
    fields = folder.config()
    if fields is None:
        raise ApicalError(f"{run_dir} holds no run (no config.json); name a run folder")
    config = TrainConfig.from_dict({**fields, "device": "cpu",
                                    **({"data_dir": data_dir} if data_dir else {})})  # fmt: skip
    data = load_config_data(config)
    x, y = (data.x_test, data.y_test) if split == "test" else (data.x_val, data.y_val)
    if len(x) == 0:
        raise ApicalError(f"{run_dir} has no {split} split; use --split test")
    model, _ = build(config, data, torch.device("cpu"))
    model.load_state_dict(folder.checkpoint()["model"])
    model.eval()
    replicas = None if config.seeds is None else len(config.seeds)
    chunks = []
    with torch.no_grad():
        for i in range(0, len(x), 2048):
            xb = x[i : i + 2048]
            out = model(xb if replicas is None else xb.expand(replicas, *xb.shape))
            chunks.append(out.argmax(-1).reshape(-1, len(xb)))  # (replicas or 1, batch)
    predicted = torch.cat(chunks, dim=1)
    seeds = config.seeds or [config.seed]
    out = []
    for seed, pred in zip(seeds, predicted, strict=True):
        per_class = [float((pred[y == c] == c).double().mean()) for c in range(data.n_classes)]
        never = [c for c in range(data.n_classes) if not bool((pred == c).any())]
        out.append({"seed": seed, "accuracy": float((pred == y).double().mean()),
                    "recall": per_class, "never_predicted": never})  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="run folders")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--data-dir", default=None, help="the datasets' folder (else APICAL_DATA)")
    args = p.parse_args()
    try:
        for run in args.runs:
            for r in recall(run, args.split, args.data_dir):
                cells = " ".join(f"{100 * v:.0f}" for v in r["recall"])
                print(f"{run.name} seed {r['seed']}: accuracy {100 * r['accuracy']:.2f} %, "
                      f"recall per class (%) {cells}; never predicted: "
                      f"{r['never_predicted'] or 'none'}")  # fmt: skip
    except ApicalError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
