"""Sweeps: one config that expands into a grid of runs, trained as replicas, tabulated.

A sweep file (apical/experiments/*.toml with `kind = "sweep"`) declares
- `[base]`: the TrainConfig every run shares;
- `[axes]`: the grid, in order, each a list of values. Known axes: `dataset`, `depth`
  (`model_options.hidden` = depth x `width`), `gain` (`model_options.init_gain`),
  `variant` (a table of `[variants.NAME]` config overrides: rule, rule options, optimizer,
  learning rates); any other name is a dotted TrainConfig key (`model_options.x`);
- `seeds` and `lr_scales`: every grid point trains len(seeds) x len(lr_scales) replicas of
  its network side by side (apical.replicas), seed-major;
- `threshold`: the validation error (%) whose first crossing gives `epochs_to_threshold`;
- `[presets.NAME]`: overrides of base keys and of `seeds`, `lr_scales`, `axes` for a
  shorter protocol (`apical reproduce NAME --preset cpu`).

Per grid point the learning-rate scale with the lowest mean final validation error over
the seeds is chosen (never the test set); `results.csv` holds one row per run (grid
coordinates, seed, lr, whether chosen, errors, epochs to threshold), `layers.csv` one row
per run and hidden layer (mean |apical potential| where the rule has one, angle of the
update to backprop's gradient, from the last probe).
"""

from __future__ import annotations

import copy
import csv
import math
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from apical.errors import ApicalError, DivergedError
from apical.train import DATA_FIELDS, Run, TrainConfig, load_config_data, train

RESULT_COLUMNS = [
    "point", "seed", "lr_scale", "lr", "output_lr", "chosen", "epochs", "test_error",
    "val_error", "best_val_error", "epochs_to_threshold", "diverged", "seconds",
]  # fmt: skip
SUMMARY_COLUMNS = [
    "point",
    "lr",
    "seeds",
    "test_error",
    "test_error_sd",
    "epochs_to_threshold",
    "apical",
    "angle",
]
LAYER_COLUMNS = ["point", "seed", "lr_scale", "chosen", "layer", "apical", "angle"]


@dataclass(frozen=True)
class Sweep:
    name: str
    title: str
    claim: str
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    seeds: list[int]
    lr_scales: list[float] = field(default_factory=lambda: [1.0])
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    width: int = 500
    threshold: float = 10.0
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def preset(self, name: str | None) -> Sweep:
        """This sweep with preset `name` applied (None: as declared)."""
        if name is None:
            return self
        if name not in self.presets:
            known = ", ".join(self.presets) or "none"
            raise ApicalError(f"sweep {self.name} has no preset {name!r}; presets: {known}")
        p = copy.deepcopy(self.presets[name])
        axes = {**self.axes, **p.pop("axes", {})}
        seeds, scales = p.pop("seeds", self.seeds), p.pop("lr_scales", self.lr_scales)
        width, threshold = p.pop("width", self.width), p.pop("threshold", self.threshold)
        return Sweep(self.name, self.title, self.claim, {**self.base, **p}, axes, seeds,
                     scales, self.variants, width, threshold, {})  # fmt: skip


@dataclass(frozen=True)
class Point:
    """One grid point: its coordinates and the config of its replicas."""

    coords: dict[str, Any]
    config: TrainConfig

    @property
    def label(self) -> str:
        parts = (f"{k}{v}" if k in ("depth", "gain") else str(v) for k, v in self.coords.items())
        return "-".join(parts)


def parse_sweep(d: dict[str, Any], origin: str) -> Sweep:
    try:
        sweep = Sweep(
            name=d["name"], title=d["title"], claim=d["claim"], base=d.get("base", {}),
            axes=d["axes"], seeds=d["seeds"], lr_scales=d.get("lr_scales", [1.0]),
            variants=d.get("variants", {}), width=d.get("width", 500),
            threshold=d.get("threshold", 10.0), presets=d.get("presets", {}),
        )  # fmt: skip
    except KeyError as e:
        raise ApicalError(f"sweep file {origin} lacks key {e}") from None
    for name in [None, *sweep.presets]:
        expand(sweep.preset(name))  # validates every config now, not after hours
    return sweep


def _apply(config: dict[str, Any], axis: str, value: Any, sweep: Sweep) -> None:
    options = config.setdefault("model_options", {})
    if axis == "depth":
        options["hidden"] = [sweep.width] * int(value)
    elif axis == "gain":
        options["init_gain"] = float(value)
    elif axis == "variant":
        if value not in sweep.variants:
            raise ApicalError(f"sweep {sweep.name}: variant {value!r} has no [variants] table")
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
        raise ApicalError(f"sweep {sweep.name}: every axis needs a non-empty list of values")
    seeds = [s for s in sweep.seeds for _ in sweep.lr_scales]
    scales = [c for _ in sweep.seeds for c in sweep.lr_scales]
    points = []
    for values in product(*sweep.axes.values()):
        coords = dict(zip(sweep.axes, values, strict=True))
        config = copy.deepcopy(sweep.base)
        for axis, value in coords.items():
            _apply(config, axis, value, sweep)
        config.update(seeds=seeds, lr_scales=scales)
        cfg = TrainConfig.from_dict(config)
        cfg.check()
        points.append(Point(coords, cfg))
    return points


def _epochs_to(history: list[dict[str, Any]], threshold: float) -> float:
    for row in history:
        if 100 * (1 - row["val_accuracy"]) <= threshold:
            return row["epoch"]
    return math.nan


def point_rows(point: Point, run: Run, threshold: float) -> tuple[list[dict], list[dict]]:
    """(results rows, layer rows) of one trained grid point, the chosen lr marked."""
    cfg = point.config
    last_epoch = run.history[-1]["epoch"]
    by_replica: dict[int, list[dict[str, Any]]] = {}
    for row in run.history:
        by_replica.setdefault(row["replica"], []).append(row)
    results = []
    for _, hist in sorted(by_replica.items()):
        final = hist[-1]
        diverged = "diverged_step" in final
        err = math.nan if diverged else 100 * (1 - final["test_accuracy"])
        results.append({
            **point.coords, "point": point.label, "seed": final["seed"],
            "lr_scale": final["lr_scale"], "lr": cfg.lr * final["lr_scale"],
            "output_lr": (cfg.output_lr or cfg.lr) * final["lr_scale"], "epochs": last_epoch,
            "test_error": err,
            "val_error": math.nan if diverged else 100 * (1 - final["val_accuracy"]),
            "best_val_error": min(100 * (1 - h["val_accuracy"]) for h in hist),
            "epochs_to_threshold": math.nan if diverged else _epochs_to(hist, threshold),
            "diverged": diverged, "seconds": final["seconds"],
        })  # fmt: skip
    chosen = _choose(results)
    for row in results:
        row["chosen"] = row["lr_scale"] == chosen
    probes = {p["replica"]: p for p in run.probes}  # the last probe of each replica
    layers = []
    for r, row in enumerate(results):
        hidden = list(probes[r]["layers"].items())[:-1]  # the last layer is the read-out
        for i, (_, values) in enumerate(hidden, start=1):
            layers.append({
                **point.coords, "point": point.label, "seed": row["seed"],
                "lr_scale": row["lr_scale"], "chosen": row["chosen"], "layer": i,
                "apical": values.get("apical", math.nan), "angle": values["angle"],
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


def run_sweep(
    sweep: Sweep,
    out_dir: Path,
    *,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    progress: bool = False,
    echo=print,
) -> tuple[list[dict], list[dict]]:
    """Train every grid point (resuming finished or interrupted points with `resume`),
    write results.csv and layers.csv to `out_dir`, return their rows."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    points = expand(sweep)
    cache: dict[tuple, Any] = {}
    results, layers = [], []
    for i, point in enumerate(points, start=1):
        run_dir = out_dir / point.label
        cfg = TrainConfig.from_dict({**point.config.to_dict(), **given, "run_dir": str(run_dir)})
        key = tuple(getattr(cfg, f) for f in DATA_FIELDS)
        if key not in cache:
            cache.clear()  # one dataset in memory at a time
            cache[key] = load_config_data(cfg)
        can_resume = resume and (run_dir / "checkpoint.pt").is_file()
        echo(f"[{i}/{len(points)}] {point.label}" + (" (resuming)" if can_resume else ""))
        try:
            run = train(cfg, resume=can_resume, progress=progress, data=cache[key])
        except DivergedError as e:
            echo(f"[{point.label}] every replica diverged: {e}")
            run = _diverged_run(cfg)
        res, lay = point_rows(Point(point.coords, cfg), run, sweep.threshold)
        results += res
        layers += lay
        write_csv(out_dir / "results.csv", results, list(sweep.axes) + RESULT_COLUMNS)
        write_csv(out_dir / "layers.csv", layers, list(sweep.axes) + LAYER_COLUMNS)
    write_csv(out_dir / "summary.csv", summarize(results, layers, list(sweep.axes)),
              list(sweep.axes) + SUMMARY_COLUMNS)  # fmt: skip
    return results, layers


def _diverged_run(cfg: TrainConfig) -> Run:
    """A stand-in Run whose replicas all diverged (NaN errors in the tables)."""
    rows = [
        {"epoch": 0, "replica": r, "seed": s, "lr_scale": c, "val_accuracy": math.nan,
         "test_accuracy": math.nan, "seconds": math.nan, "diverged_step": 0}
        for r, (s, c) in enumerate(zip(cfg.seeds, cfg.lr_scales, strict=True))
    ]  # fmt: skip
    return Run(cfg, None, rows, [{"replica": r["replica"], "layers": {}} for r in rows])


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Write `rows` atomically (a temporary file renamed over the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in columns})
    tmp.replace(path)


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else round(v, 6)
    return v


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
    return sum(values) / len(values) if values else math.nan


def _sd(values: list[float]) -> float:
    if len(values) < 2:
        return math.nan
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
