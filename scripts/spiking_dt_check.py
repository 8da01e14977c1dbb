"""Does the XOR network depend on the time step? (1) Its operating point: event rate and
burst probability of every ensemble for each input pattern, before learning. (2) Its
learning signal: the weight change of each plastic block over the first --examples
training examples of the reduced CPU protocol (`apical reproduce spiking-xor --preset cpu`).

    python scripts/spiking_dt_check.py [--dts 0.1,0.5,1.0] [--seconds 4] [--seeds 1,2,3,4,5]
                                       [--examples 0] [--background poisson] [--json]

(1) per dt: burn-in 1 s without input, then each pattern for --seconds (the first second not
counted); mean over seeds and the s.d. across seeds of the per-seed means. (2) with
--examples E > 0: the cpu preset's protocol (its N and time constants) with E examples at
each dt; the change of the mean weight of each plastic block, mean (s.d.) over seeds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from apical.compiled import compile_step
from apical.config import replace
from apical.experiments import load
from apical.run_folder import RunFolder
from apical.spiking import xor_net
from apical.spiking.config import BurstNeuron, XorConfig
from apical.spiking.xor import PATTERNS, input_current, run_xor

NAMES = ("input1", "input2", "hidden1", "hidden2", "output")


def operating_point(dt: float, seeds: tuple[int, ...], seconds: float, background: str) -> dict:
    neuron = BurstNeuron(currents="after-threshold")  # as its documented runs
    cfg = XorConfig(dt=dt, seeds=seeds, background=background, neuron=neuron)
    keys = xor_net.replica_keys(seeds, "cpu")
    w, c = xor_net.build(cfg, keys), xor_net.constants(cfg, "cpu")
    s = xor_net.initial_state(cfg, len(seeds), "cpu")
    step = compile_step(xor_net.step)
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


BLOCKS = {"input1->hidden1": ("ih", 0, 0), "input2->hidden1": ("ih", 1, 0),
          "input1->hidden2": ("ih", 0, 1), "input2->hidden2": ("ih", 1, 1),
          "hidden1->output": ("ho", 0, 0), "hidden2->output": ("ho", 1, 0)}  # fmt: skip


def learning_signal(dt: float, seeds: tuple[int, ...], examples: int) -> dict:
    """Change of each plastic block's mean weight (x 1e-3) after `examples` examples of the
    cpu preset's protocol at this dt (tests shortened to 0.1 s)."""
    options = load("spiking-xor").with_preset("cpu").spec.options
    cfg = replace(XorConfig(), {**options, "dt": dt, "seeds": seeds, "examples": examples,
                                "test_example": 100.0})  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        run_xor(cfg, Path(tmp) / "run")
        saved = RunFolder(Path(tmp) / "run").checkpoint()
    n, out = cfg.n, {}
    for name, (key, a, b) in BLOCKS.items():
        w = saved["weights"][key][:, a * n : (a + 1) * n, b * n : (b + 1) * n]
        mean = torch.where(w >= 0, w, torch.nan).nanmean(dim=(1, 2))  # per seed
        change = 1000 * (mean - cfg.w_ff)
        out[name] = {"mean": change.mean().item(), "sd": change.std().item()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dts", default="0.1,0.5,1.0")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument(
        "--examples",
        type=int,
        default=0,
        help="also compare the weight change over this many cpu-preset examples",
    )
    p.add_argument(
        "--background",
        default="poisson",
        choices=["poisson", "bernoulli"],
        help="background trains of the operating point (the presets' Poisson by default)",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.examples < 0:
        p.error(f"--examples must be 0 (off) or a positive count, got {args.examples}")
    torch._dynamo.config.recompile_limit = 64  # one compiled step per dt and protocol
    seeds = tuple(int(x) for x in args.seeds.split(","))
    dts = args.dts.split(",")
    res = {dt: operating_point(float(dt), seeds, args.seconds, args.background) for dt in dts}
    learn = (
        {dt: learning_signal(float(dt), seeds, args.examples) for dt in dts}
        if args.examples
        else {}
    )
    if args.json:
        print(json.dumps({"operating_point": res, "learning": learn, "examples": args.examples},
                         indent=1))  # fmt: skip
        return
    for pat in map(str, PATTERNS):
        print(f"pattern {pat}: event rate Hz / burst probability %, mean (s.d.) over seeds")
        for dt, r in res.items():
            cells = "  ".join(f"{n} {r[pat][n]['er']:5.2f}/{100 * r[pat][n]['bp']:4.1f}"
                              for n in NAMES)  # fmt: skip
            print(f"  dt {dt:>4} ms: {cells}")
    if learn:
        print(f"mean weight change (x 1e-3) of each block after {args.examples} examples of the "
              "cpu protocol, mean (s.d.) over seeds")  # fmt: skip
        for dt, r in learn.items():
            cells = "  ".join(f"{k} {v['mean']:+.2f} ({v['sd']:.2f})" for k, v in r.items())
            print(f"  dt {dt:>4} ms: {cells}")


if __name__ == "__main__":
    main()
