"""Mean and spread over seeds of a continual experiment's runs, for docs: one experiment
folder per seed (`apical reproduce NAME` and `apical reproduce NAME --seed N`).

    python scripts/continual_seeds.py runs/active-dendrites-pmnist \
        runs/active-dendrites-pmnist-seed-1 [--plot tasks-seeds.png] [--json]

Per run (label) and number of tasks learned: the mean test accuracy over the tasks seen,
as mean ± s.d. over the folders whose run has finished that task (n says how many where
not all have; one value alone has no spread). Each
folder's seed is read from its runs' config.json, so a table never mixes a run with
another seed's under one folder name.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from apical.errors import ApicalError
from apical.run_folder import RunFolder


def curves(folder: Path) -> dict[str, tuple[int, list[float]]]:
    """Per run folder/LABEL: its seed and the accuracy (%) after each finished task."""
    out = {}
    for run in sorted(p for p in folder.iterdir() if (p / "task-1").is_dir()):
        points, seeds = [], set()
        for t in range(1, 1 + len(list(run.glob("task-*")))):
            task = RunFolder(run / f"task-{t}")
            if not task.is_finished():
                break
            seeds.add((task.config() or {}).get("seed"))
            points.append(100 * task.rows()[-1]["test_accuracy"])
        if len(seeds) > 1:
            raise ApicalError(f"{run} holds tasks of several seeds ({sorted(seeds)})")
        if points:
            out[run.name] = (seeds.pop(), points)
    return out


def summary(folders: list[Path]) -> dict[str, dict]:
    """Per label: the seeds, and per number of tasks the mean, s.d. and n over seeds."""
    table: dict[str, dict] = {}
    for folder in folders:
        if not folder.is_dir():
            raise ApicalError(f"{folder} is not a folder; name experiment folders under runs/")
        for label, (seed, points) in curves(folder).items():
            entry = table.setdefault(label, {"seeds": [], "points": []})
            if seed in entry["seeds"]:
                raise ApicalError(f"seed {seed} of {label} appears in two of the folders given")
            entry["seeds"].append(seed)
            entry["points"].append(points)
    for entry in table.values():
        longest = max(len(p) for p in entry["points"])
        entry["tasks"] = []
        for t in range(longest):
            values = [p[t] for p in entry["points"] if len(p) > t]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            entry["tasks"].append({"mean": statistics.mean(values), "sd": spread,
                                   "n": len(values)})  # fmt: skip
    return table


def plot(table: dict[str, dict], path: Path) -> None:
    from apical.plots.base import plt, save

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, entry in table.items():
        t = range(1, len(entry["tasks"]) + 1)
        mean = [c["mean"] for c in entry["tasks"]]
        sd = [c["sd"] for c in entry["tasks"]]
        ax.plot(t, mean, marker="o", label=f"{label} (seeds {', '.join(map(str, entry['seeds']))})")
        ax.fill_between(t, [m - s for m, s in zip(mean, sd, strict=True)],
                        [m + s for m, s in zip(mean, sd, strict=True)], alpha=0.2)  # fmt: skip
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("test accuracy over the tasks seen (%)")
    ax.legend(fontsize=7)
    save(fig, path, "mean ± s.d. over seeds", fontsize=8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("folders", type=Path, nargs="+", help="one experiment folder per seed")
    p.add_argument("--plot", type=Path, help="also draw accuracy against tasks (png, pdf, svg)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    try:
        table = summary(args.folders)
    except ApicalError as e:
        sys.exit(f"error: {e}")
    if not table:
        sys.exit("error: no finished task in those folders; run the experiment first")
    if args.plot:
        plot(table, args.plot)
    if args.json:
        print(json.dumps(table, indent=1))
        return
    longest = max(len(e["tasks"]) for e in table.values())
    print("| run | seeds | " + " | ".join(str(t) for t in range(1, longest + 1)) + " |")
    print("|---|---|" + "---|" * longest)
    for label, entry in table.items():
        cells = [(f"{c['mean']:.1f}" if c["n"] == 1 else f"{c['mean']:.1f} ± {c['sd']:.1f}")
                 + ("" if c["n"] == len(entry["seeds"]) else f" (n={c['n']})")
                 for c in entry["tasks"]]  # fmt: skip
        cells += ["-"] * (longest - len(cells))
        print(f"| {label} | {', '.join(map(str, entry['seeds']))} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
