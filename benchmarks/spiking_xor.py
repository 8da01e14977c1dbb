"""Simulated seconds per wall-clock second of the spiking XOR network (Payeur et al. 2021,
Fig. 4), for one replica and for R replicas (seeds) batched. apical's absolute figures
only: the paper code (C++/Auryn) has not been run side by side with it (its authors report
3-4 h per seed for the 16,070-s protocol on a laptop, about 1.1-1.5 simulated s per s,
which is not a measurement on this machine). The side-by-side comparison with a peer
simulator is `benchmarks/brian2_side_by_side.py`.

    python benchmarks/spiking_xor.py [--device cpu|cuda|all] [--dt 1.0,0.1] [--replicas 1,5]
                                     [--seconds 2] [--n 500] [--no-compile] [--per-step] [--json]

One timed unit is a training example in miniature, run as `apical.spiking.xor.run_xor` runs
it: 90 % of the simulated time with plasticity off (prediction window: a 50-ms bin per
compiled call, `apical.compiled.compile_loop`) and 10 % with it on (teaching window: one
call per step, the weights written in place), after a warm-up example (compilation, the
onset transient). Medians over --reps repetitions. `--per-step` also times the engine of
one compiled call per step (what compile_loop replaced), in the same process, the two
engines' repetitions interleaved.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from rules_vs_backprop import devices, machine  # this folder's helpers

from apical.compiled import compile_loop
from apical.spiking import xor_net
from apical.spiking.config import XorConfig
from apical.spiking.xor import input_current, run_segment


def example(engine: xor_net.Engine, state, weights, consts, keys, cfg, steps: int):
    i_s = input_current((1, 0), cfg, len(cfg.seeds), keys.device)
    args = (weights, consts, i_s, torch.zeros_like(i_s), keys, cfg)
    teach, bin_steps = steps // 10, cfg.steps(50.0)
    with torch.no_grad():  # as run_xor runs it
        state, _ = run_segment(state, args, engine, steps - teach, False, bin_steps)
        state, _ = run_segment(state, args, engine, teach, True, bin_steps)
    return state


def bench(device: torch.device, dt: float, replicas: int, seconds: float, compiled: bool,
          reps: int, n: int = 500, per_step: bool = False) -> dict[bool, float]:  # fmt: skip
    """Simulated s per s by engine (False: the protocol's; True: one call per step, when
    `per_step`), each on its own network, the engines' repetitions interleaved so that the
    machine's drift reaches both alike."""
    cfg = XorConfig(n=n, p=min(1.0, 100 / n), dt=dt, seeds=tuple(range(1, replicas + 1)),
                    compile=compiled)  # fmt: skip
    keys = xor_net.replica_keys(cfg.seeds, device)
    consts, steps = xor_net.constants(cfg, device), cfg.steps(seconds * 1000)
    runs = {}
    for mode in (False, True) if per_step else (False,):
        engine = xor_net.engine(compiled)
        if mode:  # every step its own call: the loop is the step, called n times
            engine = engine._replace(loop=compile_loop(engine.step, compile=False))
        weights, state = xor_net.build(cfg, keys), xor_net.initial_state(cfg, replicas, device)
        state = example(engine, state, weights, consts, keys, cfg, steps)  # warm-up
        runs[mode] = [engine, state, weights, []]
    for _ in range(reps):
        for run in runs.values():
            engine, state, weights, times = run
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            run[1] = example(engine, state, weights, consts, keys, cfg, steps)
            run[1].t.item()  # wait for the device
            times.append(time.perf_counter() - t0)
    return {mode: seconds / sorted(r[3])[len(r[3]) // 2] for mode, r in runs.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "all"])
    p.add_argument("--dt", default="1.0,0.1")
    p.add_argument("--replicas", default="1,5")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument(
        "--n",
        type=int,
        default=500,
        help="neurons per ensemble (p = 100/n: 100 synapses per source, as N = 500)",
    )
    p.add_argument("--no-compile", action="store_true")
    p.add_argument(
        "--per-step",
        action="store_true",
        help="also time one compiled call per step (the engine before compile_loop)",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.n < 1:
        p.error(f"--n must be a positive number of neurons, got {args.n}")
    out: dict = {**machine(), "results": {}}
    for dev in devices(args.device):
        device = torch.device(dev)
        name = torch.cuda.get_device_name() if dev == "cuda" else f"cpu x{torch.get_num_threads()}"
        for dt in (float(x) for x in args.dt.split(",")):
            for r in (int(x) for x in args.replicas.split(",")):
                rates = bench(device, dt, r, args.seconds, not args.no_compile, args.reps,
                              args.n, args.per_step)  # fmt: skip
                for per_step, rate in rates.items():
                    key = f"{dev} dt={dt:g}ms R={r}" + (f" n={args.n}" if args.n != 500 else "")
                    key += " (one call per step)" if per_step else ""
                    out["results"][key] = {
                        "device": name,
                        "simulated s per s (all replicas advance together)": rate,
                        "seed-seconds per s": rate * r,
                    }
                    if not args.json:
                        print(f"{key}: {rate:.3f} simulated s per s, {rate * r:.3f} seed-s per "
                              f"s ({name})")  # fmt: skip
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
