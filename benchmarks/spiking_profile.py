"""Where the time of one step of the spiking XOR network goes (Payeur et al. 2021, Fig. 4;
`apical.spiking.xor_net.step` compiled, as `run_xor` runs it), from torch.profiler with the
compiled kernels profiled one by one.

    python benchmarks/spiking_profile.py [--dt 0.1] [--replicas 1,5] [--n 500] [--steps 500]
                                         [--modes loop,step,plastic] [--json]

Per step, after a warm-up of 2,000 steps of the same mode (the input pattern (1,0)): the
wall time, and the profiler's split into the kernels inductor generated (count and time),
the ATen kernels called from the graphs or between them (topk; the weight writes), the
dynamo guard check of each call, and the rest. The wall time is that of this
instrumented build (every generated kernel timed), not of the plain engine that
`spiking_xor.py` times. Three modes, plasticity off in the first two (the prediction
window, 90 % of a training example): `loop`, every step
in one call (`apical.compiled.compile_loop`, as run_xor runs a prediction window; the
rest is the while loop's C++ wrapper), `step`, one compiled call per step (the engine
before the loop; the rest is the compiled graph's Python wrapper: output allocation,
argument checks, the Python loop), and `plastic`, one call per step with plasticity on
(the teaching window, 10 % of a training example, as `run_xor` runs it: the weights
written in place). One CPU thread.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch._inductor.config as inductor_config
from rules_vs_backprop import machine, positive, positive_list  # this folder's helpers
from torch.profiler import ProfilerActivity, profile

from apical.spiking import xor_net
from apical.spiking.config import XorConfig
from apical.spiking.xor import input_current


def split(dt: float, replicas: int, n: int, steps: int, mode: str) -> dict:
    cfg = XorConfig(n=n, p=min(1.0, 100 / n), dt=dt, seeds=tuple(range(1, replicas + 1)))
    keys = xor_net.replica_keys(cfg.seeds, "cpu")
    w, c = xor_net.build(cfg, keys), xor_net.constants(cfg, "cpu")
    i_s = input_current((1, 0), cfg, replicas, "cpu")
    args = (w, c, i_s, torch.zeros_like(i_s), keys, cfg, mode == "plastic")
    engine = xor_net.engine(compile=True)

    def run(s: xor_net.State, k: int) -> xor_net.State:
        if mode == "loop":
            return engine.loop(s, k, *args)
        for _ in range(k):
            s = engine.step(s, *args)
        return s

    with torch.inference_mode():  # the state too (one compiled variant)
        s = run(xor_net.initial_state(cfg, replicas, "cpu"), 2000)
        t0 = time.perf_counter()
        s = run(s, steps)
        wall = (time.perf_counter() - t0) / steps
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            s = run(s, steps)
    generated, aten, guards, counts = 0.0, {}, 0.0, 0
    for e in prof.key_averages():
        us = e.self_cpu_time_total / steps
        if "cpp_fused" in e.key:
            generated += us
            counts += e.count // steps
        elif e.key.startswith("aten::"):
            aten[e.key] = {"us": us, "calls": e.count // steps}
        elif e.key == "TorchDynamo Cache Lookup":
            guards += us
    profiled = sum(e.self_cpu_time_total for e in prof.key_averages()) / steps
    aten_us = sum(v["us"] for v in aten.values())
    return {
        "wall us per step (unprofiled)": 1e6 * wall,
        "profiled us per step": profiled,
        "generated kernels per step": counts,
        "generated kernels us": generated,
        "aten kernels us": aten_us,
        "aten kernels": aten,
        "dynamo guard check us": guards,
        "rest us (wrapper, loop)": profiled - generated - aten_us - guards,
        "mode": mode,
        "simulated s per s (unprofiled)": dt / 1000 / wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dt", type=positive(float), default=0.1, help="time step (ms, at most 1)")
    p.add_argument("--replicas", type=positive_list(int), default=[1, 5],
                   help="seeds batched, comma-separated (default 1,5)")  # fmt: skip
    p.add_argument("--n", type=positive(int), default=500, help="neurons per ensemble (p = 100/n)")
    p.add_argument("--steps", type=positive(int), default=500, help="profiled steps")
    p.add_argument("--modes", default="loop,step,plastic",
                   help="loop, step, plastic, comma-separated (default all three)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    modes = args.modes.split(",")
    if not modes or any(m not in ("loop", "step", "plastic") for m in modes):
        p.error(f"--modes takes loop, step and plastic, comma-separated, got {args.modes!r}")
    torch.set_num_threads(1)
    inductor_config.cpp.enable_kernel_profile = True  # each generated kernel as a record
    out = {**machine(), "dt_ms": args.dt, "n": args.n, "results": {}}
    if args.dt > 1:
        p.error(f"--dt {args.dt} ms is coarser than the engine allows; use at most 1")
    for r in args.replicas:
        for mode in modes:
            out["results"][f"R={r} {mode}"] = split(args.dt, r, args.n, args.steps, mode)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for key, row in out["results"].items():
        print(f"{key}, dt {args.dt} ms, n {args.n}: {row['wall us per step (unprofiled)']:.0f} us "
              f"per step unprofiled ({row['simulated s per s (unprofiled)']:.3f} simulated s per "
              f"s); profiled {row['profiled us per step']:.0f} us: "
              f"{row['generated kernels per step']} generated kernels "
              f"{row['generated kernels us']:.0f} us, ATen kernels {row['aten kernels us']:.0f} "
              f"us, guard check {row['dynamo guard check us']:.0f} us, rest "
              f"{row['rest us (wrapper, loop)']:.0f} us")  # fmt: skip


if __name__ == "__main__":
    main()
