"""What distributed training and Ray trials cost on this machine.

    python benchmarks/distributed.py [--rule fa] [--epochs 2] [--points 4] [--json]

1. Data-parallel step: the BioTorch net (784-1024-1024-10 ReLU) on 10,000 MNIST images,
   one process at batch 256 against 2 gloo processes (`apical train --nproc 2`) at batch
   512, so that each process computes the same 256 examples a step; every process on one
   thread. The ratio of their times per step is the cost of the distributed step (its
   all-reduce of every direction, the sharding and the lock-step): 1.0 would be free.
   Time per step: the rows' training seconds (evaluation excluded) over the steps.
2. Ray Tune: a sweep of `--points` tiny grid points (digits, 1 epoch) in process and as
   Ray trials of 1 CPU each; Ray's start-up and each trial's own start-up make the
   difference, stated per point.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SWEEP = """
kind = "sweep"
name = "bench"
title = "Ray trial overhead"
source = "benchmarks/distributed.py"
claim = "-"
seeds = [0]
width = 16
[base]
dataset = "digits"
epochs = 1
batch_size = 64
probe_every = 0
[axes]
lr = {lrs}
[variants]
"""


def step_seconds(run_dir: Path) -> float:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["seconds"] / rows[-1]["step"]


def data_parallel(rule: str, epochs: int, tmp: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    common = ["--dataset", "mnist", "--set", "train_size=10000", "--set", "eval_every=100",
              "--hidden", "1024,1024", "--activation", "relu", "--rule", rule, "--lr", "0.05",
              "--momentum", "0.9", "--epochs", str(epochs), "--probe-every", "0",
              "--device", "cpu"]  # fmt: skip
    out = {}
    for label, extra in (("one", ["--batch-size", "256"]),
                         ("two", ["--batch-size", "512", "--nproc", "2"])):  # fmt: skip
        cmd = [sys.executable, "-m", "apical.cli", "train", *common, *extra,
               "--run-dir", str(tmp / label)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        out[label] = step_seconds(tmp / label)
    return {
        "net": "784-1024-1024-10 relu, mnist 10000 images",
        "rule": rule,
        "one_process_batch256_ms_per_step": round(1000 * out["one"], 3),
        "two_processes_batch512_ms_per_step": round(1000 * out["two"], 3),
        "step_time_ratio": round(out["two"] / out["one"], 3),
        "examples_per_second_ratio": round(2 * out["one"] / out["two"], 3),
    }


def ray_overhead(points: int, tmp: Path) -> dict:
    lrs = [round(0.01 * (k + 1), 3) for k in range(points)]
    (tmp / "sweep.toml").write_text(SWEEP.format(lrs=json.dumps(lrs)).replace("[variants]\n", ""))
    seconds = {}
    for label, extra in (("here", []), ("ray", ["--ray", "--trial-cpus", "1"])):
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "apical.cli", "reproduce", str(tmp / "sweep.toml"),
               "--out", str(tmp / label), *extra]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        seconds[label] = time.perf_counter() - t0
    return {
        "points": points,
        "in_process_s": round(seconds["here"], 1),
        "ray_s": round(seconds["ray"], 1),
        "overhead_per_point_s": round((seconds["ray"] - seconds["here"]) / points, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rule", default="fa")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--points", type=int, default=4)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "machine": {"cpu": platform.processor() or platform.machine(),
                        "cores": os.cpu_count(), "torch": torch.__version__},
            "data_parallel": data_parallel(args.rule, args.epochs, Path(tmp)),
            "ray": ray_overhead(args.points, Path(tmp)),
        }  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return
    dp, ray = result["data_parallel"], result["ray"]
    print(f"data parallel ({dp['rule']}, {dp['net']}): 1 process at batch 256 "
          f"{dp['one_process_batch256_ms_per_step']} ms/step, 2 processes at batch 512 "
          f"{dp['two_processes_batch512_ms_per_step']} ms/step: ratio "
          f"{dp['step_time_ratio']} ({dp['examples_per_second_ratio']}x the examples/s)"
          )  # fmt: skip
    print(f"ray: {ray['points']} points in {ray['in_process_s']} s here, {ray['ray_s']} s as "
          f"trials: {ray['overhead_per_point_s']} s per point")  # fmt: skip


if __name__ == "__main__":
    main()
