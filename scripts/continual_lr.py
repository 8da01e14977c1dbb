"""Choose each network's learning rate of active-dendrites-pmnist on the validation split:
the `lr-choice` preset (the first three tasks) once per candidate rate; per network the
rate of the highest mean validation accuracy over the three tasks after the third.

    python scripts/continual_lr.py [--lr 1e-4,3e-4,1e-3] [--runs active-dendrites,mlp]
                                   [--set si_strength=10] [--out runs/lr-choice]
                                   [--data-dir PATH] [--json]

Runs go to OUT/lr-RATE[-FIELD-VALUE]/active-dendrites-pmnist-lr-choice/LABEL/task-T and
resume there (`--resume` semantics: finished runs are read, not retrained).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from apical.experiments import load, reproduce
from apical.run_folder import RunFolder

NAME, PRESET = "active-dendrites-pmnist", "lr-choice"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--lr", default="1e-4,3e-4,1e-3", help="candidate rates, comma-separated")
    p.add_argument("--runs", default="", help="only these runs (labels, comma-separated)")
    p.add_argument("--set", action="append", default=[], help="FIELD=NUMBER for every run")
    p.add_argument("--out", default="runs/lr-choice")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    fields = {k: float(v) for k, v in (s.split("=", 1) for s in args.set)}
    runs = [r for r in args.runs.split(",") if r]
    tasks = load(NAME).with_preset(PRESET).spec.tasks
    table: dict[str, dict[str, float]] = {}
    for lr in (float(v) for v in args.lr.split(",")):
        tag = f"lr-{lr:g}" + "".join(f"-{k}-{v:g}" for k, v in fields.items())
        out = Path(args.out) / tag
        reproduce(NAME, preset=PRESET, out=out, runs=runs, resume=True,
                  data_dir=args.data_dir, lr=lr, **fields)  # fmt: skip
        for run in sorted((out / f"{NAME}-{PRESET}").iterdir()):
            if not (run / f"task-{tasks}").is_dir() or (runs and run.name not in runs):
                continue
            rows = RunFolder(run / f"task-{tasks}").rows("metrics")
            table.setdefault(run.name, {})[f"{lr:g}"] = rows[-1]["val_accuracy"]
    chosen = {label: max(by_lr, key=by_lr.get) for label, by_lr in table.items()}
    if args.json:
        print(json.dumps({"fields": fields, "val_accuracy": table, "chosen": chosen}, indent=1))
        return
    for label, by_lr in table.items():
        cells = "  ".join(f"lr {k}: {100 * v:.1f} %" for k, v in by_lr.items())
        print(f"{label:20s} {cells}  -> {chosen[label]}")


if __name__ == "__main__":
    main()
