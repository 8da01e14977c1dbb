"""A run's last alignment probe per layer, as a markdown table, for docs.

    python scripts/final_probes.py RUN_DIR [RUN_DIR ...]

Reads each folder's probes.jsonl and takes the last probe of each replica (one for a run
without replicas). Prints per run and layer the mean over replicas of every probed value
(the update's angle to backprop's and sign agreement, the per-example delta angle, the
mean |apical potential|, the feedback's angle to W^T and norm ratio), with the s.d. over
replicas where there are several.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from apical.errors import ApicalError
from apical.run_folder import RunFolder

VALUES = ["angle", "sign_agreement", "delta_angle", "apical", "feedback_angle",
          "feedback_norm_ratio"]  # fmt: skip


def last_probes(run_dir: Path) -> list[dict]:
    """The last probe row of each replica (by its "replica" tag)."""
    try:
        rows = RunFolder(run_dir).rows("probes")
    except ApicalError as e:
        sys.exit(f"error: {e}")
    if not rows:
        sys.exit(f"error: no probes in {run_dir}; name a run folder trained with probe_every > 0")
    last = {}
    for row in rows:
        last[row.get("replica")] = row
    return list(last.values())


def summary(probes: list[dict]) -> dict[str, dict[str, tuple[float, float | None]]]:
    """Per layer and value: (mean, s.d. or None) over the replicas' probes."""
    out: dict[str, dict[str, tuple[float, float | None]]] = {}
    for layer in probes[0]["layers"]:
        for key in VALUES:
            vs = [p["layers"][layer].get(key) for p in probes]
            if any(v is None for v in vs):
                continue
            sd = statistics.stdev(vs) if len(vs) > 1 else None  # over replicas (n - 1)
            out.setdefault(layer, {})[key] = (statistics.fmean(vs), sd)
    return out


def _cell(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3g}" + ("" if sd is None else f" ± {sd:.2g}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="run folders")
    args = p.parse_args()
    print("| run | layer | " + " | ".join(VALUES) + " |")
    print("|---" * (len(VALUES) + 2) + "|")
    for run in args.runs:
        probes = last_probes(run)
        for layer, values in summary(probes).items():
            cells = [_cell(*values.get(key, (None, None))) for key in VALUES]
            print(f"| {run.name} ({len(probes)}) | {layer} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
