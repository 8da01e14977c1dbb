"""Seconds per training image of the segregated-dendrite network (eLife 2017), against the
authors' code as measured side by side: their NumPy code took 12.9-15.5 ms per training
image and 28-38 ms per test image (784-500-10, their 10-step kernel and phases, real MNIST,
one process alternating the two codes, on this project's 2-core Intel Xeon CPU machine
type, 2026-12; the measurement of issue 35). The script prints apical's absolute times and
the ratios to that measured range, labelled as such.

    python benchmarks/segregated_dendrites.py [--device cpu|cuda|all] [--batches 1,4,32,128]
                                              [--hidden 500] [--reps 3] [--modes ...] [--json]

Model 784-500-10 (or --hidden), preset original-code (the setting of the authors' timing:
10-step PSP kernel, 50-57-step phases). One training step = the rule's directions (a
forward and a target phase of every image of the batch), an SGD step and after_step
(carried state, as in training); inputs: synthetic images with MNIST's density (19 % of
pixels on, mean intensity 0.13). Modes: `all-at-once` (the default: every step of a chunk
at once, compiled), `all-at-once-eager` (the same uncompiled), and the `compiled` and
`eager` time-step loops (`all_at_once = false`, the path of g_a > 0); medians of
interleaved repetitions (the first calls, which compile, are not timed). A test image is
one 250-step test phase, timed at the largest batch.
"""

from __future__ import annotations

import argparse
import json
from functools import partial

import torch
from rules_vs_backprop import (  # this folder's helpers
    devices,
    interleaved_medians,
    machine,
    training_step,
)

import apical
from apical.dendrites.config import dendrite_config
from apical.dendrites.network import SegregatedNet

# s per image, the authors' code measured side by side (module docstring): (fastest, slowest)
ORIGINAL_TRAIN, ORIGINAL_TEST = (0.0129, 0.0155), (0.028, 0.038)


def images(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    on = torch.rand(batch, 784, generator=g) < 0.19
    x = on * (0.2 + 0.8 * torch.rand(batch, 784, generator=g)) * 0.68
    return x.to(device), torch.randint(0, 10, (batch,), generator=g).to(device)


MODES = {  # DendriteConfig options of each mode
    "all-at-once": {"compile": True, "all_at_once": True},
    "all-at-once-eager": {"compile": False, "all_at_once": True},
    "compiled": {"compile": True, "all_at_once": False},
    "eager": {"compile": False, "all_at_once": False},
}


def ratios(original: tuple[float, float], ours: float) -> list[float]:
    """The speed-up against the fastest and the slowest measured time of the original."""
    return [original[0] / ours, original[1] / ours]


def bench(
    device: torch.device, batches: list[int], hidden: tuple[int, ...], reps: int, modes: list[str]
) -> dict:
    rule = apical.make_rule("segregated_dendrites")
    out: dict = {}
    for label in modes:
        torch.manual_seed(0)
        net = SegregatedNet(dendrite_config(hidden=hidden, **MODES[label])).to(device)
        fns = {
            batch: training_step(rule, net, *images(batch, device), lr=0.21, momentum=0.0)
            for batch in batches
        }
        medians = interleaved_medians(fns, device, reps, 1)
        per_image = {b: medians[b] / b for b in batches}
        best = min(per_image, key=per_image.get)
        x, _ = images(max(batches), device)
        test = interleaved_medians({"test": partial(net, x)}, device, reps, 1)["test"]
        out[label] = {
            "seconds per training image": {f"B={b}": v for b, v in per_image.items()},
            "best B": best,
            "speed-up vs the measured original (12.9-15.5 ms)": {
                f"B={b}": ratios(ORIGINAL_TRAIN, v) for b, v in per_image.items()
            },
            "test batch": max(batches),
            "seconds per test image": test / max(batches),
            "test speed-up vs the measured original (28-38 ms)": ratios(
                ORIGINAL_TEST, test / max(batches)
            ),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="all", help="cpu, cuda or all (cuda where present)")
    p.add_argument(  # B = 4 learns like the online protocol (segregated-dendrites-batch)
        "--batches", default="1,4,8,32,128,512", help="batch sizes, smallest first"
    )
    p.add_argument("--hidden", default="500", help="hidden sizes, comma-separated")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    modes = args.modes.split(",")
    if any(m not in MODES for m in modes):
        p.error(f"unknown mode in {args.modes!r}; known: {', '.join(MODES)}")
    torch._dynamo.config.cache_size_limit = 64  # one compiled step per batch size
    batches = sorted(int(v) for v in args.batches.split(","))
    hidden = tuple(int(v) for v in args.hidden.split(","))
    result = {
        **machine(),
        "network": f"784-{'-'.join(map(str, hidden))}-10, preset original-code",
        "results": {
            d: bench(torch.device(d), batches, hidden, args.reps, modes)
            for d in devices(args.device)
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for dev, modes in result["results"].items():
        where = result["gpu"] if dev == "cuda" else f"CPU, {result['threads']} threads"
        print(f"\n{dev} ({where}), {result['network']}")
        for mode, row in modes.items():
            times = "  ".join(
                f"{k} {1e3 * v:.2f} ms" for k, v in row["seconds per training image"].items()
            )
            print(f"  {mode:<17} per training image: {times}")
            ups = "  ".join(
                f"{k} {lo:.1f}-{hi:.1f}x"
                for k, (lo, hi) in row["speed-up vs the measured original (12.9-15.5 ms)"].items()
            )
            lo, hi = row["test speed-up vs the measured original (28-38 ms)"]
            print(f"{'':19}speed-up vs the authors' code as measured (12.9-15.5 ms): {ups}")
            print(
                f"{'':19}test image {1e3 * row['seconds per test image']:.2f} ms at "
                f"B={row['test batch']}: {lo:.1f}-{hi:.1f}x the measured 28-38 ms"
            )


if __name__ == "__main__":
    main()
