"""`apical reproduce` for the spiking simulations: run a protocol, print measured against
published, draw its figure."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apical.errors import ApicalError
from apical.plots import _save, plt
from apical.spiking import raster
from apical.spiking.config import XorConfig, with_options
from apical.spiking.multiplex import MultiplexConfig, simulate
from apical.spiking.protocols import figure2
from apical.spiking.xor import PATTERNS, ensemble_responses, run_xor


def reproduce(protocol: str, options: dict[str, Any], out: Path, device: str, resume: bool,
              echo: Callable[[str], None]) -> tuple[list[str], Path]:  # fmt: skip
    """Lines to print and the figure written, for protocol "xor" or "plasticity"."""
    if protocol == "xor":
        return _xor(with_options(XorConfig(), options), out, device, resume, echo)
    if protocol == "plasticity":
        return _plasticity(options, out)
    if protocol == "multiplexing":
        return _multiplexing(options, out, device)
    raise ApicalError(
        f"unknown spiking protocol {protocol!r}; known: xor, plasticity, multiplexing"
    )


def _multiplexing(options: dict[str, Any], out: Path, device: str) -> tuple[list[str], Path]:
    """NN Fig. 3 at each dt of options["dts"]: the four correlations, mean (s.d.) over seeds."""
    opts = dict(options)
    dts = opts.pop("dts", [0.1])
    results = {}
    for dt in dts:
        cfg = with_options(MultiplexConfig(), {**opts, "dt": float(dt)})
        t0 = time.perf_counter()
        results[str(dt)] = simulate(cfg, device)
        results[str(dt)]["wall_seconds"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "multiplexing.json").write_text(json.dumps(results))
    lines = [f"{cfg.n_pyr} pyramidal neurons per population, {len(cfg.seeds)} seeds, "
             f"{cfg.duration / 1000:g} s; Pearson r over the bins after the burn-in, "
             "mean (s.d.) over seeds"]  # fmt: skip
    for dt, res in results.items():
        cells = ", ".join(f"{k} {v['mean']:.2f} ({v['sd']:.2f})"
                          for k, v in res["correlations"].items())  # fmt: skip
        late = sum(res["late_spikes"])
        lines.append(f"dt {dt} ms: {cells}; {res['wall_seconds']:.0f} s; {late:.0f} spikes late")
    first = results[str(dts[0])]
    fig, ax = plt.subplots(3, 2, figsize=(11, 8.5), sharex=True)
    t = first["t_ms"]
    per = first["raster_per_population"]
    for pop, a in enumerate(ax[2]):
        spikes = [
            [ms, k - pop * per] for ms, k in first["raster"] if pop * per <= k < (pop + 1) * per
        ]
        raster.draw(a, spikes)
        a.set(title=f"pyr{pop + 1} raster (first seed; bursts red)", xlabel="time (ms)",
              ylabel="neuron")  # fmt: skip
    panels = [("pyr1 ER", "er", 0, "i_s"), ("pyr1 BP", "bp", 0, None),
              ("pyr2 ER", "er", 1, None), ("pyr2 BP", "bp", 1, "i_d")]  # fmt: skip
    for a, (title, key, pop, ref) in zip(ax[:2].flat, panels, strict=True):
        for seed_row in first[key]:
            a.plot(t, [b[pop] for b in seed_row], lw=0.8, alpha=0.7)
        if ref:
            r = first[ref]
            lo, hi = min(r), max(r)
            ys = [b[pop] for b in first[key][0]]
            a.plot(t, [min(ys) + (v - lo) / (hi - lo + 1e-12) * (max(ys) - min(ys)) for v in r],
                   "k--", lw=1, label=f"{ref} (rescaled)")  # fmt: skip
            a.legend(fontsize=8)
        a.set(title=title)
    path = _save(
        fig, out / "multiplexing.png", f"Multiplexing (Payeur et al. 2021, Fig. 3), dt {dts[0]} ms"
    )
    return lines, path


def _xor(cfg: XorConfig, out: Path, device: str, resume: bool, echo) -> tuple[list[str], Path]:
    s = run_xor(cfg, out, device=device, resume=resume, echo=echo)
    assert s is not None
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
    lines.append(f"solved in {s['solved_count']} of {len(cfg.seeds)} seeds (published: 5 of 5); "
                 f"{s['simulated_seconds']:.0f} s simulated in {s['wall_seconds']:.0f} s "
                 f"({s['simulated_per_wall_second']:.2f} simulated s per s); spikes delivered "
                 f"a step late {sum(s['late_spikes']):.0f}, weight updates a step late "
                 f"{sum(s['late_updates']):.0f}, lost {sum(s['missed_updates']):.0f}")  # fmt: skip
    resp = ensemble_responses(json.loads((out / "log.json").read_text()))
    lines.append("hidden ensembles' event rate (Hz) before -> after learning, mean over seeds "
                 "(NN Fig. 4f):")  # fmt: skip
    for p in map(str, PATTERNS):
        cells = []
        for k, name in ((2, "hidden1"), (3, "hidden2"), (4, "output")):
            pre, post = (sum(row[k] for row in resp[kind][p]["er"]) / len(resp[kind][p]["er"])
                         for kind in ("pre-test", "post-test"))  # fmt: skip
            cells.append(f"{name} {pre:5.2f} -> {post:5.2f}")
        lines.append(f"  {p}: " + ", ".join(cells))
    plot_xor_rasters(out)
    return lines, plot_xor(out)


def plot_xor(run: Path) -> Path:
    """Output event rate per pattern before and after learning for every seed, the cost
    over training, and event rate / burst probability of each ensemble over the last four
    training examples."""
    log = json.loads((run / "log.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    seeds, x = summary["seeds"], range(len(PATTERNS))
    for i, seed in enumerate(seeds):
        for kind, style in (("pre_test", ":"), ("post_test", "-")):
            y = [summary[kind][str(p)][i] for p in PATTERNS]
            ax[0].plot(x, y, style, marker="o", color=f"C{i}",
                       label=f"seed {seed}" if kind == "post_test" else None)  # fmt: skip
    ax[0].axhline(summary["threshold_hz"], color="k", lw=0.8)
    ax[0].set(xticks=list(x), xticklabels=[str(p) for p in PATTERNS],
              ylabel="output event rate (Hz)",
              title="before (dotted) and after (solid) learning")  # fmt: skip
    ax[0].legend(fontsize=8)
    pre = [c for c in log["costs"] if c["kind"] == "predict"]
    cost = [sum(c["cost"]) / len(c["cost"]) for c in pre]
    epochs = [sum(cost[i : i + 4]) for i in range(0, len(cost) - 3, 4)]
    ax[1].plot(epochs)
    ax[1].set(xlabel="epoch (4 examples)", ylabel="cost before teaching, mean over seeds",
              title="cost")  # fmt: skip
    last = [b for b in log["bins"] if b["kind"] in ("predict", "teach")][-8:]
    rates = [r for b in last for r in _seed_mean(b["rates"])]
    for k, name in enumerate(("input1", "input2", "hidden1", "hidden2", "output")):
        er = [r[0][k] for r in rates]
        bp = [r[1][k] / max(r[0][k], 1e-9) for r in rates]
        ax[2].plot(er, color=f"C{k}", label=f"{name} ER")
        ax[2].plot([100 * b for b in bp], ":", color=f"C{k}")
    ax[2].set(xlabel="bin, last 4 training examples", ylabel="ER (Hz), BP (%, dotted)",
              title="event rate and burst probability")  # fmt: skip
    ax[2].legend(fontsize=7)
    return _save(fig, run / "xor.png", "Spiking XOR (Payeur et al. 2021, Fig. 4)")


def plot_xor_rasters(run: Path, window: float = 2000.0) -> Path | None:
    """Spike rasters of the recorded neurons of each ensemble (seed 1 of the run) over the
    last `window` ms of each test presentation, before (top) and after (bottom) learning;
    spikes in bursts in red."""
    log = json.loads((run / "log.json").read_text())
    rasters = log.get("rasters", [])
    if not rasters:
        return None
    fig, ax = plt.subplots(2, 4, figsize=(15, 6.5), sharey=True)
    names = ("input1", "input2", "hidden1", "hidden2", "output")
    for r in rasters:
        row = 0 if r["kind"] == "pre-test" else 1
        a = ax[row, PATTERNS.index(tuple(r["pattern"]))]
        end = max((t for t, _ in r["spikes"]), default=window)
        start = max(0.0, end - window)
        per = r["per_ensemble"]
        for e in range(len(names)):
            spikes = [[t, k - e * per] for t, k in r["spikes"]
                      if t >= start and e * per <= k < (e + 1) * per]  # fmt: skip
            raster.draw(a, spikes, offset=e * per, color=f"C{e}")
        a.set(title=f"{r['kind']} {tuple(r['pattern'])}", xlabel="time in presentation (ms)")
        a.set_yticks([(e + 0.5) * per for e in range(len(names))], names)
    title = "Spiking XOR rasters (first seed; spikes within 16 ms of another: red)"
    return _save(fig, run / "xor_raster.png", title)


def _seed_mean(rates: list) -> list:
    """(R, bins, 2, 5) nested lists -> per bin (2, 5) means over seeds."""
    r = len(rates)
    return [[[sum(rates[s][b][i][k] for s in range(r)) / r for k in range(5)] for i in range(2)]
            for b in range(len(rates[0]))]  # fmt: skip


def _plasticity(options: dict[str, Any], out: Path) -> tuple[list[str], Path]:
    res = figure2(**options)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figure2.json").write_text(json.dumps(res, indent=1))
    b, c, d = res["b"], res["c"], res["d"]
    flip_b = next(f for f, w in zip(b["x"], b["dw"], strict=True) if w > 0)
    lines = [f"b (pairings): LTD below and LTP from {flip_b:.1f} Hz (published: LTP once "
             "the second pairing falls within 16 ms, f > 62.5 Hz)"]  # fmt: skip
    for p0 in (0.3, 0.5):
        ys = c[f"dw_p{p0}"]
        flip = next((r for r, w in zip(c["x"], ys, strict=True) if w > 0), None)
        lines.append(f"c (Poisson, P-bar(0) = {p0}): first LTP rate {flip:.1f} Hz; burst fraction "
                     f"exceeds P-bar(0) above {res['crossover_c'][f'p{p0}']:.1f} Hz")  # fmt: skip
    for er in (5, 10):
        ys = d[f"dw_er{er}"]
        flip = next((p for p, w in zip(d["x"], ys, strict=True) if w > 0), None)
        lines.append(f"d (burst-Poisson, ER {er} Hz, P-bar(0) = 0.2): LTP from p = {flip:.2f}")
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    ax[0].semilogx(b["x"], b["dw"], marker="o")
    ax[0].set(xlabel="pairing frequency (Hz)", ylabel="weight change", title="b: periodic")
    for p0 in (0.3, 0.5):
        ax[1].errorbar(c["x"], c[f"dw_p{p0}"], c[f"sd_p{p0}"], marker="o", label=f"P-bar(0)={p0}")
    ax[1].set(xlabel="postsynaptic rate (Hz)", title="c: Poisson")
    for er in (5, 10):
        ax[2].errorbar([100 * p for p in d["x"]], d[f"dw_er{er}"], d[f"sd_er{er}"], marker="o",
                       label=f"ER {er} Hz")  # fmt: skip
    ax[2].set(xlabel="burst probability (%)", title="d: burst-Poisson")
    for a in ax:
        a.axhline(0, color="k", lw=0.6)
    ax[1].legend(fontsize=8)
    ax[2].legend(fontsize=8)
    return lines, _save(
        fig, out / "figure2.png", "Burst-dependent plasticity (Payeur et al. 2021, Fig. 2b-d)"
    )
