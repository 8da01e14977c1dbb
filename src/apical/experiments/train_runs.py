"""Experiments of kind "train": runs of the one trainer side by side, judged against the
paper (fa-mnist.toml shows the format).

    [base]          TrainConfig fields every run shares
    [[runs]]        one table per run: `label`, any TrainConfig fields (its tables, such as
                    model_options, merge into [base]'s key by key), what the paper
                    `published`, and the checks, all optional:
                      max_error   test error (%) at most this (published number + tolerance)
                      reference, within   test error at most the reference run's + within
                      max_angle   final mean hidden-layer angle to backprop at most this
                      metric      the error the first two use: test_error, test_top5_error
                    `same_as = "EXPERIMENT/LABEL"` (and no config) makes the run that run of
                    another experiment, trained once, in that experiment's folder.

Every run trains into OUT/NAME/LABEL. The report covers every run of the experiment from
its folder, whichever were trained now.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from apical.config import NON_NEGATIVE, from_dict
from apical.errors import ApicalError, ConfigError
from apical.experiments.report import RunReport, judge
from apical.plots import plot_runs
from apical.run_folder import RunFolder
from apical.train import Run, TrainConfig

_CHECKS = ("label", "published", "reference", "within", "max_error", "max_angle", "metric",
           "same_as")  # fmt: skip


@dataclass(frozen=True)
class TrainRun:
    label: str
    config: dict[str, Any] = field(default_factory=dict)  # [base] and the run's own fields
    published: str = ""
    reference: str | None = None
    within: Annotated[float, NON_NEGATIVE] | None = None
    max_error: float | None = None
    max_angle: float | None = None
    metric: Literal["test_error", "test_top5_error"] = "test_error"
    same_as: str | None = None  # "EXPERIMENT/LABEL"

    def expected(self) -> str:
        parts = []
        if self.max_error is not None:
            parts.append(f"err <= {self.max_error:g}%")
        if self.within is not None:
            parts.append(f"err <= {self.reference} + {self.within:g}")
        if self.max_angle is not None:
            parts.append(f"angle <= {self.max_angle:g}")
        return ", ".join(parts)


@dataclass(frozen=True)
class TrainSpec:
    base: dict[str, Any]
    runs: tuple[TrainRun, ...]

    def labels(self) -> list[str]:
        return [r.label for r in self.runs]


@dataclass(frozen=True)
class _Body:
    runs: list[dict[str, Any]]
    base: dict[str, Any] = field(default_factory=dict)


class TrainRuns:
    """The runner of kind "train"."""

    picks_runs = True

    def parse(self, body: dict[str, Any], origin: str) -> TrainSpec:
        """The spec of a file's [base] and [[runs]] (ConfigError; the protocol names the
        file)."""
        from apical.experiments import merged

        raw = from_dict(_Body, body, "experiment")
        runs = []
        for table in raw.runs:
            if not isinstance(table, dict) or "label" not in table:
                raise ConfigError("every [[runs]] table needs a label")
            checks = {k: v for k, v in table.items() if k in _CHECKS}
            own = {k: v for k, v in table.items() if k not in _CHECKS}
            where = f"run {table['label']!r}:"
            if "same_as" in table and own:
                raise ConfigError(
                    f"{where} it is the same as {table['same_as']} and takes its config from "
                    f"there; drop {', '.join(sorted(own))}"
                )
            config = {} if "same_as" in table else merged(raw.base, own)
            if config:
                _validated(config, where)
            try:
                runs.append(from_dict(TrainRun, {**checks, "config": config}))
            except ConfigError as e:
                raise ConfigError(f"{where} {e}") from None
        labels = [r.label for r in runs]
        for r in runs:
            if labels.count(r.label) > 1:
                raise ConfigError(f"two runs are labelled {r.label!r}")
            if r.reference is not None and r.reference not in labels:
                raise ConfigError(
                    f"run {r.label!r}: its reference {r.reference!r} is not a run of the "
                    f"experiment ({', '.join(labels)})"
                )
            if (r.within is None) != (r.reference is None):
                raise ConfigError(f"run {r.label!r}: reference and within go together")
        return TrainSpec(raw.base, tuple(runs))

    def configs(self, exp, folder: Path, overrides: dict[str, Any]) -> dict[str, TrainConfig]:
        """One TrainConfig per run, writing to folder/LABEL (or to the shared run's folder)."""
        out = {}
        for r in exp.spec.runs:
            config, run_dir = r.config, folder / r.label
            if r.same_as is not None:
                config, run_dir = _shared(r.same_as, exp.name), folder.parent / r.same_as
            out[r.label] = _validated(
                {**config, **overrides, "run_dir": str(run_dir)}, f"run {r.label!r}:"
            )
        return out

    @staticmethod
    def _check_picked(exp, picked: tuple[str, ...]) -> None:
        unknown = [label for label in picked if label not in exp.spec.labels()]
        if unknown:
            raise ApicalError(
                f"experiment {exp.name} has no run {', '.join(map(repr, unknown))}; its runs: "
                f"{', '.join(exp.spec.labels())}"
            )

    def run(self, exp, folder: Path, options) -> Any:
        spec: TrainSpec = exp.spec
        self._check_picked(exp, options.runs)
        configs = self.configs(exp, folder, options.overrides)
        picked = [label for label in spec.labels() if not options.runs or label in options.runs]
        for r in spec.runs:
            if r.same_as and r.label in picked:
                options.echo(f"[{r.label}] is the run {r.same_as}, in {configs[r.label].run_dir}")
        trained = options.train({k: configs[k] for k in picked}, folder)
        return self.report(exp, folder, configs, trained, options.overrides)

    def report(self, exp, folder: Path, configs: dict[str, TrainConfig],
               trained: dict[str, Run], overrides: dict[str, Any]):  # fmt: skip
        """The report of every run, from its folder (`trained`: the runs trained now)."""
        declared = {k: c.epochs for k, c in self.configs(exp, folder, {}).items()}
        spec: TrainSpec = exp.spec
        rows = {label: RunFolder(cfg.run_dir).rows() for label, cfg in configs.items()}
        final = {}
        for label, cfg in configs.items():
            if label in trained and trained[label].diverged:
                continue
            last = [r for r in rows[label] if r.get("epoch") == cfg.epochs]
            if last:
                final[label] = _measured(last[-(cfg.replicas or 1) :])
        shortened = any(cfg.epochs != declared[label] for label, cfg in configs.items())
        reports = []
        for r in spec.runs:
            cfg = configs[r.label]
            status = _status(r.label, cfg, rows[r.label], trained)
            values = final.get(r.label, {})
            if status is not None:
                verdict = status
            elif shortened and cfg.epochs != declared[r.label]:
                verdict = (
                    f"not checked: shortened to {cfg.epochs} epochs (declared {declared[r.label]})"
                )
            else:
                verdict = self._verdict(r, values, final, configs, rows, trained)
            shown = {k: v for k, v in values.items()
                     if k != "test_top5_error" or r.metric == k}  # fmt: skip
            reports.append(RunReport(r.label, shown, r.published, r.expected(), verdict))
        runs_with_rows = {label: (rows[label], RunFolder(configs[label].run_dir).rows("probes"))
                          for label in configs if rows[label]}  # fmt: skip
        files = {}
        if runs_with_rows:
            files["curves.png"] = plot_runs(runs_with_rows, folder / "curves.png", exp.title)
        for label, (_, probes) in runs_with_rows.items():  # the rows the figure is drawn from
            run = RunFolder(configs[label].run_dir)
            files[f"{label}/metrics.jsonl"] = run.rows_file()
            if probes:
                files[f"{label}/probes.jsonl"] = run.rows_file("probes")
        notes = []
        if shortened:
            notes.append(f"shortened to {overrides['epochs']} epochs: not the published protocol")
        return exp.report(folder, reports, notes=notes, files=files)

    @staticmethod
    def _verdict(r: TrainRun, values, final, configs, rows, trained) -> str:
        err = values.get(r.metric)
        checks, missing = [], []
        if err is None:
            missing.append(f"no {r.metric} was measured")
        if r.max_error is not None:
            checks.append((f"err <= {r.max_error:g}", err, r.max_error))
        if r.within is not None:
            ref = final.get(r.reference, {}).get(r.metric)
            if ref is not None:
                checks.append(("within", err, ref + r.within))
            else:
                why = _status(r.reference, configs[r.reference], rows[r.reference], trained)
                missing.append(f"reference {r.reference} {why or 'has no result'}")
        if r.max_angle is not None:
            if values.get("angle") is None:
                missing.append("no angle was probed")
            else:
                checks.append(("angle", values["angle"], r.max_angle))
        return judge(checks, missing)


def _measured(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's values from the final metrics rows, one per replica: their means (None
    where a row has none), and for replicas the test error's s.d. over them and their
    number. The checks judge the mean."""

    def mean(key: str, error: bool = False) -> float | None:
        vs = [r.get(key) for r in rows]
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in vs):
            return None
        return sum(100 * (1 - v) if error else v for v in vs) / len(vs)

    m = mean("test_accuracy", True)
    values: dict[str, Any] = {"test_error": m}
    if len(rows) > 1:  # the spread over replicas beside their mean
        sd = None if m is None else statistics.stdev(100 * (1 - r["test_accuracy"]) for r in rows)
        values |= {"test_error_sd": sd, "seeds": len(rows)}
    return values | {"test_top5_error": mean("test_top5_accuracy", True),
                     "val_error": mean("val_accuracy", True), "angle": mean("mean_hidden_angle"),
                     "seconds": rows[-1].get("seconds")}  # fmt: skip


def _status(label: str, cfg: TrainConfig, rows: list[dict], trained: dict[str, Run]) -> str | None:
    """Why a run has no result (None when it finished)."""
    if label in trained and trained[label].diverged:
        return "diverged"
    done = rows[-1].get("epoch", 0) if rows else 0
    if not rows:
        return "not run"
    return None if done >= cfg.epochs else f"epoch {done} of {cfg.epochs}"


def _shared(same_as: str, name: str) -> dict[str, Any]:
    """The config of the run `same_as` = "EXPERIMENT/LABEL" names."""
    from apical.experiments import load

    other, _, label = same_as.partition("/")
    target = None
    if other != name:
        try:
            exp = load(other)
        except ApicalError:
            exp = None
        if exp is not None and exp.kind == "train":
            target = next((r for r in exp.spec.runs if r.label == label), None)
    if target is None or target.same_as is not None:
        raise ApicalError(
            f"experiment {name}: a run is the same as {same_as!r}, which is not a trained run; "
            "name one as EXPERIMENT/LABEL"
        )
    return target.config


def _validated(config: dict[str, Any], where: str) -> TrainConfig:
    try:
        return TrainConfig.from_dict(config)
    except ConfigError as e:
        raise ConfigError(f"{where} {e}") from None


RUNNER = TrainRuns()
