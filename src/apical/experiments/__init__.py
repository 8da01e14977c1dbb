"""Paper results as data, and the one protocol that reproduces them.

An experiment is a TOML file (`apical/experiments/*.toml`, or any file given by path):

    kind = "train"            # which runner reproduces it: train, continual, sweep, spiking
    name = "fa-mnist"         # how it is called: apical reproduce fa-mnist
    title = "..."  source = "paper, figure"  claim = "what the paper claims"
    ...                       # the kind's own tables (its runner's docstring)
    [presets.cpu]             # optional shorter protocols: tables merged into the file
    ...                       #   (apical reproduce NAME --preset cpu)

Every file is parsed and validated at once (its presets too), by its kind's runner. To
reproduce one, `reproduce(name)` asks the runner, which trains or simulates into standard
run folders under OUT/NAME[-PRESET] (apical.run_folder) and returns a `Report` (each run:
measured, published, tolerance, verdict). `apical reproduce NAME` is this function and a
table.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from apical.errors import ApicalError, ConfigError
from apical.experiments.report import Report, RunReport
from apical.run_folder import experiment_folder, ray_folder
from apical.train import Run, TrainConfig, train_all
from apical.tune import RayOptions

HEADER = ("kind", "name", "title", "source", "claim")


@dataclass(frozen=True)
class Options:
    """How to reproduce: continue runs (`resume`), only some `runs` (labels), `overrides`
    of every run's config (data_dir, device, epochs, ...), progress bars, where messages
    go, and `ray`: train the runs as Ray Tune trials (None: one after another here)."""

    resume: bool = False
    runs: tuple[str, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)
    progress: bool = False
    echo: Callable[[str], None] = lambda line: None
    ray: RayOptions | None = None

    def train(self, configs: dict[str, TrainConfig], folder: Path) -> dict[str, Run]:
        """Train the runs of an experiment in `folder` (as `apical.train.train_all`), here
        or on Ray."""
        if self.ray is None:
            return train_all(configs, resume=self.resume, progress=self.progress,
                             echo=self.echo)  # fmt: skip
        from apical.tune import train_on_ray

        return train_on_ray(configs, self.ray, ray_folder(folder), resume=self.resume,
                            echo=self.echo)  # fmt: skip


class Runner(Protocol):
    """What each kind provides: `parse` validates a file's body (raising ApicalError) and
    returns the kind's spec; `run` reproduces an experiment into `folder`; `picks_runs`:
    whether `--run LABEL` can pick some of its runs."""

    picks_runs: bool

    def parse(self, body: dict[str, Any], origin: str) -> Any: ...

    def run(self, exp: Experiment, folder: Path, options: Options) -> Report: ...


@dataclass(frozen=True)
class Experiment:
    """A parsed experiment: header, the kind's validated `spec`, its presets (raw tables)
    and the preset applied (None: as declared)."""

    kind: str
    name: str
    title: str
    source: str
    claim: str
    spec: Any
    body: dict[str, Any]
    presets: dict[str, dict[str, Any]]
    origin: str
    preset: str | None = None

    def with_preset(self, preset: str | None) -> Experiment:
        """This experiment with a preset's tables merged in (None: as declared)."""
        if preset is None:
            return self
        if preset not in self.presets:
            known = ", ".join(self.presets) or "none"
            raise ApicalError(f"experiment {self.name} has no preset {preset!r}; presets: {known}")
        body = merged(self.body, self.presets[preset])
        spec = parse_body(self.kind, body, f"{self.origin} [presets.{preset}]")
        return replace(self, spec=spec, body=body, preset=preset)

    def report(self, folder: Path, runs: list[RunReport], **extra: Any) -> Report:
        return Report(self.name, self.kind, self.title, self.source, self.claim, folder, runs,
                      **extra)  # fmt: skip


def runner(kind: str) -> Runner:
    """The runner of a kind (the registry of kinds)."""
    from apical.experiments import continual, spiking, sweep, train_runs

    runners: dict[str, Runner] = {
        "train": train_runs.RUNNER,
        "continual": continual.RUNNER,
        "sweep": sweep.RUNNER,
        "spiking": spiking.RUNNER,
    }
    if kind not in runners:
        raise ApicalError(f"unknown experiment kind {kind!r}; known: {', '.join(runners)}")
    return runners[kind]


def parse(text: str, origin: str) -> Experiment:
    """An experiment from a file's text, validated with every preset (ApicalError names
    the file and the problem)."""
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ApicalError(f"experiment file {origin} is not valid TOML: {e}") from None
    missing = [k for k in HEADER if k not in d]
    if missing:
        raise ApicalError(
            f"experiment file {origin} lacks {', '.join(missing)}; every experiment declares "
            f"{', '.join(HEADER)} (kind: train, continual, sweep or spiking)"
        )
    bad = [k for k in HEADER if not isinstance(d[k], str)]
    if bad:
        raise ApicalError(f"experiment file {origin}: {', '.join(bad)} must be text")
    presets = d.pop("presets", {})
    if not isinstance(presets, dict) or not all(isinstance(p, dict) for p in presets.values()):
        raise ApicalError(f"experiment file {origin}: [presets.NAME] must be tables")
    header = {k: d.pop(k) for k in HEADER}
    spec = parse_body(header["kind"], d, origin)
    exp = Experiment(**header, spec=spec, body=d, presets=presets, origin=origin)
    for name in presets:
        exp.with_preset(name)  # validated now, not after hours of the others
    return exp


def parse_body(kind: str, body: dict[str, Any], origin: str) -> Any:
    """The kind's spec of a file's body; a bad value is named with the file."""
    try:
        return runner(kind).parse(body, origin)
    except ConfigError as e:
        raise ConfigError(f"experiment file {origin}: {e}") from None


def shipped() -> dict[str, Experiment]:
    """Every experiment that ships with apical, by name."""
    found = {}
    files = sorted(resources.files(__package__).iterdir(), key=lambda p: p.name)
    for entry in files:
        if entry.name.endswith(".toml"):
            exp = parse(entry.read_text(), entry.name)
            found[exp.name] = exp
    return found


def load(name: str) -> Experiment:
    """A shipped experiment by name, or an experiment file by path."""
    if name.endswith(".toml") and Path(name).is_file():
        try:
            return parse(Path(name).read_text(), name)
        except (OSError, UnicodeDecodeError) as e:
            raise ApicalError(f"cannot read experiment file {name} ({e})") from None
    known = shipped()
    if name not in known:
        raise ApicalError(
            f"unknown experiment {name!r}; known: {', '.join(known)} (or a path to a .toml file)"
        )
    return known[name]


def reproduce(
    name: str,
    *,
    out: str | Path = "runs",
    preset: str | None = None,
    runs: tuple[str, ...] | list[str] = (),
    resume: bool = False,
    export: str | Path | None = None,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
    seed: int | None = None,
    ray: RayOptions | None = None,
    **overrides: Any,
) -> Report:
    """Reproduce experiment `name` into run folders under `out` and return its Report.

    `preset` picks a shorter protocol; `runs` only those runs (the report still covers
    every run, from their folders); `resume` continues runs that have a checkpoint and
    reports finished ones without training (without it, a folder that holds a run is
    never overwritten); `seed` trains every run with that seed instead of the file's, in
    a folder of its own (OUT/NAME-seed-N); `overrides` change every run's config
    (data_dir, device, epochs: a shortened run is reported, not judged); `export` copies
    the report, figures and rows to export/NAME (for docs); `ray` trains the runs of a
    train or sweep experiment as Ray Tune trials (apical.tune).
    """
    exp = load(name).with_preset(preset)
    if runs and not runner(exp.kind).picks_runs:
        raise ApicalError(f"--run picks runs of an experiment; the {exp.kind} {exp.name} has none")
    given = {k: v for k, v in overrides.items() if v is not None}
    if seed is not None:
        if not runner(exp.kind).picks_runs:
            raise ApicalError(
                f"--seed sets the seed of an experiment's runs; the {exp.kind} {exp.name} "
                "lists its seeds in its file"
            )
        given["seed"] = seed
    if ray is not None and exp.kind not in ("train", "sweep"):
        raise ApicalError(f"--ray trains the runs of train and sweep experiments; {exp.name} is "
                          f"a {exp.kind} experiment")  # fmt: skip
    options = Options(resume, tuple(runs), given, progress, echo or (lambda line: None), ray)
    folder = experiment_folder(out, exp.name, exp.preset, seed)
    report = runner(exp.kind).run(exp, folder, options)
    report.write()
    if export is not None:
        report.export(Path(export))
    return report


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` merged in: tables merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


__all__ = ["Experiment", "Options", "Report", "RunReport", "load", "parse", "reproduce", "shipped"]
