"""What distributed training and Ray trials cost on this machine.

    python benchmarks/distributed.py [--rule fa] [--epochs 2] [--reps 3] [--points 4] [--json]

1. Data-parallel step: the BioTorch net (784-1024-1024-10 ReLU) on 10,000 MNIST images,
   one process at batch 256 against 2 gloo processes (`apical train --nproc 2`) at batch
   512, so that each process computes the same 256 examples a step; every process on one
   thread. The ratio of their times per step is the cost of the distributed step (its
   all-reduce of every direction, the sharding and the lock-step): 1.0 would be free.
   Medians of `--reps` interleaved repetitions. Time per step: the rows' training seconds
   (evaluation excluded) over the steps. Two
   independent single processes run at once (`concurrent`) show what sharing the cores
   and memory costs without any communication; the distributed step over that is the
   cost of the all-reduce and the lock-step. The all-reduce alone (gloo, 2 processes,
   the net's 1.86 M float32 parameters, median of 30) is timed too.
2. Ray Tune: a sweep of `--points` tiny grid points (digits, 1 epoch) in process and as
   Ray trials of 1 CPU each; Ray's start-up and each trial's own start-up make the
   difference, stated per point.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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


def data_parallel(rule: str, epochs: int, reps: int, tmp: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    common = ["--dataset", "mnist", "--set", "train_size=10000", "--set", "eval_every=100",
              "--hidden", "1024,1024", "--activation", "relu", "--rule", rule, "--lr", "0.05",
              "--momentum", "0.9", "--epochs", str(epochs), "--probe-every", "0",
              "--device", "cpu"]  # fmt: skip

    def start(run_dir: Path, *extra: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "apical.cli", "train", *common, *extra,
               "--run-dir", str(run_dir)]  # fmt: skip
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=ROOT)  # fmt: skip

    def finish(*procs: subprocess.Popen) -> None:
        for proc in procs:
            if proc.wait() != 0:
                raise SystemExit(proc.stderr.read()[-2000:])

    times: dict[str, list[float]] = {"one": [], "two": [], "concurrent": []}
    for r in range(reps):  # interleaved, so that a slow spell of the machine hits each
        finish(start(tmp / f"one{r}", "--batch-size", "256"))
        finish(start(tmp / f"two{r}", "--batch-size", "512", "--nproc", "2"))
        finish(*(start(tmp / f"alone{r}-{k}", "--batch-size", "256") for k in (0, 1)))
        times["one"].append(step_seconds(tmp / f"one{r}"))
        times["two"].append(step_seconds(tmp / f"two{r}"))
        times["concurrent"].append(max(step_seconds(tmp / f"alone{r}-{k}") for k in (0, 1)))
    out = {k: statistics.median(v) for k, v in times.items()}
    return {
        "net": "784-1024-1024-10 relu, mnist 10000 images",
        "rule": rule,
        "reps": reps,
        "one_process_batch256_ms_per_step": round(1000 * out["one"], 3),
        "two_processes_batch512_ms_per_step": round(1000 * out["two"], 3),
        "two_independent_processes_batch256_ms_per_step": round(1000 * out["concurrent"], 3),
        "step_time_ratio": round(out["two"] / out["one"], 3),
        "step_time_ratio_to_concurrent": round(out["two"] / out["concurrent"], 3),
        "examples_per_second_ratio": round(2 * out["one"] / out["two"], 3),
        "all_ms_per_step": {k: [round(1000 * x, 2) for x in v] for k, v in times.items()},
    }


def allreduce_worker(n: int) -> None:
    """Run under torchrun: the median time of an all-reduce of n float32 (rank 0 prints)."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    t = torch.randn(n)
    times = []
    for k in range(35):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(t)
        if k >= 5:
            times.append(time.perf_counter() - t0)
    if dist.get_rank() == 0:
        print(json.dumps({"floats": n, "allreduce_ms": round(1000 * sorted(times)[15], 3)}))
    dist.destroy_process_group()


def allreduce_alone(n: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", __file__, "--allreduce-worker", str(n)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (medians)")
    p.add_argument("--points", type=int, default=4)
    p.add_argument("--json", action="store_true")
    p.add_argument("--allreduce-worker", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.allreduce_worker:
        allreduce_worker(args.allreduce_worker)
        return
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "machine": {"cpu": platform.processor() or platform.machine(),
                        "cores": os.cpu_count(), "torch": torch.__version__},
            "data_parallel": data_parallel(args.rule, args.epochs, args.reps, Path(tmp)),
            "allreduce": allreduce_alone(784 * 1024 + 1024 + 1024 * 1024 + 1024 + 10250),
            "ray": ray_overhead(args.points, Path(tmp)),
        }  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return
    dp, ray = result["data_parallel"], result["ray"]
    print(f"data parallel ({dp['rule']}, {dp['net']}): 1 process at batch 256 "
          f"{dp['one_process_batch256_ms_per_step']} ms/step, 2 processes at batch 512 "
          f"{dp['two_processes_batch512_ms_per_step']} ms/step: ratio "
          f"{dp['step_time_ratio']} ({dp['examples_per_second_ratio']}x the examples/s); two "
          f"independent processes at once {dp['two_independent_processes_batch256_ms_per_step']}"
          f" ms/step: the distributed step {dp['step_time_ratio_to_concurrent']}x that"
          )  # fmt: skip
    print(f"ray: {ray['points']} points in {ray['in_process_s']} s here, {ray['ray_s']} s as "
          f"trials: {ray['overhead_per_point_s']} s per point")  # fmt: skip


if __name__ == "__main__":
    main()
