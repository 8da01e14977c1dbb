"""Figures of the spiking protocols (NN 2021 Figs. 2-4), from their run folders' rows and
summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apical.plots.base import plt, save
from apical.spiking import raster
from apical.spiking.xor import PATTERNS
from apical.spiking.xor_net import POPULATIONS as ENSEMBLES


def plot_xor(rows: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> Path:
    """Output event rate per pattern before and after learning for every seed, the cost
    over training, and event rate / burst probability of each ensemble over the last four
    training examples."""
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
    cost = [sum(r["cost"]) / len(r["cost"]) for r in rows if r["kind"] == "predict"]
    epochs = [sum(cost[i : i + 4]) for i in range(0, len(cost) - 3, 4)]
    ax[1].plot(epochs)
    ax[1].set(xlabel="epoch (4 examples)", ylabel="cost before teaching, mean over seeds",
              title="cost")  # fmt: skip
    last = [r for r in rows if r["kind"] in ("predict", "teach")][-8:]
    rates = [b for r in last for b in _seed_mean(r["rates"])]
    for k, name in enumerate(ENSEMBLES):
        er = [b[0][k] for b in rates]
        bp = [b[1][k] / max(b[0][k], 1e-9) for b in rates]
        ax[2].plot(er, color=f"C{k}", label=f"{name} ER")
        ax[2].plot([100 * p for p in bp], ":", color=f"C{k}")
    ax[2].set(xlabel="bin, last 4 training examples", ylabel="ER (Hz), BP (%, dotted)",
              title="event rate and burst probability")  # fmt: skip
    ax[2].legend(fontsize=7)
    return save(fig, path, "Spiking XOR (Payeur et al. 2021, Fig. 4)")


def plot_xor_rasters(rasters: list[dict[str, Any]], path: Path, window: float = 2000.0) -> Path:
    """Spike rasters of the recorded neurons of each ensemble (first seed) over the last
    `window` ms of each test presentation, before (top) and after (bottom) learning;
    spikes in bursts in red."""
    fig, ax = plt.subplots(2, 4, figsize=(15, 6.5), sharey=True)
    for r in rasters:
        row = 0 if r["kind"] == "pre-test" else 1
        a = ax[row, PATTERNS.index(tuple(r["pattern"]))]
        end = max((t for t, _ in r["spikes"]), default=window)
        start = max(0.0, end - window)
        per = r["per_ensemble"]
        for e in range(len(ENSEMBLES)):
            spikes = [[t, k - e * per] for t, k in r["spikes"]
                      if t >= start and e * per <= k < (e + 1) * per]  # fmt: skip
            raster.draw(a, spikes, offset=e * per, color=f"C{e}")
        a.set(title=f"{r['kind']} {tuple(r['pattern'])}", xlabel="time in presentation (ms)")
        a.set_yticks([(e + 0.5) * per for e in range(len(ENSEMBLES))], ENSEMBLES)
    title = "Spiking XOR rasters (first seed; spikes within 16 ms of another: red)"
    return save(fig, path, title)


def _seed_mean(rates: list) -> list:
    """(R, bins, 2, 5) nested lists -> per bin (2, 5) means over seeds."""
    r = len(rates)
    return [[[sum(rates[s][b][i][k] for s in range(r)) / r for k in range(5)] for i in range(2)]
            for b in range(len(rates[0]))]  # fmt: skip


def plot_multiplexing(results: dict[str, Any], path: Path) -> Path:
    """NN Fig. 3 at the first time step: event rate and burst probability of both
    populations with their references, and the rasters."""
    dt = next(iter(results))
    first = results[dt]
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
    return save(fig, path, f"Multiplexing (Payeur et al. 2021, Fig. 3), dt {dt} ms")


def plot_plasticity(res: dict[str, Any], path: Path) -> Path:
    """NN Fig. 2b-d: weight change against pairing frequency, postsynaptic rate and burst
    probability."""
    b, c, d = res["b"], res["c"], res["d"]
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
    return save(fig, path, "Burst-dependent plasticity (Payeur et al. 2021, Fig. 2b-d)")
