"""Runs of a sweep as Ray Tune trials (`apical reproduce NAME --ray`; the extra
`pip install 'apical[distributed]'`).

Each config (a grid point, its seed replicas batched inside as always) is one trial with
the resources asked for (CPUs, a GPU fraction), on a local Ray or on the cluster at
`address`. A trial trains with the one trainer into the config's own run folder, so the
rows and tables are those of the in-process path, and reports each epoch's validation
error (mean over replicas, %) as `val_error` for Tune's schedulers (ASHA stops a poor
learning rate early). Resuming reads the run folders, not Ray's experiment state (which
Ray restores by unpickling, and a file here must never run code): finished configs are
not trained again, and unfinished ones continue from their checkpoints.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apical.errors import ApicalError, DivergedError, Interrupted
from apical.run_folder import RunFolder
from apical.train import Run, TrainConfig, finished_run, read_run, settled_runs, train


@dataclass(frozen=True)
class RayOptions:
    """Where trials run: `address` of a Ray cluster (None: start Ray on this machine), and
    each trial's CPUs and GPU fraction."""

    address: str | None = None
    cpus: float = 1.0
    gpus: float = 0.0


def train_on_ray(
    configs: dict[str, TrainConfig],
    options: RayOptions,
    storage: Path,
    *,
    resume: bool = False,
    echo: Callable[[str], None] = print,
    scheduler: Any = None,
) -> dict[str, Run]:
    """Train every config as a trial (those finished in their folders are read, not
    trained); Ray's own files go to `storage`. As `apical.train.train_all` returns."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own tables: apical prints its own
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ApicalError(
            "Ray Tune is not installed; pip install 'apical[distributed]', or run without --ray"
        ) from None
    for label, cfg in configs.items():
        if cfg.run_dir is None:
            raise ApicalError(f"[{label}] a trial trains into a run folder: set run_dir")
    runs, pending = settled_runs(configs, resume, echo)
    if not pending:
        return runs
    env = {k: os.environ[k] for k in ("APICAL_DATA",) if k in os.environ}
    if not ray.is_initialized():
        ray.init(address=options.address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, runtime_env={"env_vars": env})  # fmt: skip
    trainable = tune.with_resources(
        tune.with_parameters(_trial, configs={k: c.to_dict() for k, c in pending.items()}),
        {"cpu": options.cpus, "gpu": options.gpus},
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"label": tune.grid_search(list(pending))},
        tune_config=tune.TuneConfig(scheduler=scheduler, reuse_actors=False),
        run_config=tune.RunConfig(name="tune", storage_path=str(storage.resolve()), verbose=0),
    )
    for label, cfg in pending.items():
        again = " (resuming)" if RunFolder(cfg.run_dir).has_run() else ""
        echo(f"[{label}] rule {cfg.rule}, {cfg.epochs} epochs, a Ray trial{again}")
    grid = tuner.fit()
    stopped = []
    for result in grid:
        label = result.config["label"]
        cfg = pending[label]
        if result.error is not None:
            text = str(result.error).strip().splitlines()
            raise ApicalError(f"[{label}] the trial failed: {text[-1] if text else result.error}")
        last = result.metrics or {}
        if last.get("diverged"):
            echo(f"[{label}] diverged: {last['diverged']}")
            runs[label] = read_run(cfg, diverged=last["diverged"])
        elif finished_run(RunFolder(cfg.run_dir), cfg) or scheduler is not None:
            runs[label] = read_run(cfg)
        else:
            stopped.append(label)
    if stopped:
        raise Interrupted(
            f"the sweep stopped before {', '.join(stopped)} finished; their run folders hold "
            "their last checkpoints: continue with --resume"
        )
    return {label: runs[label] for label in configs}


def _trial(space: dict[str, Any], configs: dict[str, dict[str, Any]]) -> None:
    """One Tune trial: train a config into its folder (continuing what is there),
    reporting every epoch's mean validation error."""
    from ray import tune

    cfg = TrainConfig.from_dict(configs[space["label"]])
    epoch_rows: list[dict[str, Any]] = []

    def report(row: dict[str, Any]) -> None:
        epoch_rows.append(row)
        if len(epoch_rows) < (cfg.replicas or 1):
            return
        errors = [100 * (1 - r["val_accuracy"]) for r in epoch_rows
                  if r.get("val_accuracy") is not None]  # fmt: skip
        tune.report({"epoch": row["epoch"], "diverged": "",
                     "val_error": sum(errors) / len(errors) if errors else math.inf})  # fmt: skip
        epoch_rows.clear()

    try:
        train(cfg, resume=RunFolder(cfg.run_dir).has_run(), progress=False, on_epoch=report)
    except DivergedError as e:
        tune.report({"epoch": -1, "diverged": str(e), "val_error": math.inf})
