"""Test error per epoch of run folders against a baseline run, as a markdown table, for docs.

    python scripts/epoch_table.py BASE_DIR RUN_DIR [RUN_DIR ...] [--epochs 1,2,5,10]

Reads each folder's metrics.jsonl (test error = 100 (1 - test_accuracy); for a run of
replicas, the mean over them at each epoch). Prints the table
at the given epochs (default 1, 2, 5, then every 5th) and, per run over the epochs it shares
with the baseline: the mean difference to the baseline (all epochs and the last 5), the
number of epochs where it is worse, and both means.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from apical.errors import ApicalError
from apical.run_folder import RunFolder


def test_errors(run_dir: Path) -> dict[int, float]:
    """Test error (%) by epoch from a run folder's metrics.jsonl (mean over replicas)."""
    folder = RunFolder(run_dir)
    if not folder.has_rows():
        sys.exit(f"error: no metrics.jsonl in {run_dir}; name a run folder (runs/EXPERIMENT/LABEL)")
    try:
        rows = folder.rows()
    except ApicalError as e:
        sys.exit(f"error: {e}")
    by_epoch: dict[int, list[float]] = {}
    for r in rows:
        if r.get("test_accuracy") is not None:
            by_epoch.setdefault(r["epoch"], []).append(100 * (1 - r["test_accuracy"]))
    return {e: sum(v) / len(v) for e, v in by_epoch.items()}


def compare(base: dict[int, float], run: dict[int, float]) -> dict[str, float]:
    """Statistics of run minus base over the epochs both have."""
    shared = sorted(set(base) & set(run))
    diffs = [run[e] - base[e] for e in shared]
    last = diffs[-5:]
    return {
        "epochs": len(shared),
        "mean_diff": sum(diffs) / len(diffs),
        "mean_diff_last5": sum(last) / len(last),
        "worse": sum(d > 0 for d in diffs),
        "mean": sum(run[e] for e in shared) / len(shared),
        "base_mean": sum(base[e] for e in shared) / len(shared),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("base", type=Path, help="baseline run folder")
    p.add_argument("runs", type=Path, nargs="+", help="run folders to compare with it")
    p.add_argument("--epochs", help="comma-separated epochs for the table (default 1,2,5,10,...)")
    args = p.parse_args()
    base = test_errors(args.base)
    runs = {r: test_errors(r) for r in args.runs}
    if not base or not all(runs.values()):
        sys.exit("error: a run folder has no test_accuracy rows yet; train at least one epoch")
    last = max(max(base), *(max(r) for r in runs.values()))
    try:
        epochs = [int(e) for e in args.epochs.split(",")] if args.epochs else None
    except ValueError:
        sys.exit(f"error: --epochs {args.epochs!r} is not a comma-separated list of integers")
    epochs = epochs or [e for e in (1, 2, *range(5, last + 1, 5)) if e <= last]
    folders = [args.base, *args.runs]
    print("| epoch | " + " | ".join(str(e) for e in epochs) + " |")
    print("|---" * (len(epochs) + 1) + "|")
    for folder, errs in zip(folders, [base, *runs.values()], strict=True):
        cells = (f"{errs[e]:.2f}" if e in errs else "–" for e in epochs)
        print(f"| {folder.name} | " + " | ".join(cells) + " |")
    print()
    for folder, errs in runs.items():
        s = compare(base, errs)
        print(
            f"{folder.name} - {args.base.name} over {s['epochs']} epochs: mean difference "
            f"{s['mean_diff']:+.2f} (last 5: {s['mean_diff_last5']:+.2f}), worse at "
            f"{s['worse']} of {s['epochs']}, means {s['mean']:.2f} against {s['base_mean']:.2f} %"
        )


if __name__ == "__main__":
    main()
