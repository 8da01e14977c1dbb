"""Markdown tables of a finished sweep folder (its summary.csv and layers.csv), for docs.

    python scripts/sweep_table.py runs/sweep-depth-cpu [--layers]

Rows: grid points at their chosen learning rate; test error mean ± sd over seeds, epochs
to the threshold, and the mean over hidden layers of |apical potential| and of the angle
to backprop. With --layers: per hidden layer the mean over seeds of both, for each point.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path


def _f(v: str, digits: int = 2) -> str:
    x = float(v)
    return "–" if math.isnan(x) else f"{x:.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--layers", action="store_true", help="per-layer table instead")
    args = p.parse_args()
    name = "layers.csv" if args.layers else "summary.csv"
    path = args.folder / name
    if not path.is_file():
        sys.exit(f"error: no {name} in {args.folder}; run the sweep first (apical reproduce)")
    rows = list(csv.DictReader(path.open()))
    axes = list(rows[0])[: list(rows[0]).index("point")]
    if args.layers:
        groups: dict[tuple, dict[str, list[float]]] = {}
        for r in rows:
            if r["chosen"] == "True":
                g = groups.setdefault((*(r[a] for a in axes), r["layer"]), {"ap": [], "an": []})
                g["ap"].append(float(r["apical"]))
                g["an"].append(float(r["angle"]))
        print("| " + " | ".join([*axes, "layer", "mean abs apical", "angle (deg)"]) + " |")
        print("|" + "---|" * (len(axes) + 3))
        for key, g in groups.items():
            ap, an = sum(g["ap"]) / len(g["ap"]), sum(g["an"]) / len(g["an"])
            print("| " + " | ".join([*key, _f(str(ap), 4), _f(str(an), 1)]) + " |")
        return
    print("| " + " | ".join([*axes, "lr", "test error %", "epochs to threshold",
                             "mean abs apical", "angle (deg)"]) + " |")  # fmt: skip
    print("|" + "---|" * (len(axes) + 5))
    for r in rows:
        err = f"{_f(r['test_error'])} ± {_f(r['test_error_sd'])}"
        lr = f"{float(r['lr']):g}"
        tail = [_f(r["epochs_to_threshold"], 1), _f(r["apical"], 4), _f(r["angle"], 1)]
        cells = [*(r[a] for a in axes), lr, err, *tail]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
