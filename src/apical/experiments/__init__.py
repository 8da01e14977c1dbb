"""Paper results as data: one TOML file per experiment (see fa-mnist.toml for the format).

An experiment has a `[base]` TrainConfig shared by its `[[runs]]`; each run names a rule
(plus any config overrides) and what the paper reports. Checks per run, all optional:
`max_error` (test error %, published number + tolerance), `within` (percentage points of
the run named by `reference`), `max_angle` (final mean hidden-layer angle to backprop);
`metric` picks the error the first two use ("test_error", or "test_top5_error").
A run given as `same_as = "EXPERIMENT/LABEL"` (and no config keys) is that run of another
experiment: the same config, trained once in that experiment's run folder.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from apical.errors import ApicalError
from apical.sweeps import Sweep, parse_sweep
from apical.train import TrainConfig

_RUN_KEYS = {"label", "published", "reference", "within", "max_error", "max_angle", "metric"}
_CONFIG_FREE = {*_RUN_KEYS, "same_as"}


@dataclass(frozen=True)
class ExperimentRun:
    label: str
    config: dict[str, Any]
    published: str = ""
    reference: str | None = None
    within: float | None = None
    max_error: float | None = None
    max_angle: float | None = None
    metric: str = "test_error"  # or "test_top5_error" (ImageNet)
    same_as: str | None = None  # "experiment/label": that run, shared


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    source: str
    claim: str
    runs: list[ExperimentRun] = field(default_factory=list)

    def select(self, labels: tuple[str, ...]) -> Experiment:
        """The experiment with only the runs named (all of them when `labels` is empty)."""
        known = [r.label for r in self.runs]
        unknown = [label for label in labels if label not in known]
        if unknown:
            raise ApicalError(
                f"experiment {self.name} has no run {', '.join(map(repr, unknown))}; "
                f"its runs: {', '.join(known)}"
            )
        if not labels:
            return self
        return replace(self, runs=[r for r in self.runs if r.label in labels])

    def configs(self, out_dir: Path, **overrides: Any) -> dict[str, TrainConfig]:
        """One TrainConfig per run, writing to out_dir/<label>; `overrides` (not None) win."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return {
            r.label: TrainConfig.from_dict({**r.config, **given, "run_dir": str(run_dir)})
            for r in self.runs
            for run_dir in [out_dir.parent / r.same_as if r.same_as else out_dir / r.label]
        }


def parse_experiment(text: str, origin: str) -> Experiment:
    try:
        d = tomllib.loads(text)
        base = d.get("base", {})
        runs = []
        for r in d["runs"]:
            checks = {k: r[k] for k in _RUN_KEYS if k in r}
            own = {k: v for k, v in r.items() if k not in _CONFIG_FREE}
            if "same_as" in r:  # its config comes from that run (`experiments`)
                if own:
                    raise ApicalError(
                        f"experiment file {origin}: run {r['label']!r} is the same as "
                        f"{r['same_as']} and takes its config from there; drop "
                        f"{', '.join(sorted(own))}"
                    )
                runs.append(ExperimentRun(config={}, same_as=r["same_as"], **checks))
                continue
            config = {**base, **own}
            TrainConfig.from_dict(config)  # validates the keys now, not after hours
            runs.append(ExperimentRun(config=config, **checks))
        return Experiment(d["name"], d["title"], d["source"], d["claim"], runs)
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as e:
        raise ApicalError(f"experiment file {origin} is malformed: {e}") from None


def _shipped() -> list[tuple[str, str]]:
    return [
        (entry.name, entry.read_text())
        for entry in sorted(resources.files(__package__).iterdir(), key=lambda p: p.name)
        if entry.name.endswith(".toml")
    ]


def _kind(text: str) -> str:
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    return first.split("=", 1)[1].strip().strip('"') if first.startswith("kind") else "train"


def _is_sweep(text: str) -> bool:
    return _kind(text) == "sweep"


@dataclass(frozen=True)
class SpikingExperiment:
    """A spiking-simulation reproduction (`kind = "spiking"`): a protocol of
    apical.spiking.reproduce, its config options and named shorter presets."""

    name: str
    title: str
    source: str
    claim: str
    protocol: str
    published: str
    options: dict[str, Any] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def preset_options(self, preset: str | None) -> dict[str, Any]:
        if preset is None:
            return dict(self.options)
        if preset not in self.presets:
            known = ", ".join(self.presets) or "none"
            raise ApicalError(f"{self.name} has no preset {preset!r}; presets: {known}")
        return {**self.options, **self.presets[preset]}


def spiking_experiments() -> dict[str, SpikingExperiment]:
    """Every shipped spiking reproduction, by name."""
    found = {}
    for origin, text in _shipped():
        if _kind(text) == "spiking":
            try:
                d = tomllib.loads(text)
                exp = SpikingExperiment(d["name"], d["title"], d["source"], d["claim"],
                                        d["protocol"], d["published"], d.get("options", {}),
                                        d.get("presets", {}))  # fmt: skip
            except (tomllib.TOMLDecodeError, KeyError) as e:
                raise ApicalError(f"experiment file {origin} is malformed: {e}") from None
            found[exp.name] = exp
    return found


def experiments() -> dict[str, Experiment]:
    """Every shipped experiment, by name (sweeps are listed by `sweeps`)."""
    found = {}
    for origin, text in _shipped():
        if _kind(text) == "train":
            exp = parse_experiment(text, origin)
            found[exp.name] = exp
    return link_shared_runs(found)


def link_shared_runs(found: dict[str, Experiment]) -> dict[str, Experiment]:
    """Give each `same_as` run the config of the run it names (one clear line when that
    run does not exist or is itself a `same_as`)."""
    linked = {}
    for exp in found.values():
        runs = []
        for r in exp.runs:
            if r.same_as is not None:
                name, _, label = r.same_as.partition("/")
                runs_there = found[name].runs if name in found else []
                target = next((t for t in runs_there if t.label == label), None)
                if target is None or target.same_as is not None:
                    raise ApicalError(
                        f"experiment {exp.name}: run {r.label!r} is the same as {r.same_as!r}, "
                        "which is not a trained run; name one as EXPERIMENT/LABEL"
                    )
                r = replace(r, config=target.config)
            runs.append(r)
        linked[exp.name] = replace(exp, runs=runs)
    return linked


def sweeps() -> dict[str, Sweep]:
    """Every shipped sweep, by name."""
    found = {}
    for origin, text in _shipped():
        if _is_sweep(text):
            sweep = parse_sweep(tomllib.loads(text), origin)
            found[sweep.name] = sweep
    return found


def get_experiment(name: str) -> Experiment:
    known = experiments()
    if name not in known:
        names = [*known, *sweeps(), *spiking_experiments()]
        raise ApicalError(f"unknown experiment {name!r}; known: {', '.join(names)}")
    return known[name]


def verdicts(exp: Experiment, final: dict[str, dict[str, float]]) -> dict[str, str]:
    """'pass'/'FAIL' per run from the final metrics {label: {"test_error", "angle"}};
    'diverged' for a run missing from `final` (its loss became NaN)."""
    out = {}
    for r in exp.runs:
        if r.label not in final:
            out[r.label] = "diverged"
            continue
        ok, checked = True, False
        err, ang = final[r.label][r.metric], final[r.label]["angle"]
        if r.max_error is not None:
            checked, ok = True, ok and err <= r.max_error
        if r.within is not None and r.reference in final:
            checked, ok = True, ok and err <= final[r.reference][r.metric] + r.within
        if r.max_angle is not None:
            checked, ok = True, ok and not math.isnan(ang) and ang <= r.max_angle
        out[r.label] = ("pass" if ok else "FAIL") if checked else "-"
    return out
