"""Experiments of kind "spiking": a protocol of the spiking burst-ensemble simulations.

    protocol = "xor" | "plasticity" | "multiplexing"
    published = "what the paper reports"
    [options]   the protocol's config fields (dotted for nested ones: "rule.tau_avg"):
                XorConfig, Figure2, or MultiplexConfig plus `dts` (the time steps to run)

The simulation runs in one run folder, OUT/NAME/PROTOCOL (apical.run_folder): its config,
rows, checkpoint (XOR) and summary.json; the figures go beside them. A preset is not the
published protocol, so its run is reported and not judged.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from apical.config import from_dict, replace
from apical.errors import ApicalError, ConfigError
from apical.experiments.report import RunReport
from apical.interrupts import stop_signals
from apical.plots.spiking import plot_multiplexing, plot_plasticity, plot_xor, plot_xor_rasters
from apical.run_folder import SUMMARY, RunFolder, jsonable
from apical.spiking.config import XorConfig
from apical.spiking.multiplex import MultiplexConfig, simulate
from apical.spiking.protocols import Figure2, figure2
from apical.spiking.xor import PATTERNS, ensemble_responses, run_xor
from apical.train import resolve_device


@dataclass(frozen=True)
class SpikingSpec:
    protocol: Literal["xor", "plasticity", "multiplexing"]
    published: str
    options: dict[str, Any] = field(default_factory=dict)


class SpikingRunner:
    """The runner of kind "spiking"."""

    picks_runs = False

    def parse(self, body: dict[str, Any], origin: str) -> SpikingSpec:
        spec = from_dict(SpikingSpec, body, "spiking experiment")
        protocol_config(spec)  # the options validated now
        return spec

    def run(self, exp, folder: Path, options) -> Any:
        unfit = sorted(k for k in options.overrides if k != "device")
        if unfit:
            raise ApicalError(
                f"{', '.join('--' + k.replace('_', '-') for k in unfit)} does not apply to the "
                f"spiking simulation {exp.name}; use --preset for a shorter protocol"
            )
        spec: SpikingSpec = exp.spec
        device = str(resolve_device(options.overrides.get("device") or "cpu"))
        run_dir = folder / spec.protocol
        resume = RunFolder(run_dir).has_run()
        if resume and not options.resume:
            raise ApicalError(
                f"{run_dir} already holds a run; add --resume to continue it (a finished run "
                "is reported without simulating), or choose another --out"
            )
        protocol = {"xor": _xor, "plasticity": _plasticity, "multiplexing": _multiplexing}
        values, lines, files = protocol[spec.protocol](spec, run_dir, device, resume, options.echo)
        solved = values.get("solved_count")
        if exp.preset is not None:
            verdict = f"not checked: preset {exp.preset} is not the published protocol"
        elif spec.protocol == "xor":
            verdict = "pass" if solved == values["seeds"] else "FAIL"
        else:
            verdict = "not checked: the paper shows curves, not numbers; compare the notes"
        expected = "solved in every seed" if spec.protocol == "xor" else ""
        run = RunReport(spec.protocol, values, spec.published, expected, verdict)
        return exp.report(folder, [run], notes=lines, files=files)


def protocol_config(spec: SpikingSpec) -> Any:
    """The validated config of the spec's protocol (with its options)."""
    if spec.protocol == "xor":
        return replace(XorConfig(), spec.options, "option")
    if spec.protocol == "plasticity":
        return from_dict(Figure2, spec.options, "option")
    opts = dict(spec.options)
    dts = opts.pop("dts", [0.1])
    if not isinstance(dts, list) or not dts:
        raise ConfigError(f"dts must be a non-empty list of time steps (ms), got {dts!r}")
    return [replace(MultiplexConfig(), {**opts, "dt": dt}, "option") for dt in dts]


def _xor(spec, run_dir: Path, device: str, resume: bool, echo):
    cfg = protocol_config(spec)
    s = run_xor(cfg, run_dir, device=device, resume=resume, echo=echo)
    folder = RunFolder(run_dir)
    rows, rasters = folder.rows(), folder.rows("rasters")
    lines = [
        f"XOR, {len(cfg.seeds)} seeds, ensembles of {cfg.n} neurons (p = {cfg.p:g}), "
        f"dt {cfg.dt} ms, {cfg.examples} examples of "
        f"{cfg.example / 1000:g} s, tau_avg {cfg.rule.tau_avg / 1000:g} s: output event "
        f"rate (Hz) in the post-test, threshold {cfg.threshold:g} Hz"
    ]
    lines.append("seed  " + "  ".join(f"{p!s:>8}" for p in PATTERNS) + "  solved")
    for i, seed in enumerate(s["seeds"]):
        rates = "  ".join(f"{s['post_test'][str(p)][i]:8.2f}" for p in PATTERNS)
        lines.append(f"{seed:>4}  {rates}  {'yes' if s['solved'][i] else 'no'}")
    lines.append(f"solved in {s['solved_count']} of {len(cfg.seeds)} seeds; "
                 f"{s['simulated_seconds']:.0f} s simulated in {s['wall_seconds']:.0f} s "
                 f"({s['simulated_per_wall_second']:.2f} simulated s per s); spikes delivered "
                 f"a step late {sum(s['late_spikes']):.0f}, weight updates a step late "
                 f"{sum(s['late_updates']):.0f}, lost {sum(s['missed_updates']):.0f}")  # fmt: skip
    resp = ensemble_responses(rows)
    lines.append("hidden ensembles' event rate (Hz) before -> after learning, mean over seeds "
                 "(NN Fig. 4f):")  # fmt: skip
    for p in map(str, PATTERNS):
        cells = []
        for k, name in ((2, "hidden1"), (3, "hidden2"), (4, "output")):
            pre, post = (sum(row[k] for row in resp[kind][p]["er"]) / len(resp[kind][p]["er"])
                         for kind in ("pre-test", "post-test"))  # fmt: skip
            cells.append(f"{name} {pre:5.2f} -> {post:5.2f}")
        lines.append(f"  {p}: " + ", ".join(cells))
    files = {"xor.png": plot_xor(rows, s, run_dir / "xor.png")}
    if rasters:
        files["xor_raster.png"] = plot_xor_rasters(rasters, run_dir / "xor_raster.png")
    files["xor/summary.json"] = run_dir / SUMMARY
    values = {"solved_count": s["solved_count"], "seeds": len(cfg.seeds),
              "simulated_per_wall_second": s["simulated_per_wall_second"]}  # fmt: skip
    return values, lines, files


def _once(run_dir: Path, config: dict[str, Any], resume: bool, make) -> dict[str, Any]:
    """A protocol without checkpoints: its summary, simulated now or (resuming a finished
    run) read from the folder."""
    folder = RunFolder(run_dir)
    with folder.writer(), stop_signals():
        folder.begin(config, resume=resume)
        summary = folder.summary() if resume else None
        if summary is None:
            summary = make()
            folder.write_json(SUMMARY, summary)
    return summary


def _plasticity(spec, run_dir: Path, device: str, resume: bool, echo):
    cfg = protocol_config(spec)
    res = _once(run_dir, jsonable(asdict(cfg)), resume, lambda: figure2(**asdict(cfg)))
    b, c, d = res["b"], res["c"], res["d"]
    flip_b = next(f for f, w in zip(b["x"], b["dw"], strict=True) if w > 0)
    values = {"b_ltp_from_hz": flip_b}
    lines = [f"b (pairings): LTD below and LTP from {flip_b:.1f} Hz (published: LTP once "
             "the second pairing falls within 16 ms, f > 62.5 Hz)"]  # fmt: skip
    for p0 in (0.3, 0.5):
        ys = c[f"dw_p{p0}"]
        flip = next((r for r, w in zip(c["x"], ys, strict=True) if w > 0), None)
        values[f"c_p{p0}_ltp_from_hz"] = flip
        lines.append(f"c (Poisson, P-bar(0) = {p0}): first LTP rate {_hz(flip)}; burst fraction "
                     f"exceeds P-bar(0) above {res['crossover_c'][f'p{p0}']:.1f} Hz")  # fmt: skip
    for er in (5, 10):
        ys = d[f"dw_er{er}"]
        flip = next((p for p, w in zip(d["x"], ys, strict=True) if w > 0), None)
        values[f"d_er{er}_ltp_from_p"] = flip
        shown = "none" if flip is None else f"{flip:.2f}"
        lines.append(f"d (burst-Poisson, ER {er} Hz, P-bar(0) = 0.2): LTP from p = {shown}")
    files = {"figure2.png": plot_plasticity(res, run_dir / "figure2.png"),
             "plasticity/summary.json": run_dir / SUMMARY}  # fmt: skip
    return values, lines, files


def _multiplexing(spec, run_dir: Path, device: str, resume: bool, echo):
    cfgs = protocol_config(spec)

    def make() -> dict[str, Any]:
        results = {}
        for cfg in cfgs:
            t0 = time.perf_counter()
            results[str(cfg.dt)] = simulate(cfg, device)
            results[str(cfg.dt)]["wall_seconds"] = time.perf_counter() - t0
        return results

    config = {"dts": [c.dt for c in cfgs], **jsonable(asdict(cfgs[0]))}
    results = _once(run_dir, config, resume, make)
    cfg = cfgs[0]
    lines = [f"{cfg.n_pyr} pyramidal neurons per population, {len(cfg.seeds)} seeds, "
             f"{cfg.duration / 1000:g} s; Pearson r over the bins after the burn-in, "
             "mean (s.d.) over seeds"]  # fmt: skip
    values = {}
    for dt, res in results.items():
        cells = ", ".join(f"{k} {v['mean']:.2f} ({v['sd']:.2f})"
                          for k, v in res["correlations"].items())  # fmt: skip
        values.update({f"dt{dt} {k}": v["mean"] for k, v in res["correlations"].items()})
        late = sum(res["late_spikes"])
        lines.append(f"dt {dt} ms: {cells}; {res['wall_seconds']:.0f} s; {late:.0f} spikes late")
    files = {"multiplexing.png": plot_multiplexing(results, run_dir / "multiplexing.png")}
    return values, lines, files


def _hz(v: float | None) -> str:
    return "none" if v is None else f"{v:.1f} Hz"


RUNNER = SpikingRunner()
