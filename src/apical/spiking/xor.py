"""The XOR protocol of NN Fig. 4 (docs/models/spiking-burst-ensembles.md) on R seeds at
once, in a run folder, with atomic checkpoints and exact resume.

Schedule per seed: burn-in (3 tau_avg, no input, plasticity off); pre-test (the four
patterns, one example each, plasticity off); training examples in the fixed order (0,0),
(1,0), (0,1), (1,1), each a prediction window (90 %, plasticity off) then a teaching window
(10 %, plasticity on, teacher current computed once at its start); post-test. The output
ensemble's event rate during a test presentation (after its first quarter, a transient
choice documented here) is compared with e_th = 6 Hz: a seed solves XOR when (1,0) and
(0,1) lie above it and (0,0) and (1,1) below it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from apical.errors import Interrupted
from apical.interrupts import stop_signals
from apical.run_folder import SUMMARY, RunFolder, jsonable
from apical.spiking import neurons, plasticity, xor_net
from apical.spiking.config import XorConfig
from apical.spiking.raster import Recorder

PATTERNS = ((0, 0), (1, 0), (0, 1), (1, 1))
RASTER_NEURONS = 25  # per ensemble, replica 0, recorded during the test presentations


def target(pattern: tuple[int, int]) -> int:
    return pattern[0] ^ pattern[1]


def teacher(rate: Tensor, y: int, cfg: XorConfig) -> Tensor:
    """Dendritic teaching current (pA) per output neuron from its event-rate estimate
    (Hz), §5: saturating at +-I_0, 1/(distance to the wrong bound) in between,
    zero within the tolerance of the correct bound."""
    lo, hi = cfg.rule.e_min + cfg.teacher_tolerance, cfg.rule.e_max - cfg.teacher_tolerance
    i0 = cfg.teacher_max
    if y == 0:
        mid = -i0 / (cfg.rule.e_max - rate).clamp(min=1e-6)
        return torch.where(rate >= hi, -i0, torch.where(rate > lo, mid, 0.0))
    mid = i0 / (rate - cfg.rule.e_min).clamp(min=1e-6)
    return torch.where(rate <= lo, i0, torch.where(rate < hi, mid, 0.0))


def cost(rate: Tensor, y: int, cfg: XorConfig) -> Tensor:
    """Binary cross-entropy of the normalised mean output rate (§5), per seed."""
    nu = ((rate.mean(1) - cfg.rule.e_min) / (cfg.rule.e_max - cfg.rule.e_min)).clamp(0.01, 0.99)
    return -(y * torch.log(nu) + (1 - y) * torch.log(1 - nu))


def schedule(cfg: XorConfig) -> list[dict[str, Any]]:
    """Segments of the protocol, in order: kind, pattern, steps, plastic."""
    tau_ex = cfg.example
    test = cfg.test_example or tau_ex
    burn = cfg.burn_in if cfg.burn_in is not None else 3 * cfg.rule.tau_avg
    teach = cfg.steps(cfg.teach_fraction * tau_ex)
    predict = cfg.steps(tau_ex) - teach
    segs: list[dict[str, Any]] = [{"kind": "burn-in", "pattern": None, "steps": cfg.steps(burn)}]
    segs += [{"kind": "pre-test", "pattern": p, "steps": cfg.steps(test)} for p in PATTERNS]
    for e in range(cfg.examples):
        p = PATTERNS[e % 4]
        segs.append({"kind": "predict", "pattern": p, "steps": predict, "example": e})
        segs.append({"kind": "teach", "pattern": p, "steps": teach, "example": e})
    segs += [{"kind": "post-test", "pattern": p, "steps": cfg.steps(test)} for p in PATTERNS]
    return segs


def input_current(pattern: tuple[int, int] | None, cfg: XorConfig, r: int, device) -> Tensor:
    i = torch.zeros(r, 5 * cfg.n, device=device)
    if pattern is not None:
        for k, bit in enumerate(pattern):
            i[:, k * cfg.n : (k + 1) * cfg.n] = cfg.i_on if bit else cfg.i_off
    return i


def run_xor(
    cfg: XorConfig,
    run_dir: Path,
    device: str = "cpu",
    resume: bool = False,
    echo: Callable[[str], None] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any] | None:
    """Run the protocol for every seed of `cfg` at once in the run folder `run_dir`
    (apical.run_folder); returns the summary written to its summary.json (test rates,
    solved per seed, late spikes, seconds), or None when `stop_after` training examples
    were checkpointed first (to resume later). Rows: metrics.jsonl, one per segment (its
    bins of event and burst rates; the cost of a training segment, the output rate of a
    test); rasters.jsonl, the recorded spikes of every test presentation. The checkpoint
    is saved every `checkpoint_every` examples and at the end of the segment in which a
    SIGINT or SIGTERM arrives."""
    folder = RunFolder(run_dir)
    with folder.writer(), stop_signals() as stop, torch.no_grad():  # no autograd bookkeeping
        resuming = folder.begin(_jsonable(cfg), resume=resume)
        return _run(cfg, folder, resuming, torch.device(device), stop, echo, stop_after)


def _run(cfg: XorConfig, folder: RunFolder, resuming: bool, dev: torch.device, stop,
         echo, stop_after) -> dict[str, Any] | None:  # fmt: skip
    r = len(cfg.seeds)
    keys = xor_net.replica_keys(cfg.seeds, dev)
    consts = xor_net.constants(cfg, dev)
    segs = schedule(cfg)
    if resuming:
        saved, rows = folder.restore(dev)
        state, weights = _unpack(saved["state"]), xor_net.Weights(**saved["weights"])
        start, seconds = saved["segment"], saved["seconds"]
        metrics, rasters = rows["metrics"], rows["rasters"]
    else:
        state, weights = xor_net.initial_state(cfg, r, dev), xor_net.build(cfg, keys)
        start, seconds, metrics, rasters = 0, 0.0, [], []
    engine = xor_net.engine(cfg.compile)
    bin_steps = cfg.steps(cfg.bin or cfg.example / 20)
    zero_d = torch.zeros(r, 5 * cfg.n, device=dev)
    watched = (torch.arange(5, device=dev)[:, None] * cfg.n
               + torch.arange(min(RASTER_NEURONS, cfg.n), device=dev)).flatten()  # fmt: skip
    t0 = time.perf_counter()
    for i in range(start, len(segs)):
        seg = segs[i]
        i_s = input_current(seg["pattern"], cfg, r, dev)
        i_d = zero_d
        if seg["kind"] == "teach":
            rate = plasticity.event_rate(state.traces, cfg.rule)[:, 4 * cfg.n :]
            i_d = torch.cat([zero_d[:, : 4 * cfg.n], teacher(rate, target(seg["pattern"]), cfg)], 1)
        raster = Recorder(watched, seg["steps"], cfg.dt) if seg["kind"].endswith("test") else None
        args = (weights, consts, i_s, i_d, keys, cfg)
        plastic = seg["kind"] == "teach"
        state, bins = run_segment(state, args, engine, seg["steps"], plastic, bin_steps, raster)
        rates = torch.stack(bins, 1).cpu()  # (R, bins, 2, 5): one host copy per segment
        last = seg.get("example", -1) >= cfg.examples - 4  # full bins: tests, last 4 examples
        kept = rates if last or seg["kind"] not in ("predict", "teach") else rates.mean(1, True)
        row = {"segment": i, "kind": seg["kind"], "pattern": seg["pattern"],
               "rates": kept.tolist()}  # fmt: skip
        if seg["kind"] in ("predict", "teach"):
            est = plasticity.event_rate(state.traces, cfg.rule)[:, 4 * cfg.n :]
            y = target(seg["pattern"])
            row.update(example=seg["example"], target=y, cost=cost(est, y, cfg).tolist())
        if seg["kind"].endswith("test"):
            keep = rates[:, rates.shape[1] // 4 :, 0, 4].mean(1)  # output event rate, Hz
            row["output_rate"] = keep.tolist()
            rasters.append({"segment": i, "kind": seg["kind"], "pattern": list(seg["pattern"]),
                            "per_ensemble": len(watched) // 5,
                            "spikes": raster.spikes()})  # fmt: skip
        metrics.append(row)
        done = seg["kind"] == "teach" and (seg["example"] + 1) % cfg.checkpoint_every == 0
        if done or stop.requested or i + 1 == len(segs):
            elapsed = seconds + time.perf_counter() - t0
            folder.save({"state": _pack(state), "weights": weights._asdict(), "segment": i + 1,
                         "seconds": elapsed}, {"metrics": metrics, "rasters": rasters})  # fmt: skip
            if echo and done:
                c = row["cost"]
                echo(f"example {seg['example'] + 1}/{cfg.examples}: cost "
                     f"{sum(c) / len(c):.3f}, {elapsed:.0f} s")  # fmt: skip
            if stop.requested and i + 1 < len(segs):
                raise Interrupted(
                    f"interrupted by {stop.signal} after segment {i + 1} of {len(segs)}: the run "
                    f"is saved in {folder.path}; continue it with --resume"
                )
            if done and stop_after is not None and seg["example"] + 1 >= stop_after:
                return None
    seconds += time.perf_counter() - t0
    out = summarize(metrics, cfg, seconds)
    out["late_spikes"], out["late_updates"] = state.late.tolist(), state.late_updates.tolist()
    out["missed_updates"] = state.missed.tolist()
    folder.write_json(SUMMARY, out)
    return out


def run_segment(
    state: xor_net.State, args: tuple, engine: xor_net.Engine, steps: int, plastic: bool,
    bin_steps: int, raster: Recorder | None = None,
) -> tuple[xor_net.State, list[Tensor]]:  # fmt: skip
    """`steps` steps of `xor_net.step` with args (weights, constants, i_s, i_d, keys, cfg)
    and the event and burst rates (Hz, (R, 2, 5)) of every bin of `bin_steps` steps (the
    last one may be shorter). A bin is one compiled call (`engine.loop`) unless the
    weights learn (written in place at every step) or a raster records every step."""
    cfg, bins, t = args[-1], [], 0
    while t < steps:
        n = min(bin_steps - t % bin_steps, steps - t)
        if plastic or raster is not None:
            for _ in range(n):
                state = engine.step(state, *args, plastic)
                if raster is not None:
                    raster(neurons.spiked(state.neurons, cfg.neuron, cfg.dt))
        else:
            state = engine.loop(state, n, *args, False)
        t += n
        bins.append(state.counts / (cfg.n * ((t - 1) % bin_steps + 1) * cfg.dt / 1000.0))
        state = state._replace(counts=torch.zeros_like(state.counts))
    return state, bins


def summarize(rows: list[dict[str, Any]], cfg: XorConfig, seconds: float) -> dict[str, Any]:
    tests: dict[str, dict] = {"pre-test": {}, "post-test": {}}
    for t in rows:
        if "output_rate" in t:
            tests[t["kind"]][tuple(t["pattern"])] = t["output_rate"]
    post = tests["post-test"]
    solved = [all((post[p][s] > cfg.threshold) == bool(target(p)) for p in PATTERNS)
              for s in range(len(cfg.seeds))]  # fmt: skip
    simulated = sum(seg["steps"] for seg in schedule(cfg)) * cfg.dt / 1000.0
    return {
        "seeds": list(cfg.seeds),
        "solved": solved,
        "solved_count": sum(solved),
        "pre_test": {str(p): v for p, v in tests["pre-test"].items()},
        "post_test": {str(p): v for p, v in post.items()},
        "threshold_hz": cfg.threshold,
        "simulated_seconds": simulated,
        "wall_seconds": seconds,
        "simulated_per_wall_second": simulated / max(seconds, 1e-9),
    }


def ensemble_responses(rows: list[dict[str, Any]]) -> dict[str, dict[str, list]]:
    """Per test kind and pattern: event rate (Hz) and burst probability of every ensemble,
    per seed ([seed][ensemble]), over the presentation after its first quarter (Fig. 4f)."""
    out: dict[str, dict[str, list]] = {"pre-test": {}, "post-test": {}}
    for b in rows:
        if b["kind"] in out:
            r = torch.tensor(b["rates"])  # (R, bins, 2, 5)
            r = r[:, r.shape[1] // 4 :].mean(1)
            bp = (r[:, 1] / r[:, 0].clamp(min=1e-9)).tolist()
            out[b["kind"]][str(tuple(b["pattern"]))] = {"er": r[:, 0].tolist(), "bp": bp}
    return out


def _jsonable(cfg: XorConfig) -> dict[str, Any]:
    return jsonable(asdict(cfg))


def _pack(s: xor_net.State) -> dict[str, Any]:
    return {"neurons": s.neurons._asdict(), "detector": s.detector._asdict(),
            "traces": s.traces._asdict(), "t": s.t, "counts": s.counts,
            "pending": s.pending, "late": s.late, "deferred": s.deferred,
            "late_updates": s.late_updates, "missed": s.missed}  # fmt: skip


def _unpack(d: dict[str, Any]) -> xor_net.State:
    return xor_net.State(neurons.Neurons(**d["neurons"]), neurons.Detector(**d["detector"]),
                         plasticity.Traces(**d["traces"]), d["t"], d["counts"],
                         d["pending"], d["late"], d["deferred"], d["late_updates"],
                         d["missed"])  # fmt: skip
