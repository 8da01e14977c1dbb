"""Does context gating protect old tasks under the biologically plausible rules? Permuted
digits, three tasks in turn, the active-dendrites network against an equal-width MLP,
each trained by backprop, FA, DFA, sign symmetry and burstprop (the gate sigmoid(d*) and
the kWTA mask are unit-local factors of the error each rule sends down; burstprop runs
through the network's chain of gated stages, docs/models/active-dendrites.md §3).

    python scripts/continual_rules.py [--seeds 0,1,2]
                                      [--rules backprop,fa,dfa,sign_symmetry,burstprop]
                                      [--json]

Per rule, network and seed: the mean test accuracy over the three tasks after the last,
and the accuracy on task 0 after tasks 1 and 2 (what was kept). 2 x 512 units, 3
segments, kWTA 5 %, 50 % sparsity; Adam at lr 1e-3, batch 32, 20 epochs per task (the
digits preset of active-dendrites-pmnist), runs in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from apical.continual import task_data
from apical.data import load_dataset
from apical.train import TrainConfig, train

NETWORKS = {
    "active dendrites": {},
    "mlp": {"dendrites": False, "kwta": False, "sparsity": 0.0},
}


def chain(root: Path, rule: str, options: dict, seed: int, tasks: int = 3) -> dict[str, float]:
    before = None
    for t in range(tasks):
        config = TrainConfig(
            dataset="digits", val_size=0.2, task=t, init_from=before, seed=seed,
            model="active_dendrites", rule=rule,
            model_options={"hidden": [512, 512], "context_size": 64, "segments": 3, **options},
            optimizer="adam", lr=1e-3, batch_size=32, epochs=20, probe_every=0, device="cpu",
            run_dir=str(root / f"task-{t + 1}"),
        )  # fmt: skip
        run = train(config, progress=False)
        before = config.run_dir
    first = task_data(load_dataset("digits", None, val_size=0.2, seed=seed), 0, seed=seed)
    with torch.no_grad():
        kept = (run.model(first.x_test[:]).argmax(1) == first.y_test).float().mean()
    return {
        "mean_over_tasks": 100 * run.history[-1]["test_accuracy"],
        "task0_kept": 100 * float(kept),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rules", default="backprop,fa,dfa,sign_symmetry,burstprop")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rule in args.rules.split(","):
            for net, options in NETWORKS.items():
                runs = [chain(Path(tmp) / rule / net / str(s), rule, options, s) for s in seeds]
                results.setdefault(rule, {})[net] = runs
    if args.json:
        print(json.dumps({"seeds": seeds, "results": results}, indent=1))
        return
    print("| rule | network | mean over 3 tasks (%) | task 0 kept (%) |")
    print("|---|---|---|---|")
    for rule, nets in results.items():
        for net, runs in nets.items():
            cells = []
            for key in ("mean_over_tasks", "task0_kept"):
                values = [r[key] for r in runs]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):.1f} ± {spread:.1f}")
            print(f"| {rule} | {net} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
