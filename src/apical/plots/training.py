"""Figures of training runs: learning curves, angles to backprop, the rules' own
diagnostics; sweeps; the segregated-dendrite traces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from apical.errors import ApicalError
from apical.plots.base import plt, save
from apical.run_folder import RunFolder


def plot_runs(
    runs: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]],
    path: Path,
    title: str = "",
) -> Path:
    """Test error (%) per epoch; mean hidden-layer angle to backprop (degrees) per step; and,
    where a rule reports them, the mean absolute apical potential per hidden layer
    (burstprop) or Theorem 1's eigenvalue and the hidden/output loss correlation
    (segregated dendrites). `runs` maps a label to (history rows, probe rows); a run of
    replicas (rows tagged "replica") draws one line per replica, in the run's colour."""

    def having(key: str) -> dict[str, list[dict[str, Any]]]:
        return {
            label: probes
            for label, (_, probes) in runs.items()
            if probes and any(key in row for row in probes[-1]["layers"].values())
        }

    # probes against training images where every row has them (steps x batch size), so
    # that runs with different batch sizes line up; else against steps
    rows = [p for _, probes in runs.values() for p in probes]
    x_key = "images" if all("images" in p for p in rows) else "step"
    apical_runs, theorem_runs = having("apical"), having("eigenvalue")
    extra = bool(apical_runs or theorem_runs)
    fig, axes = plt.subplots(1, 3 if extra else 2, figsize=(15 if extra else 10, 4))
    ax_err, ax_ang = axes[0], axes[1]
    for i, (label, (history, probes)) in enumerate(runs.items()):
        for named, rows in _replicas(label, history):
            errors = [100 * (1 - _num(h.get("test_accuracy"))) for h in rows]
            ax_err.plot([h["epoch"] for h in rows], errors, marker="o", ms=3, label=named,
                        color=f"C{i % 10}")  # fmt: skip
        for named, rows in _replicas(label, probes) if probes else []:  # none: no entry
            angles = [_num(p.get("mean_hidden_angle")) for p in rows]
            ax_ang.plot([p[x_key] for p in rows], angles, label=named, color=f"C{i % 10}")
    ax_err.set(xlabel="epoch", ylabel="test error (%)", title="learning curves")
    x_label = "training images" if x_key == "images" else "training step"
    ax_ang.set(
        xlabel=x_label, ylabel="angle to backprop (deg)", ylim=(0, 100),
        title="hidden-layer update vs backprop",
    )  # fmt: skip
    ax_ang.axhline(90, color="grey", lw=0.5, ls="--")
    colours = {label: f"C{i % 10}" for i, label in enumerate(runs)}
    if apical_runs:
        _layer_curves(axes[2], apical_runs, "apical", "", x_key, colours, labelled=False)
        _layer_key(axes[2], apical_runs, "apical", colours)
        axes[2].set(xlabel=x_label, ylabel="mean |apical potential|", yscale="log",
                    title="apical potential (Z at work)")  # fmt: skip
    elif theorem_runs:  # segregated dendrites (eLife Fig. 5 and its suppl. 1)
        _layer_curves(axes[2], theorem_runs, "eigenvalue", " eigenvalue", x_key, colours, ls="-")
        _layer_curves(axes[2], theorem_runs, "loss_correlation", " loss corr.", x_key, colours,
                      ls=":")  # fmt: skip
        axes[2].axhline(1, color="grey", lw=0.5, ls="--")
        axes[2].set(xlabel=x_label, ylabel="value",
                    title="Theorem 1 eigenvalue (< 1 wanted),\ncorr(L_hidden, L_out)")  # fmt: skip
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[1:]:  # counts of images: few ticks, in scientific notation past 10^4
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    return save(fig, path, title)


# one line style per layer (the run's colour is the run's in every panel)
LAYER_STYLES = [dict(ls=ls, marker=m, ms=3, markevery=0.1) for m in (None, "o", "s")
                for ls in ("-", "--", ":", "-.")]  # fmt: skip


def _layer_style(j: int) -> dict[str, Any]:
    return LAYER_STYLES[j % len(LAYER_STYLES)]


def _layers(probes: list[dict], key: str) -> list[str]:
    return [n for n, row in probes[-1]["layers"].items() if key in row]


def _layer_curves(ax, runs: dict[str, list[dict]], key: str, suffix: str, x_key: str,
                  colours: dict[str, str], labelled: bool = True, **style) -> None:  # fmt: skip
    """One curve per run and layer (and replica) of a per-layer probe value, against
    `x_key`: in the run's colour, a line style per layer (`style` overrides it); labelled
    "RUN LAYER{suffix}" for the legend, or unlabelled (see `_layer_key`)."""
    for label, probes in runs.items():
        for j, n in enumerate(_layers(probes, key)):
            for named, rows in _replicas(f"{label} {n}{suffix}", probes):
                rows = [p for p in rows if key in p["layers"].get(n, {})]
                ax.plot([p[x_key] for p in rows], [_num(p["layers"][n][key]) for p in rows],
                        label=named if labelled else None, color=colours[label],
                        **(_layer_style(j) | style))  # fmt: skip


def _layer_key(ax, runs: dict[str, list[dict]], key: str, colours: dict[str, str]) -> None:
    """The legend of unlabelled per-layer curves as two keys, a colour per run and a line
    style per layer (a run x layer legend does not fit beside eight runs of four layers)."""
    names: dict[int, list[str]] = {}
    for probes in runs.values():
        for j, n in enumerate(_layers(probes, key)):
            if n not in names.setdefault(j, []):
                names[j].append(n)
    handles = [Line2D([], [], color=colours[label], label=label) for label in runs]
    handles += [
        Line2D([], [], color="grey", label="layer " + " / ".join(ns), **_layer_style(j))
        for j, ns in names.items()
    ]
    ax.legend(handles=handles, fontsize=7, ncol=2 if len(handles) > 6 else 1)


def _replicas(label: str, rows: list[dict[str, Any]]) -> list[tuple[str | None, list[dict]]]:
    """The rows of each replica (all rows when untagged), the first labelled for the legend
    ("LABEL (R seeds)"), the others unlabelled."""
    groups: dict[Any, list[dict]] = {}
    for row in rows:
        groups.setdefault(row.get("replica"), []).append(row)
    if len(groups) <= 1:
        return [(label, rows)]
    named = f"{label} ({len(groups)} seeds)"
    return [(named if i == 0 else None, g) for i, g in enumerate(groups.values())]


def load_runs(path: Path) -> tuple[dict[str, tuple[list[dict], list[dict]]], list[str]]:
    """Metrics and probe rows of a training run folder, or of every one inside an
    experiment's folder, by label; and a line for each folder left out because its rows
    are unreadable or it is not a training run (ApicalError when none is left)."""
    folder = RunFolder(path)
    candidates = (
        [path]
        if folder.has_rows()
        else (sorted(p for p in path.iterdir() if RunFolder(p).has_rows()) if path.is_dir() else [])
    )
    out, skipped = {}, []
    for f in candidates:
        try:
            run = RunFolder(f)
            history, probes, config = run.rows(), run.rows("probes"), run.config() or {}
        except ApicalError as e:
            skipped.append(str(e))
            continue
        if not all("epoch" in r and "test_accuracy" in r for r in history):
            skipped.append(f"{f} is not a training run (its rows have no epochs and test accuracy)")
            continue
        label = f"{f.name} ({config['rule']})" if "rule" in config else f.name
        for p in probes:  # runs from before probes recorded images
            p.setdefault("images", p["step"] * config.get("batch_size", 1))
        out[label] = (history, probes)
    if not out:
        why = f" ({'; '.join(skipped)})" if skipped else ""
        raise ApicalError(
            f"no training run in {path}: expected a run folder with metrics.jsonl, or a folder "
            f"of them{why}"
        )
    return out, skipped


def plot_sweep(
    summary: list[dict[str, Any]], layers: list[dict[str, Any]], out_dir: Path, title: str = ""
) -> list[Path]:
    """A sweep's figures: test error (mean and sd over seeds, chosen lr) against the sweep's
    numeric axis (depth or gain), one panel per dataset, one line per variant
    (`error.png`); and per layer the mean |apical potential| and the angle to backprop
    (`layers.png`, one column per value of the numeric axis, first dataset). A sweep
    without a depth or gain axis has no figures; one without a dataset or variant axis
    has one panel or line."""
    x_axis = next((a for a in ("depth", "gain") if a in summary[0]), None)
    if x_axis is None:
        return []
    summary = [{"dataset": "", "variant": "", **r} for r in summary]
    layers = [{"dataset": "", "variant": "", **r} for r in layers]
    datasets = list(dict.fromkeys(r["dataset"] for r in summary))
    variants = list(dict.fromkeys(r["variant"] for r in summary))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for variant in variants:
            rows = [r for r in summary if r["dataset"] == dataset and r["variant"] == variant]
            ax.errorbar([r[x_axis] for r in rows], [r["test_error"] for r in rows],
                        yerr=[r["test_error_sd"] for r in rows], marker="o", ms=3, capsize=2,
                        label=variant)  # fmt: skip
        ax.set(xlabel=x_axis, ylabel="test error (%)", title=dataset, yscale="log")
        if x_axis == "gain":
            ax.set_xscale("log")
        ax.legend(fontsize=8)
    paths = [save(fig, out_dir / "error.png", title, fontsize=9)]

    xs = list(dict.fromkeys(r[x_axis] for r in summary))
    fig, axes = plt.subplots(2, len(xs), figsize=(2.6 * len(xs), 5.5), squeeze=False)
    for col, x in enumerate(xs):
        for variant in variants:
            rows = [r for r in layers if r["dataset"] == datasets[0] and r[x_axis] == x
                    and r["variant"] == variant and r["chosen"]]  # fmt: skip
            depth = sorted({r["layer"] for r in rows})
            for row, key in enumerate(("apical", "angle")):
                means = [_mean_of(rows, "layer", layer, key) for layer in depth]
                axes[row][col].plot(depth, means, marker="o", ms=3, label=variant)
        axes[0][col].set(title=f"{x_axis} {x}", yscale="log")
        axes[1][col].set(xlabel="hidden layer", ylim=(0, 180))
    axes[0][0].set_ylabel("mean |apical potential|")
    axes[1][0].set_ylabel("angle to backprop (deg)")
    axes[1][0].legend(fontsize=7)
    paths.append(save(fig, out_dir / "layers.png", f"{title} ({datasets[0]})", fontsize=9))
    return paths


def _num(v: Any) -> float:
    """A row's value as a float for plotting (missing values, JSON null, as NaN)."""
    return float("nan") if v is None else float(v)


def _mean_of(rows: list[dict[str, Any]], key: str, value: Any, field: str) -> float:
    vals = [float(r[field]) for r in rows if r[key] == value]
    return sum(vals) / len(vals) if vals else float("nan")


def plot_dendrite_traces(trace: dict[str, Any], label: int, path: Path, title: str = "") -> Path:
    """eLife Fig. 4 for one image: a hidden neuron's basal, somatic and apical voltages and
    its plateaus through the forward and target phases, and the output somata (the correct
    class driven up by the teaching current, the others down)."""
    forward, total = int(trace["forward"]), int(trace["forward"] + trace["target"])
    t = range(total)
    fig, (ax_h, ax_o) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name, color in (("basal", "tab:blue"), ("soma", "black"), ("apical", "tab:red")):
        ax_h.plot(t, trace[name][:, 0].tolist(), color=color, lw=1, label=f"{name} voltage")
    bounds = [int(v) for v in trace["windows"].flatten()]  # averaging windows of both phases
    for phase, key in enumerate(("plateau_f", "plateau_t")):
        start, end = bounds[2 * phase], bounds[2 * phase + 1]
        ax_h.axvspan(start, end, color="tab:red", alpha=0.08)
        ax_h.annotate(f"plateau {float(trace[key][0]):.3f}", (start, ax_h.get_ylim()[1]),
                      fontsize=8, va="top", color="tab:red")  # fmt: skip
    output = trace["output"]
    for k in range(output.shape[1]):
        correct = k == label
        name = "correct class" if correct else ("other classes" if k == int(label == 0) else None)
        ax_o.plot(t, output[:, k].tolist(), lw=1.5 if correct else 0.7,
                  color="tab:green" if correct else "grey", label=name)  # fmt: skip
    for ax in (ax_h, ax_o):
        ax.axvline(forward, color="k", ls="--", lw=0.8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    ax_h.set(ylabel="hidden neuron (V)", title="forward phase | target phase (teaching current on)")
    ax_o.set(xlabel="time (ms)", ylabel="output somata (V)")
    return save(fig, path, title)
