"""The first thing to run on a GPU machine: every rule on CUDA against the CPU, then the
speed benchmarks at their GPU sizes, into one JSON report.

    python scripts/gpu_check.py [--out gpu-check.json] [--steps 20] [--budget 420]

Part 1, every registered rule: the same seed trains the same net on scikit-learn's
digits for `--steps` steps on the CPU and on CUDA (TF32 off), and the final weights are
compared: the largest difference relative to the largest weight must stay under
`TOLERANCE` (float32 sums in another order on another library, over a few steps). Rules
that draw batch-shaped noise from a generator on the device (node perturbation; the
microcircuit's noise) draw other numbers on CUDA than on the CPU: their weights are not
compared, only that both losses are finite and close (`LOSS_TOLERANCE`).

Part 2: each benchmark script of benchmarks/ with `--device cuda --json`, each with its
own time limit, the whole within `--budget` seconds (an H100 or H200 must finish the
script in under 8 minutes); a benchmark that runs out of time is recorded as such.

Without CUDA, part 1 runs the CPU half alone (the report's `cuda` is null) and part 2 is
skipped: the script is tested so in CI.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from apical.rules import RULES
from apical.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-3  # largest |w_cuda - w_cpu| / largest |w_cpu|
LOSS_TOLERANCE = 0.1  # relative difference of the last train loss (device draws)
DEVICE_DRAWS = {"node_perturbation", "microcircuit"}
MLP = {"model": "mlp", "model_options": {"hidden": [64, 64]}, "lr": 0.05, "momentum": 0.9}
SHORT = {"hidden": [20], "phase_min": 25, "window": 10, "test_steps": 60, "test_window": 40}
CONFIGS: dict[str, dict[str, Any]] = {
    "backprop": MLP,
    "fa": MLP,
    "dfa": MLP,
    "sign_symmetry": MLP,
    "kolen_pollack": MLP,
    "burstprop": {"model": "burstprop_mlp", "model_options": {"hidden": [64, 64]},
                  "loss": "mse", "optimizer": "decoupled_sgd", "lr": 0.03, "momentum": 0.8,
                  "rule_options": {"learn_feedback": True, "recurrent": True}},
    "burstccn": {"model": "burstprop_mlp", "model_options": {"hidden": [64, 64]},
                 "loss": "mse", "lr": 0.1},
    "node_perturbation": {"model": "burstprop_mlp", "model_options": {"hidden": [64]},
                          "loss": "mse", "lr": 1e-3, "momentum": 0.8},
    "segregated_dendrites": {"model": "segregated_dendrites", "model_options": SHORT,
                             "loss": "mse", "standardize": False, "lr": 0.05},
    "microcircuit": {"model": "microcircuit", "model_options": {"hidden": [32]},
                     "loss": "mse", "lr": 0.005, "momentum": 0.9},
    "predictive_coding": {**MLP, "model_options": {"hidden": [64], "activation": "tanh"}},
    "equilibrium_propagation": {**MLP, "model_options": {"hidden": [64],
                                                         "activation": "hard_sigmoid"}},
    "contrastive_hebbian": {**MLP, "loss": "mse",
                            "model_options": {"hidden": [64], "activation": "sigmoid"}},
}  # fmt: skip
BENCHMARKS = {  # script: (extra arguments, time limit in seconds)
    "rules_vs_backprop.py": ([], 150),
    "energy.py": ([], 90),
    "segregated_dendrites.py": ([], 90),
    "microcircuit.py": ([], 60),
    "active_dendrites.py": ([], 60),
    "replicas.py": ([], 60),
}


def train_rule(rule: str, device: str, steps: int) -> dict[str, Any]:
    fields = {"dataset": "digits", "rule": rule, "batch_size": 16, "epochs": 1,
              "train_size": 16 * steps, "probe_every": 0, "device": device, "seed": 0,
              **CONFIGS[rule]}  # fmt: skip
    t0 = time.perf_counter()
    run = train(TrainConfig.from_dict(fields), progress=False)
    state = {k: v.detach().cpu() for k, v in run.model.state_dict().items()
             if isinstance(v, torch.Tensor) and v.is_floating_point()}  # fmt: skip
    return {"state": state, "loss": run.history[-1]["train_loss"],
            "seconds": time.perf_counter() - t0}  # fmt: skip


def compare(rule: str, cpu: dict[str, Any], cuda: dict[str, Any]) -> dict[str, Any]:
    loss_gap = abs(cuda["loss"] - cpu["loss"]) / max(abs(cpu["loss"]), 1e-12)
    finite = math.isfinite(cpu["loss"]) and math.isfinite(cuda["loss"])
    if rule in DEVICE_DRAWS:
        ok = finite and loss_gap < LOSS_TOLERANCE
        return {"compared": "loss (device draws)", "loss_gap": loss_gap, "pass": ok}
    worst, where = 0.0, None
    for k, a in cpu["state"].items():
        scale = max(float(a.abs().max()), 1e-6)
        gap = float((cuda["state"][k] - a).abs().max()) / scale
        if gap > worst:
            worst, where = gap, k
    return {"compared": "weights", "max_relative_gap": worst, "at": where, "loss_gap": loss_gap,
            "pass": finite and worst < TOLERANCE}  # fmt: skip


def run_benchmarks(deadline: float) -> dict[str, Any]:
    out = {}
    for script, (extra, limit) in BENCHMARKS.items():
        left = deadline - time.time()
        if left < 10:
            out[script] = {"skipped": "the script's time budget is spent"}
            continue
        cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--device", "cuda", "--json",
               *extra]  # fmt: skip
        t0 = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=min(limit, left))
        except subprocess.TimeoutExpired:
            out[script] = {"timed_out_after_s": round(time.perf_counter() - t0, 1)}
            continue
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["(no message)"]
            out[script] = {"failed": tail[0][:300]}
            continue
        out[script] = {"seconds": round(time.perf_counter() - t0, 1),
                       "result": json.loads(done.stdout.strip().splitlines()[-1])}  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="gpu-check.json", help="where the JSON report goes")
    p.add_argument("--steps", type=int, default=20, help="training steps per rule and device")
    p.add_argument("--budget", type=float, default=420, help="seconds for the benchmarks")
    p.add_argument("--rules", help="comma-separated rules (default: all)")
    args = p.parse_args()
    start = time.time()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cuda = torch.cuda.is_available()
    rules = args.rules.split(",") if args.rules else list(RULES)
    unknown = [r for r in rules if r not in CONFIGS]
    if unknown:
        sys.exit(f"error: no check config for {', '.join(unknown)}; add it to CONFIGS")
    report: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpu": platform.processor() or platform.machine(),
                    "cuda": torch.cuda.get_device_name(0) if cuda else None},
        "steps": args.steps, "tolerance": TOLERANCE, "loss_tolerance": LOSS_TOLERANCE,
        "rules": {},
    }  # fmt: skip
    for rule in rules:
        cpu = train_rule(rule, "cpu", args.steps)
        row: dict[str, Any] = {"cpu_loss": cpu["loss"], "cpu_seconds": round(cpu["seconds"], 2)}
        if cuda:
            gpu = train_rule(rule, "cuda", args.steps)
            row.update(cuda_loss=gpu["loss"], cuda_seconds=round(gpu["seconds"], 2),
                       **compare(rule, cpu, gpu))  # fmt: skip
        else:
            row["pass"] = math.isfinite(cpu["loss"])
        report["rules"][rule] = row
        print(f"{rule}: {json.dumps({k: v for k, v in row.items()})}", file=sys.stderr)
    report["benchmarks"] = run_benchmarks(start + args.budget) if cuda else "skipped: no CUDA"
    report["seconds"] = round(time.time() - start, 1)
    report["pass"] = all(r["pass"] for r in report["rules"].values())
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"report: {args.out} ({'pass' if report['pass'] else 'FAIL'})")


if __name__ == "__main__":
    main()
