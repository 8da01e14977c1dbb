"""Does the isolated stochastic-burst neuron depend on the time step? Event rate and burst
probability of an isolated population (`apical.spiking.population`: the XOR's hidden
background, constant somatic and dendritic currents) on a grid of drives, at the paper
code's step (dt = 0.1 ms, forward Euler, at most one background spike per step) and at the
CPU presets' dt = 1 ms (exact exponential integration, Poisson background counts), with the
injected currents after the threshold check (the presets') or integrated in the step.

    python scripts/burst_neuron_dt_check.py [--n 1000] [--seconds 2] [--seeds 1,2,3]
        [--somatic 0,100,200,300] [--dendritic 0,200,400,600] [--json]

Per drive and setting: the mean over seeds of the event rate (Hz, first spikes) and burst
probability (second / first spikes) after a 0.3-s burn-in, and the dt = 1 ms figures'
differences from dt = 0.1 ms (relative for rates, absolute for probabilities). One thread.
"""

from __future__ import annotations

import argparse
import json

import torch

from apical.spiking.config import BurstNeuron
from apical.spiking.population import PopulationConfig, simulate

SETTINGS = {  # name: (dt, integrator, background, injected currents)
    "dt 0.1 ms (paper code)": (0.1, "euler", "bernoulli", "after-threshold"),
    "dt 1 ms (cpu presets)": (1.0, "exponential", "poisson", "after-threshold"),
    "dt 1 ms, currents integrated": (1.0, "exponential", "poisson", "integrated"),
}


def point(i_s: float, i_d: float, n: int, seconds: float, seeds: tuple[int, ...]) -> dict:
    out = {}
    for name, (dt, integrator, background, currents) in SETTINGS.items():
        neuron = BurstNeuron(integrator=integrator, currents=currents)
        cfg = PopulationConfig(n=n, dt=dt, i_s=i_s, i_d=i_d, background=background, neuron=neuron)
        r = simulate(cfg, seeds, seconds, warm=round(300 / dt))
        out[name] = {"er": sum(r["event_rate_hz"]) / len(seeds),
                     "bp": sum(r["burst_probability"]) / len(seeds)}  # fmt: skip
    fine = out[next(iter(SETTINGS))]
    out["differences"] = {
        name: {"er_relative": out[name]["er"] / max(fine["er"], 1e-9) - 1,
               "bp": out[name]["bp"] - fine["bp"]}
        for name in list(SETTINGS)[1:]
    }  # fmt: skip
    return out


def number(kind: type, low: float):
    """An argparse type: a number of `kind`, at least `low` (one line on anything else)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {text}")
        return value

    return parse


def numbers(kind: type, low: float):
    """An argparse type: comma-separated numbers, each as `number` reads it."""
    one = number(kind, low)
    return lambda text: [one(part) for part in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=number(int, 1), default=1000, help="neurons")
    p.add_argument("--seconds", type=number(float, 0.01), default=2.0, help="simulated s")
    p.add_argument("--seeds", type=numbers(int, 0), default=[1, 2, 3], help="e.g. 1,2,3")
    p.add_argument("--somatic", type=numbers(float, -1e4), default=[0, 100, 200, 300],
                   help="somatic currents (pA), comma-separated")  # fmt: skip
    p.add_argument("--dendritic", type=numbers(float, -1e4), default=[0, 200, 400, 600],
                   help="dendritic currents (pA), comma-separated")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch._dynamo.config.recompile_limit = 256  # one compiled step per setting and drive
    seeds, n, seconds = tuple(args.seeds), args.n, args.seconds
    grid = {f"I_s {s:g} pA, I_d {d:g} pA": point(s, d, n, seconds, seeds)
            for s in args.somatic for d in args.dendritic}  # fmt: skip
    if args.json:
        print(json.dumps({"n": n, "seconds": seconds, "seeds": seeds, "grid": grid},
                         indent=1))  # fmt: skip
        return
    first, *others = SETTINGS
    print(f"event rate Hz / burst probability at {first}; then, for each of "
          f"{'; '.join(others)}: the rate's relative and the probability's difference")  # fmt: skip
    for drive, row in grid.items():
        cells = "  ".join(f"{100 * d['er_relative']:+.1f} % {d['bp']:+.3f}"
                          for d in row["differences"].values())  # fmt: skip
        print(f"  {drive}: {row[first]['er']:.2f}/{row[first]['bp']:.3f}  {cells}")


if __name__ == "__main__":
    main()
