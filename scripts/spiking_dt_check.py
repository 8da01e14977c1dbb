"""Does the XOR network's operating point depend on the time step? Event rate and burst
probability of every ensemble for each input pattern, before learning, at several dt.

    python scripts/spiking_dt_check.py [--dts 0.1,0.5,1.0] [--seconds 4] [--seeds 1,2,3,4,5]
                                       [--json]

Per dt: burn-in 1 s without input, then each pattern for --seconds (the first second not
counted); mean over seeds and the s.d. across seeds of the per-seed means.
"""

from __future__ import annotations

import argparse
import json

import torch

from apical.spiking import xor_net
from apical.spiking.config import XorConfig
from apical.spiking.xor import PATTERNS, input_current

NAMES = ("input1", "input2", "hidden1", "hidden2", "output")


def operating_point(dt: float, seeds: tuple[int, ...], seconds: float) -> dict:
    cfg = XorConfig(dt=dt, seeds=seeds)
    keys = xor_net.replica_keys(seeds, "cpu")
    w, c = xor_net.build(cfg, keys), xor_net.constants(cfg, "cpu")
    s = xor_net.initial_state(cfg, len(seeds), "cpu")
    step = torch.compile(xor_net.step, dynamic=False)
    zero = torch.zeros(len(seeds), 5 * cfg.n)
    for _ in range(cfg.steps(1000)):
        s = step(s, w, c, zero, zero, keys, cfg, False)
    out = {}
    for p in PATTERNS:
        i_s = input_current(p, cfg, len(seeds), "cpu")
        for _ in range(cfg.steps(1000)):
            s = step(s, w, c, i_s, zero, keys, cfg, False)
        s = s._replace(counts=torch.zeros_like(s.counts))
        for _ in range(cfg.steps(1000 * (seconds - 1))):
            s = step(s, w, c, i_s, zero, keys, cfg, False)
        er = s.counts[:, 0] / (cfg.n * (seconds - 1))  # (seeds, 5) Hz
        bp = s.counts[:, 1] / s.counts[:, 0].clamp(min=1)
        out[str(p)] = {name: {"er": er[:, k].mean().item(), "er_sd": er[:, k].std().item(),
                              "bp": bp[:, k].mean().item(), "bp_sd": bp[:, k].std().item()}
                       for k, name in enumerate(NAMES)}  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dts", default="0.1,0.5,1.0")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    seeds = tuple(int(x) for x in args.seeds.split(","))
    res = {dt: operating_point(float(dt), seeds, args.seconds) for dt in args.dts.split(",")}
    if args.json:
        print(json.dumps(res, indent=1))
        return
    for pat in map(str, PATTERNS):
        print(f"pattern {pat}: event rate Hz / burst probability %, mean (s.d.) over seeds")
        for dt, r in res.items():
            cells = "  ".join(f"{n} {r[pat][n]['er']:5.2f}/{100 * r[pat][n]['bp']:4.1f}"
                              for n in NAMES)  # fmt: skip
            print(f"  dt {dt:>4} ms: {cells}")


if __name__ == "__main__":
    main()
