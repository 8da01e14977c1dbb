"""Experiments of kind "sweep": one config expanded into a grid of runs, each point trained
as replicas (its seeds x learning-rate scales side by side), tabulated.

    [base]      the TrainConfig every point shares
    [axes]      the grid, in order, each a list of values. Known axes: `dataset`, `depth`
                (`model_options.hidden` = depth x `width`), `gain` (`model_options.init_gain`),
                `variant` (a table of `[variants.NAME]` config overrides: rule, rule
                options, optimizer, learning rates); any other name is a dotted TrainConfig
                key (`model_options.x`)
    seeds, lr_scales   every point trains len(seeds) x len(lr_scales) replicas, seed-major
    threshold   the validation error (%) whose first crossing gives `epochs_to_threshold`
    width       the hidden width of the `depth` axis

Per point the learning-rate scale with the lowest mean final validation error over the
seeds is chosen (never the test set). The experiment folder gets `results.csv` (a row per
run: coordinates, seed, lr, chosen, errors, epochs to threshold), `layers.csv` (a row per
run and hidden layer: mean |apical potential| where the rule has one, angle to backprop's
gradient and per-example angle of its error signal to backprop's, from the last probe),
`summary.csv` (a row per point, chosen lr: mean and s.d. over seeds) and the figures
error.png and layers.png. Each point trains in its own run
folder, OUT/NAME/POINT.
"""

from __future__ import annotations

import copy
import math
import statistics
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Annotated, Any

from apical.config import AT_LEAST_ONE, POSITIVE, from_dict
from apical.errors import ConfigError
from apical.experiments.report import RunReport
from apical.plots import plot_sweep
from apical.run_folder import write_csv
from apical.train import Run, TrainConfig
from apical.train_config import Seed

RESULT_COLUMNS = [
    "point", "seed", "lr_scale", "lr", "output_lr", "chosen", "epochs", "test_error",
    "val_error", "best_val_error", "epochs_to_threshold", "diverged", "seconds",
]  # fmt: skip
SUMMARY_COLUMNS = ["point", "lr", "seeds", "test_error", "test_error_sd", "epochs_to_threshold",
                   "apical", "angle"]  # fmt: skip
LAYER_COLUMNS = ["point", "seed", "lr_scale", "chosen", "layer", "apical", "angle",
                 "delta_angle"]  # fmt: skip


@dataclass(frozen=True)
class Sweep:
    axes: dict[str, list[Any]]
    seeds: list[Seed]
    base: dict[str, Any] = field(default_factory=dict)
    lr_scales: list[Annotated[float, POSITIVE]] = field(default_factory=lambda: [1.0])
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    width: Annotated[int, AT_LEAST_ONE] = 500
    threshold: float = 10.0


@dataclass(frozen=True)
class Point:
    """One grid point: its coordinates and the config of its replicas."""

    coords: dict[str, Any]
    config: TrainConfig

    @property
    def label(self) -> str:
        parts = (f"{k}{v}" if k in ("depth", "gain") else str(v) for k, v in self.coords.items())
        return "-".join(parts)


class SweepRunner:
    """The runner of kind "sweep"."""

    picks_runs = False

    def parse(self, body: dict[str, Any], origin: str) -> Sweep:
        sweep = from_dict(Sweep, body, "sweep")
        expand(sweep)  # every point's config validated now, not after hours
        return sweep

    def run(self, exp, folder: Path, options) -> Any:
        points = expand(exp.spec)
        configs = {
            p.label: TrainConfig.from_dict(
                {**p.config.to_dict(), **options.overrides, "run_dir": str(folder / p.label)}
            )
            for p in points
        }
        runs = options.train(configs, folder)
        results, layers = [], []
        for p in points:
            res, lay = point_rows(Point(p.coords, configs[p.label]), runs[p.label],
                                  exp.spec.threshold)  # fmt: skip
            results += res
            layers += lay
        axes = list(exp.spec.axes)
        summary = summarize(results, layers, axes)
        folder.mkdir(parents=True, exist_ok=True)
        files = {}
        for name, rows, columns in (("results.csv", results, RESULT_COLUMNS),
                                    ("layers.csv", layers, LAYER_COLUMNS),
                                    ("summary.csv", summary, SUMMARY_COLUMNS)):  # fmt: skip
            write_csv(folder / name, rows, axes + columns)
            files[name] = folder / name
        for path in plot_sweep(summary, layers, folder, exp.title):
            files[path.name] = path
        keys = [*axes, "lr", "test_error", "test_error_sd", "epochs_to_threshold", "apical",
                "angle"]  # fmt: skip
        verdict = "not checked: sweep"
        reports = [RunReport(row["point"], {k: row[k] for k in keys}, verdict=verdict)
                   for row in summary]  # fmt: skip
        notes = [f"epochs to threshold: the first epoch with validation error <= "
                 f"{exp.spec.threshold:g} %; a sweep tests its claim across the grid, so no "
                 "point has a verdict of its own"]  # fmt: skip
        return exp.report(folder, reports, notes=notes, files=files)


def _apply(config: dict[str, Any], axis: str, value: Any, sweep: Sweep) -> None:
    options = config.setdefault("model_options", {})
    if axis == "depth":
        options["hidden"] = [sweep.width] * int(value)
    elif axis == "gain":
        options["init_gain"] = float(value)
    elif axis == "variant":
        if value not in sweep.variants:
            raise ConfigError(f"variant {value!r} has no [variants] table")
        config.update(copy.deepcopy(sweep.variants[value]))
    else:
        *parents, last = axis.split(".")
        target = config
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value


def expand(sweep: Sweep) -> list[Point]:
    """Every combination of the axes' values, in declaration order (last axis fastest)."""
    if not sweep.axes or any(not isinstance(v, list) or not v for v in sweep.axes.values()):
        raise ConfigError("every axis needs a non-empty list of values")
    seeds = [s for s in sweep.seeds for _ in sweep.lr_scales]
    scales = [c for _ in sweep.seeds for c in sweep.lr_scales]
    points = []
    for values in product(*sweep.axes.values()):
        coords = dict(zip(sweep.axes, values, strict=True))
        config = copy.deepcopy(sweep.base)
        for axis, value in coords.items():
            _apply(config, axis, value, sweep)
        config.update(seeds=seeds, lr_scales=scales)
        points.append(Point(coords, TrainConfig.from_dict(config)))
    return points


def _epochs_to(history: list[dict[str, Any]], threshold: float) -> float:
    for row in history:
        val = row.get("val_accuracy")
        if val is not None and 100 * (1 - val) <= threshold:
            return row["epoch"]
    return math.nan


def point_rows(point: Point, run: Run, threshold: float) -> tuple[list[dict], list[dict]]:
    """(results rows, layer rows) of one trained grid point, the chosen lr marked. A point
    whose every replica diverged has NaN errors."""
    cfg = point.config
    by_replica: dict[int, list[dict[str, Any]]] = {r: [] for r in range(cfg.replicas)}
    for row in run.history:
        by_replica[row["replica"]].append(row)
    scales = cfg.lr_scales or [1.0] * cfg.replicas
    results = []
    for r, hist in sorted(by_replica.items()):
        final = hist[-1] if hist and not run.diverged else {}
        diverged = bool(run.diverged) or "diverged_step" in final
        err = math.nan if diverged else 100 * (1 - final["test_accuracy"])
        val = final.get("val_accuracy")
        results.append({
            **point.coords, "point": point.label, "seed": cfg.seeds[r], "lr_scale": scales[r],
            "lr": cfg.lr * scales[r], "output_lr": (cfg.output_lr or cfg.lr) * scales[r],
            "epochs": hist[-1]["epoch"] if hist else 0, "test_error": err,
            "val_error": math.nan if diverged or val is None else 100 * (1 - val),
            "best_val_error": min((100 * (1 - h["val_accuracy"]) for h in hist
                                   if h.get("val_accuracy") is not None), default=math.nan),
            "epochs_to_threshold": math.nan if diverged else _epochs_to(hist, threshold),
            "diverged": diverged, "seconds": final.get("seconds", math.nan),
        })  # fmt: skip
    chosen = _choose(results)
    for row in results:
        row["chosen"] = row["lr_scale"] == chosen
    probes = {p["replica"]: p for p in run.probes}  # the last probe of each replica
    layers = []
    for r, row in enumerate(results):
        hidden = list(probes[r]["layers"].items())[:-1] if r in probes else []  # no read-out
        for i, (_, values) in enumerate(hidden, start=1):
            apical = values.get("apical")
            layers.append({
                **point.coords, "point": point.label, "seed": row["seed"],
                "lr_scale": row["lr_scale"], "chosen": row["chosen"], "layer": i,
                "apical": math.nan if apical is None else apical,
                "angle": math.nan if values.get("angle") is None else values["angle"],
                "delta_angle": math.nan if values.get("delta_angle") is None
                else values["delta_angle"],
            })  # fmt: skip
    return results, layers


def _choose(results: list[dict[str, Any]]) -> float:
    """The lr scale with the lowest mean final validation error over seeds (a scale with a
    diverged seed loses)."""
    scores: dict[float, list[float]] = {}
    for row in results:
        scores.setdefault(row["lr_scale"], []).append(row["val_error"])

    def score(scale: float) -> float:
        errs = scores[scale]
        return math.inf if any(math.isnan(e) for e in errs) else sum(errs) / len(errs)

    return min(scores, key=score)


def summarize(results: list[dict], layers: list[dict], axes: list[str]) -> list[dict]:
    """Per grid point, over its seeds at the chosen lr: mean and standard deviation of the
    test error, mean epochs to threshold, and the mean over hidden layers and seeds of
    |apical potential| and angle to backprop."""
    out = []
    for label in dict.fromkeys(r["point"] for r in results):
        rows = [r for r in results if r["point"] == label and r["chosen"]]
        lays = [x for x in layers if x["point"] == label and x["chosen"]]
        errs = [r["test_error"] for r in rows]
        out.append({
            **{a: rows[0][a] for a in axes}, "point": label, "lr": rows[0]["lr"],
            "seeds": len(rows), "test_error": _mean(errs), "test_error_sd": _sd(errs),
            "epochs_to_threshold": _mean([r["epochs_to_threshold"] for r in rows]),
            "apical": _mean([x["apical"] for x in lays]),
            "angle": _mean([x["angle"] for x in lays]),
        })  # fmt: skip
    return out


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) >= 2 else math.nan


RUNNER = SweepRunner()
