"""apical's spiking engine against Brian2, side by side on one CPU thread: the same
population of stochastic-burst neurons (`apical.spiking.population`: the XOR's neuron with
the paper code's forward Euler at dt = 0.1 ms, private background input at most one spike
per step, constant somatic and dendritic currents), the same size, step and simulated time.

    python benchmarks/brian2_side_by_side.py [--n 4000] [--seconds 5] [--replicas 1,5]
                                             [--i-s 200] [--i-d 300] [--reps 3] [--json]

Brian2 (`pip install "apical[brian2]"`: Brian2 and a NumPy it supports) runs its C++
standalone device (code generated and compiled by the system compiler; its `run` timed by
its own clock, compilation excluded), one thread. apical runs its compiled loop (every
step in one call, `apical.compiled.compile_loop`; the compilation excluded too) for one
seed and for R seeds batched. The built Brian2 program
and apical's runs alternate --reps times; medians. Brian2's model is written
here from the same equations (docs/models/spiking-burst-ensembles.md §1): custom events
for the second spike of a burst and the refractory countdown, PoissonInput with N = 1 for
the background (Bernoulli(rate dt) per step). Each side's event rate and burst
probability are printed beside its time: equal model, equal work. Without Brian2 the script
says so in one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import torch
from rules_vs_backprop import machine, positive, positive_list  # this folder's helpers

from apical.spiking.population import PopulationConfig, simulate


def brian2_population(cfg: PopulationConfig, seconds: float, seed: int) -> tuple[dict, Callable]:
    """The population built and run once in Brian2's C++ standalone mode: its rates and
    run time, and a function that runs the built program again and returns its run time."""
    import brian2 as b2

    p = cfg.neuron
    b2.set_device("cpp_standalone", directory=tempfile.mkdtemp(prefix="apical-brian2-"))
    b2.prefs.devices.cpp_standalone.openmp_threads = 0
    b2.defaultclock.dt = cfg.dt * b2.ms
    b2.seed(seed)
    mv, ms, pa, pf, ns = b2.mV, b2.ms, b2.pA, b2.pF, b2.nS
    namespace = dict(
        E_L=p.e_l * mv, E_E=p.e_exc * mv, E_I=p.e_inh * mv, E_reset=p.e_reset * mv,
        tau_s=p.tau_s * ms, tau_d=p.tau_d * ms, C_s=p.c_s * pf, C_d=p.c_d * pf,
        b_w=p.b_w * pa, a_w=p.a_w * ns, tau_ws=p.tau_ws * ms, tau_wd=p.tau_wd * ms,
        theta0=p.theta0 * mv, dtheta=p.dtheta * mv, tau_theta=p.tau_theta * ms,
        tau_ampa=p.tau_ampa * ms, tau_gaba=p.tau_gaba * ms, I_s=cfg.i_s * pa,
        I_d=cfg.i_d * pa, E_d=p.e_d * mv, D=p.slope_d * mv, isi_min=p.isi_min * ms,
        isi_span=p.isi_span * ms, ref_steps=round(p.refractory / cfg.dt), step=cfg.dt * ms,
    )  # fmt: skip
    eqs = """
    dv_s/dt = (-(v_s - E_L) + g_es*(E_E - v_s) + g_is*(E_I - v_s))/tau_s
              + (b_w*w_s + I_s)/C_s : volt
    dv_d/dt = (-(v_d - E_L) + g_ed*(E_E - v_s) + g_id*(E_I - v_s))/tau_d
              + (a_w*w_d + I_d)/C_d : volt
    dw_s/dt = -w_s/tau_ws : 1
    dw_d/dt = ((v_d - E_L) - w_d)/tau_wd : volt
    dtheta/dt = (theta0 - theta)/tau_theta : volt
    dg_es/dt = -g_es/tau_ampa : 1
    dg_is/dt = -g_is/tau_gaba : 1
    dg_ed/dt = -g_ed/tau_ampa : 1
    dg_id/dt = -g_id/tau_gaba : 1
    refractory_left : 1
    countdown : 1
    burst : 1
    isi : 1
    """  # the dendrite's synaptic driving force is V_s, as in the paper code (quirk 5)
    g = b2.NeuronGroup(
        cfg.n, eqs, method="euler", namespace=namespace,
        threshold="v_s > theta and refractory_left <= 0",
        reset="""
        v_s = E_reset
        theta += dtheta
        w_s += 1
        refractory_left = ref_steps
        burst = int(rand() < 1/(1 + exp(-(v_d - E_d)/D)))
        isi = floor((isi_min + isi_span*rand())/step)
        countdown = burst * isi
        """,
        events={"second": "countdown == 1"},
    )  # fmt: skip
    g.run_on_event("second", "refractory_left = ref_steps\ncountdown = 0")
    g.run_regularly(
        "countdown = clip(countdown - 1, 0, 1e9)\n"
        "refractory_left = clip(refractory_left - 1, 0, 1e9)",
        when="before_thresholds",
    )
    g.v_s = f"E_L + {p.v0_sd}*mV*randn()"
    g.v_d, g.w_d, g.theta = p.e_l * mv, p.w_d0 * mv, p.theta0 * mv
    inputs = [
        b2.PoissonInput(g, target, N=1, rate=rate * b2.Hz, weight=str(weight))
        for target, (rate, weight) in zip(
            ("g_es", "g_is", "g_ed", "g_id"),
            (cfg.bg.soma_exc, cfg.bg.soma_inh, cfg.bg.dend_exc, cfg.bg.dend_inh),
            strict=True,
        )
    ]
    first = b2.SpikeMonitor(g, record=False)
    second = b2.EventMonitor(g, "second", record=False)
    t0 = time.perf_counter()
    b2.Network(g, *inputs, first, second).run(seconds * b2.second)  # generates, builds, runs
    total = time.perf_counter() - t0
    n_first, n_second = int(first.num_events), int(second.num_events)

    def again() -> float:
        b2.device.run(with_output=False)
        return float(b2.device._last_run_time)

    return {
        "event_rate_hz": n_first / (cfg.n * seconds),
        "burst_probability": n_second / max(n_first, 1),
        "first_run_seconds": float(b2.device._last_run_time),
        "build_and_run_seconds": total,
    }, again


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    a.add_argument("--n", type=positive(int), default=4000, help="neurons")
    a.add_argument("--seconds", type=positive(float), default=5.0, help="simulated seconds")
    a.add_argument("--replicas", type=positive_list(int), default=[1, 5],
                   help="apical's seeds batched, comma-separated (default 1,5)")  # fmt: skip
    a.add_argument("--i-s", type=float, default=200.0, help="somatic current (pA)")
    a.add_argument("--i-d", type=float, default=300.0, help="dendritic current (pA)")
    a.add_argument(
        "--reps", type=positive(int), default=3, help="interleaved repetitions (medians)"
    )
    a.add_argument("--json", action="store_true", help="print one JSON object")
    args = a.parse_args()
    try:
        import brian2  # noqa: F401
    except Exception as e:  # absent, or built against another NumPy
        sys.exit(f"error: Brian2 is not usable here ({type(e).__name__}: {e}); "
                 'install it with pip install "apical[brian2]"')  # fmt: skip
    torch.set_num_threads(1)
    cfg = PopulationConfig(n=args.n, i_s=args.i_s, i_d=args.i_d)
    out: dict = {**machine(), "n": args.n, "dt_ms": cfg.dt, "simulated_seconds": args.seconds,
                 "currents_pA": [args.i_s, args.i_d], "results": {}}  # fmt: skip
    theirs, again = brian2_population(cfg, args.seconds, seed=1)
    replicas = args.replicas
    times: dict = {"brian2": [], **{r: [] for r in replicas}}
    ours: dict = {}
    for _ in range(args.reps):  # interleaved: the machine's drift reaches both sides alike
        times["brian2"].append(again())
        for r in replicas:
            ours[r] = simulate(cfg, tuple(range(1, r + 1)), args.seconds)
            times[r].append(ours[r]["wall_seconds"])
    brian_s = statistics.median(times["brian2"])
    out["results"]["brian2 (C++ standalone, 1 thread)"] = {
        **theirs, "run_seconds": brian_s, "run_seconds_each": times["brian2"],
        "seed-seconds per s": args.seconds / brian_s}  # fmt: skip
    for r in replicas:
        wall = statistics.median(times[r])
        rate = r * args.seconds / wall
        out["results"][f"apical (compiled, 1 thread), R={r}"] = {
            **ours[r], "wall_seconds": wall, "wall_seconds_each": times[r],
            "seed-seconds per s": rate, "speed-up vs brian2 (seed-seconds per s)":
            rate * brian_s / args.seconds,
        }  # fmt: skip
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{args.n} stochastic-burst neurons, dt {cfg.dt} ms, {args.seconds:g} s simulated, "
          f"I_s {args.i_s:g} pA, I_d {args.i_d:g} pA, one CPU thread ({out['cpu']})")  # fmt: skip
    for name, row in out["results"].items():
        er, bp = row["event_rate_hz"], row["burst_probability"]
        er = sum(er) / len(er) if isinstance(er, list) else er
        bp = sum(bp) / len(bp) if isinstance(bp, list) else bp
        wall = row.get("run_seconds", row.get("wall_seconds"))
        print(f"  {name}: {wall:.2f} s, {row['seed-seconds per s']:.3f} seed-s per s; event rate "
              f"{er:.2f} Hz, burst probability {bp:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
