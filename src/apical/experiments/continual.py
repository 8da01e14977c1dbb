"""Experiments of kind "continual": tasks learned one after another (apical.continual).

    tasks = 10      how many permuted tasks each run learns, in order
    judged = true   false for a protocol the published numbers do not apply to (a preset
                    on other data): its runs are reported, "not checked"
    checkpoints = "all"   "last": a task's checkpoint is removed once the next task has
                    finished from it (its config and rows stay; at K = 100 segments a
                    checkpoint of the 2 x 2048 network takes 3.9 GB, so 100 of them
                    would not fit on a disk)
    [base]          TrainConfig fields every run shares (epochs: per task)
    [[runs]]        as for kind "train" (label, fields, published, max_error, reference
                    and within); the checks judge the test error over all tasks after the
                    last one

Run LABEL learns task t into OUT/NAME/LABEL/task-T (T = t + 1, from 1), starting from the
model of task-(T-1) (`init_from`); each task is an ordinary run of the one trainer, so it
resumes, refuses to be overwritten and reports like any other. Besides the standard
report, `tasks.png` shows the mean test accuracy over the tasks seen after each task.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from torch import Tensor

from apical.active_dendrites import ActiveDendritesNet, winning_segments
from apical.config import AT_LEAST_ONE, coerce
from apical.continual import prototypes, task_data
from apical.experiments.train_runs import TrainRuns, TrainSpec
from apical.plots.base import plt, save
from apical.run_folder import RunFolder, write_json
from apical.train import TrainConfig, build, load_config_data, train_all


@dataclass(frozen=True)
class ContinualSpec(TrainSpec):
    tasks: int = 1
    judged: bool = True
    checkpoints: Literal["all", "last"] = "all"


class ContinualRuns(TrainRuns):
    """The runner of kind "continual": a TrainRuns whose every run is a chain of tasks."""

    def parse(self, body: dict[str, Any], origin: str) -> ContinualSpec:
        rest = {k: v for k, v in body.items() if k not in ("tasks", "judged", "checkpoints")}
        tasks = coerce(body.get("tasks", 1), Annotated[int, AT_LEAST_ONE], "tasks")
        judged = coerce(body.get("judged", True), bool, "judged")
        keep = coerce(body.get("checkpoints", "all"), Literal["all", "last"], "checkpoints")
        spec = super().parse(rest, origin)
        return ContinualSpec(spec.base, spec.runs, tasks, judged, keep)

    def chains(self, exp, folder: Path, overrides: dict[str, Any]) -> dict[str, list[TrainConfig]]:
        """Per run, the config of each task in order."""
        out = {}
        for label, config in super().configs(exp, folder, overrides).items():
            chain, before = [], None
            for t in range(exp.spec.tasks):
                run_dir = str(Path(config.run_dir) / f"task-{t + 1}")
                chain.append(dataclasses.replace(config, task=t, init_from=before, run_dir=run_dir))
                before = run_dir
            out[label] = chain
        return out

    def configs(self, exp, folder: Path, overrides: dict[str, Any]) -> dict[str, TrainConfig]:
        """The last task's config of each run: what the report judges."""
        return {label: chain[-1] for label, chain in self.chains(exp, folder, overrides).items()}

    def run(self, exp, folder: Path, options) -> Any:
        self._check_picked(exp, options.runs)
        chains = self.chains(exp, folder, options.overrides)
        picked = [label for label in chains if not options.runs or label in options.runs]
        tasks = {f"{label}/task-{t + 1}": config
                 for label in picked for t, config in enumerate(chains[label])}  # fmt: skip

        def finished(key: str) -> None:  # with checkpoints "last": the task before goes
            label, t = key.rsplit("/task-", 1)
            if exp.spec.checkpoints == "last" and int(t) > 1:
                RunFolder(chains[label][int(t) - 2].run_dir).drop_checkpoint()

        trained = train_all(tasks, resume=options.resume, progress=options.progress,
                            echo=options.echo, finished=finished)  # fmt: skip
        last = {label: trained[f"{label}/task-{exp.spec.tasks}"] for label in picked
                if f"{label}/task-{exp.spec.tasks}" in trained}  # fmt: skip
        report = self.report(exp, folder, self.configs(exp, folder, options.overrides), last,
                             options.overrides)  # fmt: skip
        if not exp.spec.judged:
            why = f"not checked: {exp.spec.tasks} tasks of another protocol (preset {exp.preset})"
            report.runs[:] = [dataclasses.replace(r, verdict=why) if r.checked else r
                              for r in report.runs]  # fmt: skip
        curves = task_curves(chains)
        if any(curves.values()):
            report.files["tasks.png"] = plot_tasks(curves, folder / "tasks.png", exp.title)
        winners = segment_use(chains)
        if winners:
            report.files["segments.png"] = plot_segments(winners, folder / "segments.png")
            report.files["segments.json"] = write_segment_tables(winners, folder)
        return report


def task_curves(chains: dict[str, list[TrainConfig]]) -> dict[str, list[float]]:
    """Per run, the final test accuracy (%) over the tasks seen, after each finished task."""
    curves = {}
    for label, chain in chains.items():
        points = []
        for config in chain:
            folder = RunFolder(config.run_dir)
            if not folder.is_finished():
                break
            points.append(100 * folder.rows()[-1]["test_accuracy"])
        curves[label] = points
    return curves


def segment_use(chains: dict[str, list[TrainConfig]]) -> dict[str, list[Tensor]]:
    """Per run whose network has segments and whose last task is finished: per layer, the
    winning segment of every unit under the context of each task, (T, U)."""
    out = {}
    for label, chain in chains.items():
        config = chain[-1]
        folder = RunFolder(config.run_dir)
        if config.model != "active_dendrites" or not folder.is_finished():
            continue
        data = load_config_data(dataclasses.replace(config, task=None))
        one = dataclasses.replace(data, x_val=data.x_val[:1], y_val=data.y_val[:1],
                                  x_test=data.x_test[:1], y_test=data.y_test[:1])  # fmt: skip
        model, _ = build(config, task_data(one, 0, config.seed), torch.device("cpu"))
        model.load_state_dict(folder.checkpoint("cpu")["model"])
        if isinstance(model, ActiveDendritesNet):
            winners = winning_segments(model, prototypes(data, len(chain), config.seed))
            if winners:
                out[label] = winners
    return out


def segment_tables(winners: Tensor) -> tuple[Tensor, Tensor]:
    """From the winners (T, U) of one layer: the fraction of units each segment wins per
    task (T, K) and the fraction of units with the same winner under two tasks (T, T)."""
    k = int(winners.max()) + 1
    use = torch.zeros(len(winners), k).scatter_add_(1, winners, torch.ones(winners.shape))
    same = (winners[:, None, :] == winners[None, :, :]).float().mean(-1)
    return use / winners.shape[1], same


def write_segment_tables(winners: dict[str, list[Tensor]], folder: Path) -> Path:
    """segments.json: per run and layer, the tables of `segment_tables` (what segments.png
    draws) and the mean fraction of units two different tasks share a winner with."""
    out = {}
    for label, layers in winners.items():
        out[label] = []
        for w in layers:
            use, same = segment_tables(w)
            off = same[~torch.eye(len(same), dtype=torch.bool)]
            between = float(off.mean()) if len(off) else None
            out[label].append({"use": use.tolist(), "same": same.tolist(),
                               "same_mean_between_tasks": between})  # fmt: skip
    write_json(folder / "segments.json", out)
    return folder / "segments.json"


def plot_segments(winners: dict[str, list[Tensor]], path: Path) -> Path:
    """Per run and layer, two panels: the fraction of the layer's units each segment wins
    under each task's context (task against segment), and the fraction of units whose
    winner is the same under two tasks' contexts (task against task)."""
    cells = [(label, i, w) for label, layers in winners.items() for i, w in enumerate(layers)]
    fig, axes = plt.subplots(2, len(cells), figsize=(3.4 * len(cells), 6.0), squeeze=False)
    for col, (label, i, w) in enumerate(cells):
        tasks = w.shape[0]
        use, same = segment_tables(w)
        for row, (values, xlabel, title) in enumerate([
            (use, "segment", "units it wins"),
            (same, "task (its context)", "units with the same winner"),
        ]):  # fmt: skip
            ax = axes[row][col]
            image = ax.imshow(values.numpy(), vmin=0, cmap="viridis", aspect="auto")
            ax.set_title(f"{label}, layer {i + 1}: {title}", fontsize=7)
            ax.set_xlabel(xlabel, fontsize=7)
            ax.set_ylabel("task (its context)", fontsize=7)
            ax.set_yticks(range(tasks), [str(t + 1) for t in range(tasks)], fontsize=6)
            if row == 1:
                ax.set_xticks(range(tasks), [str(t + 1) for t in range(tasks)], fontsize=6)
            fig.colorbar(image, ax=ax, fraction=0.046)
    return save(fig, path, "which segment wins per task", fontsize=8)


def plot_tasks(curves: dict[str, list[float]], path: Path, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, points in curves.items():
        if points:
            ax.plot(range(1, len(points) + 1), points, marker="o", label=label)
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("test accuracy over the tasks seen (%)")
    ax.legend()
    return save(fig, path, title, fontsize=8)


RUNNER = ContinualRuns()
