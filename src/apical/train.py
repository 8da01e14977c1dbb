"""The one training loop, for every rule.

Each step: `rule.directions` -> `.grad` -> (optional clipping) -> `optimizer.step()` ->
`constrain` (fixed sparsity masks) -> `rule.after_step`. Alignment probes run every
`probe_every` steps on a fixed probe batch with their own generator, so they cannot change
training. With a run folder (apical.run_folder) every epoch ends in a checkpoint (model,
optimizer, scheduler, every random generator, epoch, step) and its rows (metrics.jsonl,
probes.jsonl); SIGINT and SIGTERM save a checkpoint within the epoch. `resume=True`
continues to exactly the weights of an uninterrupted run.

`train` is the whole loop; `Trainer` holds its parts: setup (data, model, rule, optimizer,
schedule, generators, probe batch), `restore` from a checkpoint, `run_epoch`, and `rows`.
A replicated model (`config.seeds`) goes through the same code: every per-run quantity is
a vector of one value per replica (of one value without replicas). Started by torchrun
with several processes, each step runs the rule on this process's shard of the batch and
combines the shards (apical.distributed); the lead process alone writes the run folder,
probes and evaluates, and TensorBoard events (apical.tensorboard) follow the rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from apical import distributed
from apical import synaptic_intelligence as si
from apical.augment import training_batch
from apical.continual import task_data
from apical.convert import convert
from apical.data import Dataset, load_dataset
from apical.errors import ApicalError, DivergedError, Interrupted, PeerFailed
from apical.interrupts import Stop, stop_signals
from apical.keyed import example_keys
from apical.layers import constrain
from apical.metrics import (
    EVALUATED,
    alignment,
    eval_mode,
    evaluate,
    mean_hidden_angle,
    predicted_classes,
)
from apical.models import build_model
from apical.optim import DecoupledMomentumSGD, SparseRowsAdam
from apical.params import param_groups
from apical.replicas import replicate
from apical.rules import Rule, make_rule
from apical.rules.base import Step
from apical.run_folder import RunFolder, differences, jsonable
from apical.tensorboard import Board
from apical.train_config import DATA_FIELDS, LOCATION_FIELDS, TrainConfig, extension_check

__all__ = ["DATA_FIELDS", "Run", "TrainConfig", "Trainer", "finished_run", "train", "train_all"]


@dataclass
class Run:
    """What `train` returns: the trained model and the rows of its run folder; `diverged`
    holds the message when the loss became NaN or inf (the rows end at the last epoch)."""

    config: TrainConfig
    model: nn.Module | None
    history: list[dict[str, Any]]
    probes: list[dict[str, Any]]
    diverged: str | None = None


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    data: Dataset | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> Run:
    """Train `config`; with `resume`, continue the run in `config.run_dir` from its checkpoint
    (a run folder is never overwritten otherwise). `data` may be passed to reuse an already
    loaded dataset (it must match the config's DATA_FIELDS)."""
    config.check()
    group = _join(config)  # None: one process
    folder = RunFolder(config.run_dir) if config.run_dir is not None else None
    if resume and folder is None:
        raise ApicalError("--resume needs --run-dir, the folder of the run to continue")
    writes = folder if group is None or group.lead else None  # only the lead writes
    with writes.writer() if writes else contextlib.nullcontext(), stop_signals() as stop:
        resuming = _begin(writes, config, resume, group)
        trainer = Trainer(config, data, group)
        if resuming:
            trainer.restore(*folder.restore(trainer.device, read_only=writes is None))
        else:
            trainer.start()
        board = None
        if config.tensorboard and writes is not None:
            # a resumed run's events after its checkpoint are purged; a new one's first probe
            board = Board(writes.tensorboard_folder(), trainer.step + 1 if resuming else None)
            board.probes([] if resuming else trainer.probes)
        try:
            with denormals_flushed():
                while trainer.epoch < config.epochs:
                    probed = len(trainer.probes)
                    finished = trainer.run_epoch(stop, progress)
                    rows = trainer.end_epoch() if finished else []
                    if writes is not None:
                        writes.save(trainer.state(), trainer.streams())
                    if board is not None:
                        board.probes(trainer.probes[probed:])
                        board.epoch(rows, trainer.model)
                    for row in rows if on_epoch is not None else ():
                        on_epoch(row)
                    if trainer.agree(stop.requested) and trainer.epoch < config.epochs:
                        raise Interrupted(trainer.interrupted_message(stop.signal, config.run_dir))
        except Exception as e:
            if group is None or not distributed.peer_gone(e):
                raise
            raise PeerFailed(_peer_message(e, trainer, config)) from None
        finally:
            if board is not None:
                board.close()
    return Run(config, trainer.model, trainer.history, trainer.probes)


@contextlib.contextmanager
def denormals_flushed() -> Iterator[None]:
    """CPU floats below the normal range (|x| < 1.2e-38 in float32) read as zero in the
    epoch loop: x86 cores compute on them many times slower, and a saturating logistic net's
    error signals reach them. A process-wide CPU setting (NumPy's too: its float limits are
    read first, or a module imported meanwhile would warn that they are zero), switched off
    again after; no effect on CUDA."""
    for dtype in (np.float16, np.float32, np.float64):
        np.finfo(dtype)  # cached from now on
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _join(config: TrainConfig) -> distributed.Group | None:
    """The process group when started by torchrun with more than one process."""
    place = distributed.environment()
    if place is None:
        return None
    return distributed.join(resolve_device(config.device, local_rank=place[2]))


def _begin(
    folder: RunFolder | None, config: TrainConfig, resume: bool, group: distributed.Group | None
) -> bool:
    """Start the run in its folder (the lead's part: the others get no folder); True when
    it resumes. In a distributed run every process learns that, and the others stop
    quietly when the lead refused the run."""
    resuming, failed = False, None
    try:
        if folder is not None:
            resuming = folder.begin(
                config.to_dict(),
                resume=resume,
                extendable=extension_check(config),
                location=LOCATION_FIELDS,
            )
    except ApicalError as e:
        if group is None:
            raise
        failed = e
    if group is None:
        return resuming
    ok = distributed.broadcast_flag(group, failed is None)
    resuming = distributed.broadcast_flag(group, resuming)
    if failed is not None:
        raise failed
    if not ok:
        raise PeerFailed("process 0 refused the run (it says why)")
    return resuming


def _peer_message(e: BaseException, trainer: Trainer, config: TrainConfig) -> str:
    where = (
        f"the last checkpoint (epoch {trainer.epoch}) is in {config.run_dir}: continue with "
        f"--resume on {trainer.group.world if trainer.group else 1} processes"
        if config.run_dir is not None and trainer.epoch > 0
        else "no checkpoint was written"
    )
    first = str(e).strip().splitlines()[0][:100] if str(e).strip() else type(e).__name__
    return f"another process of the distributed run failed ({first}); the run stopped and {where}"


def train_all(
    configs: dict[str, TrainConfig],
    *,
    resume: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    finished: Callable[[str], None] = lambda label: None,
) -> dict[str, Run]:
    """Train each config in turn (the runs of an experiment, the points of a sweep),
    loading each dataset once for consecutive configs that share it; `finished(label)` is
    called once a run has finished (trained now or before).

    Without `resume`, a config whose run folder already holds a run is refused before
    anything trains. With it, a finished run is read from its folder (model None), a run
    with a checkpoint continues, and one without starts. A run that diverges is returned
    with `diverged` set, and the others still run."""
    runs, pending = settled_runs(configs, resume, echo)
    for label in runs:
        finished(label)
    loaded: tuple[tuple, Dataset] | None = None
    for label, cfg in pending.items():
        key = tuple(getattr(cfg, f) for f in DATA_FIELDS)
        if loaded is None or loaded[0] != key:
            loaded = None  # one dataset in memory at a time
            loaded = (key, load_config_data(cfg))
        again = cfg.run_dir is not None and RunFolder(cfg.run_dir).has_run()
        echo(f"[{label}] rule {cfg.rule}, {cfg.epochs} epochs" + (" (resuming)" if again else ""))
        try:
            runs[label] = train(cfg, resume=again, progress=progress, data=loaded[1])
        except DivergedError as e:
            echo(f"[{label}] diverged: {e}")
            runs[label] = (read_run(cfg, diverged=str(e)) if cfg.run_dir is not None
                           else Run(cfg, None, [], [], diverged=str(e)))  # fmt: skip
            continue
        finished(label)
    return {label: runs[label] for label in configs}


def settled_runs(
    configs: dict[str, TrainConfig], resume: bool, echo: Callable[[str], None]
) -> tuple[dict[str, Run], dict[str, TrainConfig]]:
    """(the runs finished in their folders, read from them; the configs still to train).
    Without `resume`, a folder that already holds a run is refused before anything trains
    (`train_all` and `apical.tune` alike)."""
    folders = {k: RunFolder(c.run_dir) for k, c in configs.items() if c.run_dir is not None}
    for folder in folders.values():
        if folder.has_run() and not resume:
            raise ApicalError(
                f"{folder.path} already holds {folder.describe()}; add --resume to continue it "
                "(a finished run is reported without training), or choose another folder"
            )
    done, pending = {}, {}
    for label, cfg in configs.items():
        if label in folders and finished_run(folders[label], cfg):
            echo(f"[{label}] finished ({cfg.epochs} epochs)")
            done[label] = read_run(cfg)
        else:
            pending[label] = cfg
    return done, pending


def read_run(config: TrainConfig, diverged: str | None = None) -> Run:
    """The run in `config.run_dir` as its rows hold it (to `config.epochs`; no model)."""
    folder = RunFolder(config.run_dir)
    rows = [r for r in folder.rows() if r.get("epoch", 0) <= config.epochs]
    probes = [p for p in folder.rows("probes") if p.get("epoch", 0) <= config.epochs]
    return Run(config, None, rows, probes, diverged=diverged)


def finished_run(folder: RunFolder, config: TrainConfig) -> bool:
    """Whether the folder holds `config`'s run to its last epoch. Its config must match,
    epochs aside (a longer run of a schedule that does not depend on the length holds the
    shorter one in its first epochs); another run is refused with one line."""
    rows, saved = folder.rows(), folder.config()
    if not rows or saved is None or rows[-1].get("epoch", 0) < config.epochs:
        return False
    differ = [k for k in differences(saved, config.to_dict(), LOCATION_FIELDS) if k != "epochs"]
    if not differ and saved.get("epochs") != config.epochs and config.schedule == "cosine":
        differ = ["epochs (a cosine schedule)"]
    if differ:
        raise ApicalError(
            f"{folder.path} holds a run of another config (it differs in {', '.join(differ)}); "
            "move it away or choose another folder"
        )
    return True


class Trainer:
    """The state of one training run and its steps (see the module docstring)."""

    def __init__(
        self,
        config: TrainConfig,
        data: Dataset | None = None,
        group: distributed.Group | None = None,
    ) -> None:
        self.config, self.group = config, group
        self.lead = group is None or group.lead  # evaluates, probes, shows progress
        self.device = group.device if group else resolve_device(config.device)
        data = data if data is not None else load_config_data(config)
        self.data = data.to(self.device)
        if group is not None:
            distributed.check_batches(group, len(self.data.x_train), config.batch_size)
        self.model, self.rule = build(config, self.data, self.device)
        before = None if config.init_from is None else _start_from(self.model, config, self.device)
        params = dict(self.model.named_parameters())
        self.si = None  # Synaptic Intelligence, when si_strength > 0
        if config.si_strength:
            self.si = (si.first_task(params) if before is None
                       else si.next_task(before, params, config.si_damping))  # fmt: skip
        self.optimizer = make_optimizer(config, self.model, self.rule)
        self.scheduler = make_scheduler(config, self.optimizer)
        seeds = config.seeds if config.seeds is not None else [config.seed]
        self.replicated = config.seeds is not None
        self.generators = {
            "rule": torch.Generator(self.device).manual_seed(config.seed + 2),
            "augment": torch.Generator(self.device).manual_seed(config.seed + 6),
            "decode": torch.Generator().manual_seed(config.seed + 7),
        }
        self.shuffles = [f"shuffle{r}" if self.replicated else "shuffle" for r in range(len(seeds))]
        for key, s in zip(self.shuffles, seeds, strict=True):
            self.generators[key] = torch.Generator().manual_seed(s + 3)
        self.augments = ["augment"]  # replicas draw their own crops, as each does alone
        if self.replicated and config.augment != "none":
            self.augments = [f"augment{r}" for r in range(len(seeds))]
            for key, s in zip(self.augments, seeds, strict=True):
                self.generators[key] = torch.Generator(self.device).manual_seed(s + 6)
        n = len(self.data.x_train)
        picks = [
            torch.randperm(n, generator=torch.Generator().manual_seed(s + 4))[: config.probe_size]
            for s in seeds
        ]
        pick = self._one_or_all(torch.stack(picks)).to(self.device)
        self.probe_x, self.probe_y = self.data.x_train[pick], self.data.y_train[pick]
        self.scales = _direction_scales(config, self.model)
        self.tags = _replica_tags(config)
        self.n_batches = math.ceil(n / config.batch_size)
        # progress: completed epochs, steps, seconds of training; within an epoch the next
        # batch, the epoch's order of examples and its summed loss
        self.epoch, self.step, self.elapsed, self.last_probe = 0, 0, 0.0, -1
        self.batch, self.perm, self.loss_sum = 0, None, self._zeros(torch.float64)
        self.first_bad = self._zeros(torch.long) - 1  # step of the first non-finite loss
        self.history: list[dict[str, Any]] = []
        self.probes: list[dict[str, Any]] = []

    # -- checkpoints -----------------------------------------------------------------------
    def start(self) -> None:
        if self.config.probe_every or self.config.probe_epochs:
            self.probe(0)

    def agree(self, flag: bool) -> bool:
        """Whether any process of the run says yes (`flag` itself in one process)."""
        return flag if self.group is None else distributed.agree(self.group, flag)

    def state(self) -> dict[str, Any]:
        """The checkpoint: everything `restore` needs to continue exactly."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": {k: g.get_state() for k, g in self.generators.items()},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "epoch": self.epoch,
            "step": self.step,
            "seconds": self.elapsed,
            "last_probe": self.last_probe,
            "first_bad": self.first_bad,
            "batch": self.batch,
            "loss_sum": self.loss_sum,
            "world_size": self.group.world if self.group else 1,
        }
        if self.perm is not None:  # saved within an epoch
            state["perm"] = self.perm
        if self.si is not None:
            state["si"] = self.si.as_dict()
        return state

    def streams(self) -> dict[str, list[dict[str, Any]]]:
        return {"metrics": self.history, "probes": self.probes}

    def restore(self, state: dict[str, Any], rows: dict[str, list[dict[str, Any]]]) -> None:
        """Continue from a checkpoint's state; one line when it does not fit this run (a
        checkpoint of another model, or one edited or damaged)."""
        world = self.group.world if self.group else 1
        if state.get("world_size", 1) != world:
            raise ApicalError(
                f"{self.config.run_dir} was trained on {state.get('world_size')} processes and "
                f"is resumed on {world}; resume it on {state.get('world_size')} (torchrun "
                f"--nproc-per-node, apical train --nproc), or start a new run"
            )
        try:
            _check_like(
                state["optimizer"]["param_groups"], self.optimizer.state_dict()["param_groups"]
            )
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None:
                fresh = self.scheduler.state_dict()
                _check_like(state["scheduler"], fresh)
                self.scheduler.load_state_dict(state["scheduler"])
            for k, g in self.generators.items():
                g.set_state(state["rng"][k].cpu())
            torch.set_rng_state(state["torch_rng"].cpu())
            if state["cuda_rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
            self.epoch, self.step = _count(state["epoch"]), _count(state["step"])
            self.last_probe, self.batch = state["last_probe"], _count(state["batch"])
            self.elapsed = float(state["seconds"])
            self.first_bad = _like(state["first_bad"], self.first_bad).to(self.device)
            self.loss_sum = _like(state["loss_sum"], self.loss_sum).to(self.device)
            self.perm = _permutation(state["perm"], self) if "perm" in state else None
            if self.si is not None:
                self.si = si.from_dict(state["si"], dict(self.model.named_parameters()))
            if not isinstance(self.last_probe, int) or self.batch > self.n_batches:
                raise ValueError("its step counters are out of range")
            if self.step != self.epoch * self.n_batches + self.batch:
                raise ValueError(f"its step {self.step} does not follow from its epoch and batch")
            if len(rows.get("metrics", [])) != self.epoch * len(self.tags):
                raise ValueError(
                    f"it has {len(rows.get('metrics', []))} rows for {self.epoch} epochs"
                )
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as e:
            raise ApicalError(
                f"the checkpoint of {self.config.run_dir} does not fit this run "
                f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); start a new run"
            ) from None
        self.history, self.probes = rows.get("metrics", []), rows.get("probes", [])
        if self.epoch > self.config.epochs:
            raise ApicalError(
                f"{self.config.run_dir} has trained {self.epoch} epochs already; resume with "
                f"epochs >= {self.epoch}"
            )

    def interrupted_message(self, signal_name: str | None, run_dir: str | None) -> str:
        where = (
            f"the run is saved in {run_dir}; continue it with --resume"
            if run_dir is not None
            else "nothing was saved (no run folder)"
        )
        return (
            f"interrupted by {signal_name or 'a signal'} in epoch {self.epoch + 1}, after "
            f"step {self.step}: {where}"
        )

    # -- training --------------------------------------------------------------------------
    def run_epoch(self, stop: Stop, progress: bool = False) -> bool:
        """The rest of the current epoch's steps; False when a signal stopped it (its
        state is then ready to save and resume within the epoch)."""
        cfg, data, rule = self.config, self.data, self.rule
        self.model.train()
        t0 = time.perf_counter()
        if self.perm is None:
            perm = [torch.randperm(len(data.x_train), generator=self.generators[k])
                    for k in self.shuffles]  # fmt: skip
            self.perm = self._one_or_all(torch.stack(perm)).to(self.device)
        params = dict(self.model.named_parameters())
        bar = tqdm(range(self.batch, self.n_batches), desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   disable=not (progress and self.lead), leave=False)  # fmt: skip
        for i in bar:
            idx = self.perm[..., i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x, y, extra = self._batch(idx)
            # free the last step's directions (its .grad and `result`) before this step's
            # are made: the heap stays steady, where the allocator would otherwise return
            # memory to the OS and page-fault it back every step
            self.optimizer.zero_grad(set_to_none=True)
            result = None
            result = rule.directions(self.model, x, y, self.generators["rule"], **extra)
            stopping = stop.requested
            if self.group is not None:
                result, stopping = self._combine(result, idx.shape[-1], stopping)
            for name, direction in result.directions.items():
                scale = None if self.scales is None else self.scales[name]
                params[name].grad = direction if scale is None else direction * scale
            if self.si is not None:
                task_grads, before = self._add_si_penalty(params, result.directions)
            if cfg.grad_clip:
                clip_grads(self.model, cfg.grad_clip)
            self.optimizer.step()
            constrain(self.model)
            if self.si is not None:
                si.add_path_(self.si, task_grads, before, params)
            rule.after_step(self.model, result)
            self.step += 1
            self.batch = i + 1
            bad = ~torch.isfinite(result.loss) & (self.first_bad < 0)
            self.first_bad = torch.where(bad, self.step, self.first_bad)
            self.loss_sum += result.loss.double() * idx.shape[-1]
            probe_now = cfg.probe_every and self.step % cfg.probe_every == 0
            if probe_now or (progress and self.step % 50 == 0) or i == self.n_batches - 1:
                self._stop_if_nonfinite()
                if progress and self.lead:
                    bar.set_postfix(loss=f"{float(result.loss.mean()):.4f}")
            if probe_now:
                self.probe(self.epoch)
            if stopping and i < self.n_batches - 1:
                self._stop_if_nonfinite()
                self.elapsed += time.perf_counter() - t0
                return False
        self.elapsed += time.perf_counter() - t0
        return True

    def _batch(self, idx: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor | int]]:
        """The step's inputs, labels and per-example keys (for keyed rules): of the whole
        batch, or of this process's shard of it (the whole batch's augmentation drawn
        first, so that every process draws the same numbers). A rule that carries state per
        example also gets `first`, the shard's first example's place in the batch, and
        `batch_keys`, the whole batch's keys."""
        cfg, data, rule = self.config, self.data, self.rule
        extra: dict[str, Tensor | int] = {}
        if rule.keyed:
            extra["keys"] = example_keys(cfg.seed, self.epoch, idx)
        if self.group is None:
            x = training_batch(cfg.augment, data.x_train, idx, self.generators, self.augments)
            return x, data.y_train[idx], extra
        part = self.group.shard(idx.shape[-1])
        if rule.carries_examples:
            extra["first"] = part.start
            if rule.keyed:
                extra["batch_keys"] = extra["keys"]
        if rule.keyed:
            extra["keys"] = extra["keys"][..., part]
        if cfg.augment == "none":  # nothing drawn: the shard's examples only
            idx = idx[..., part]
            return data.x_train[idx], data.y_train[idx], extra
        x = training_batch(cfg.augment, data.x_train, idx, self.generators, self.augments)
        x = x.narrow(idx.dim() - 1, part.start, part.stop - part.start)  # after replicas
        return x, data.y_train[idx[..., part]], extra

    def _combine(self, result: Step, n: int, stop: bool) -> tuple[Step, bool]:
        """The whole batch's step from this process's shard of n examples (see
        apical.distributed); the stop flag is any process's."""
        share = self.group.shard(n)
        local = (share.stop - share.start) / n
        weight = local if self.rule.reduction == "mean" else 1.0
        directions, increments, loss, stop = distributed.combine(
            result.directions, result.dense_increments(), result.loss, weight, local, stop
        )
        replacements = result.replacements
        if replacements:
            replacements = distributed.gather_batch(self.group, replacements, n)
        step = dataclasses.replace(result, directions=directions, increments=increments,
                                   loss=loss, replacements=replacements)  # fmt: skip
        return step, stop

    def end_epoch(self) -> list[dict[str, Any]]:
        """Close the epoch: schedule, end-of-epoch probe, evaluation; its rows (one per
        replica) are appended to the history and returned (no rows on a process other
        than a distributed run's lead)."""
        cfg, data = self.config, self.data
        if self.scheduler is not None:
            self.scheduler.step()
        self.epoch += 1
        if not self.lead:
            self.batch, self.perm = 0, None
            self.loss_sum = self._zeros(torch.float64)
            return []
        if cfg.probe_epochs and self.last_probe != self.step:
            self.probe(self.epoch)
        reps = cfg.replicas
        splits = {"val": (data.x_val, data.y_val), "test": (data.x_test, data.y_test)}
        evals = {
            f"{split}_{k}": _per_replica(v)
            for split, (xs, ys) in splits.items()
            for k, v in evaluate(self.model, xs, ys, cfg.loss, replicas=reps).items()
        } if self.epoch % cfg.eval_every == 0 or self.epoch >= cfg.epochs else {
            f"{split}_{k}": [None] * len(self.tags)  # not measured this epoch
            for split in splits
            for k in EVALUATED
        }  # fmt: skip
        losses = _per_replica((self.loss_sum / len(data.x_train)).tolist())
        diverged = _per_replica(self.first_bad.tolist())
        last = self.probes[-len(self.tags) :]  # the latest probe of each replica
        rows = []
        for r, tag in enumerate(self.tags):
            row = {
                "epoch": self.epoch,
                "step": self.step,
                **tag,
                "train_loss": losses[r],
                **{k: v[r] for k, v in evals.items()},
                "seconds": self.elapsed,
                "mean_hidden_angle": last[r]["mean_hidden_angle"] if last else None,
                "angle_step": last[r]["step"] if last else None,  # when it was measured
            }
            if diverged[r] >= 0:
                row["diverged_step"] = diverged[r]
            rows.append(jsonable(row))  # as the run folder holds it: NaN as None
        self.history.extend(rows)
        self.batch, self.perm = 0, None
        self.loss_sum = self._zeros(torch.float64)
        return rows

    def probe(self, epoch: int) -> None:
        """Probe rows (one per replica) on the fixed probe batch, with their own generator
        (by the lead only, in a distributed run)."""
        self.last_probe = self.step
        if not self.lead:
            return
        gen = torch.Generator(self.device).manual_seed(self.config.seed + 5)
        layers = alignment(self.model, self.rule, self.probe_x, self.probe_y, gen)
        with torch.no_grad(), eval_mode(self.model):  # each replica on its own probe batch
            predicted = predicted_classes(self.model(self.probe_x)).sum(-1).tolist()
        for r, (tag, rows) in enumerate(zip(self.tags, layers if isinstance(layers, list)
                                            else [layers], strict=True)):  # fmt: skip
            self.probes.append(jsonable({
                "epoch": epoch, "step": self.step, "images": self.step * self.config.batch_size,
                **tag, "mean_hidden_angle": mean_hidden_angle(self.model, rows), "layers": rows,
                "classes_predicted": _per_replica(predicted)[r],
            }))  # fmt: skip

    def _add_si_penalty(
        self, params: dict[str, Tensor], directions: dict[str, Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Add the Synaptic Intelligence penalty's gradient to every `.grad`; return the
        task's own directions (as scaled into `.grad`) and the parameters before the step,
        from which the step's path is taken."""
        task = {k: params[k].grad for k in directions}
        for k in directions:
            params[k].grad = si.with_penalty(
                self.si, k, params[k], task[k], self.config.si_strength
            )
        return task, si.before_step(task, params)

    def _stop_if_nonfinite(self) -> None:
        """Stop when the loss went NaN or inf (for replicas: when every replica's did; a
        replica that diverged alone is marked in its rows and the others go on)."""
        if not bool((self.first_bad >= 0).all()):
            return
        bad_step, epoch = int(self.first_bad.max()), self.epoch
        where = (
            f"the last good checkpoint (epoch {epoch}) is in {self.config.run_dir}"
            if self.config.run_dir is not None and epoch > 0
            else "no checkpoint was written"
        )
        raise DivergedError(
            f"the loss became NaN or inf at epoch {epoch + 1}, step {bad_step}; the run "
            f"stopped and {where}. Lower the learning rate or set grad_clip"
        )

    def _one_or_all(self, stacked: Tensor) -> Tensor:
        """A per-replica stack (R, ...) as the model takes it: (R, ...) for a replicated
        model, the only entry for a plain one."""
        return stacked if self.replicated else stacked[0]

    def _zeros(self, dtype: torch.dtype) -> Tensor:
        shape = (self.config.replicas,) if self.replicated else ()
        return torch.zeros(shape, dtype=dtype, device=self.device)


# -- the parts a Trainer is built from -----------------------------------------------------
def load_config_data(config: TrainConfig) -> Dataset:
    """The dataset a config trains on (configs equal in DATA_FIELDS share it)."""
    data = load_dataset(
        config.dataset,
        config.data_dir,
        val_size=config.val_size,
        seed=config.seed,
        standardize=config.standardize,
        image_size=config.image_size,
    )
    if config.train_size is not None:
        if not 0 < config.train_size <= len(data.x_train):
            raise ApicalError(
                f"train_size {config.train_size} is not between 1 and the {len(data.x_train)} "
                f"training examples of {config.dataset}"
            )
        keep = slice(0, config.train_size)  # the split is already a seeded permutation
        data = dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])
    return data if config.task is None else task_data(data, config.task, config.seed)


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """The device of a config's `device`; in a distributed run (`local_rank` given) "cuda"
    is the process's own GPU on its node."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ApicalError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ApicalError("device cuda asked for but CUDA is not available; use --device cpu")
    if device.type == "cuda" and local_rank is not None and device.index is None:
        if local_rank >= torch.cuda.device_count():
            raise ApicalError(
                f"process {local_rank} on this node has no GPU of its own ("
                f"{torch.cuda.device_count()} here); start at most that many processes per node"
            )
        device = torch.device("cuda", local_rank)
    return device


def build(config: TrainConfig, data: Dataset, device: torch.device) -> tuple[nn.Module, Rule]:
    """The rule and the converted model; initial weights depend only on the seed (on each
    replica's seed for replicas)."""
    rule = make_rule(config.rule, loss=config.loss, **config.rule_options)
    example = data.x_train[:2].cpu()

    def one(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = build_model(config.model, data.input_shape, data.n_classes, **config.model_options)
        if rule.model_class is not None:
            if not isinstance(model, rule.model_class):
                raise ApicalError(
                    f"rule {rule.name!r} trains its own model only; set model = {rule.name!r}"
                )
            return model
        return convert(model, rule, example, generator=torch.Generator().manual_seed(seed + 1))

    if config.seeds is not None:
        return replicate([one(s) for s in config.seeds]).to(device), rule
    return one(config.seed).to(device), rule


def make_optimizer(config: TrainConfig, model: nn.Module, rule: Rule) -> torch.optim.Optimizer:
    groups = param_groups(model, config.lr, config.output_lr, bias_decay=rule.decays_biases)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "decoupled_sgd":
        return DecoupledMomentumSGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    # fused: one kernel over all tensors, much faster on CPU than the default per-tensor
    # loop (the same update up to rounding); sparse row gradients (active-dendrite
    # segments) update their rows only
    return SparseRowsAdam(
        groups,
        lr=config.lr,
        weight_decay=config.weight_decay,
        decoupled_weight_decay=config.optimizer == "adamw",
        fused=True,
    )


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer):
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=config.step_every, gamma=config.step_factor
        )
    return None


def clip_grads(model: nn.Module, max_norm: float) -> None:
    """clip_grad_norm_ over every `.grad` (a learned feedback tensor's direction counted as
    its own term, as it moves its tensor), scaling each tensor once where parameters share
    one (`apical.rules.base.weight_direction`)."""
    params = [p for p in model.parameters() if p.grad is not None]
    once = list({id(p.grad): p for p in params}.values())
    dense = [p for p in once if not p.grad.is_sparse]
    sparse = [p.grad.coalesce() for p in once if p.grad.is_sparse]  # rows: their values
    norm = nn.utils.get_total_norm([p.grad for p in params if not p.grad.is_sparse]
                                   + [g.values() for g in sparse])  # fmt: skip
    if dense:
        nn.utils.clip_grads_with_norm_(dense, max_norm, norm)
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for p, g in zip([p for p in once if p.grad.is_sparse], sparse, strict=True):
        p.grad = g * scale


def _replica_tags(config: TrainConfig) -> list[dict[str, Any]]:
    """What tells a replica's rows apart ([{}] without replicas)."""
    if config.seeds is None:
        return [{}]
    scales = config.lr_scales or [1.0] * len(config.seeds)
    return [
        {"replica": r, "seed": s, "lr_scale": c}
        for r, (s, c) in enumerate(zip(config.seeds, scales, strict=True))
    ]


def _direction_scales(config: TrainConfig, model: nn.Module) -> dict[str, Tensor] | None:
    """Per-parameter (R, 1, ...) multipliers from lr_scales (None: all ones)."""
    if config.lr_scales is None or all(v == 1 for v in config.lr_scales):
        return None
    out = {}
    for name, p in model.named_parameters():
        scale = torch.tensor(config.lr_scales, dtype=p.dtype, device=p.device)
        out[name] = scale.reshape(-1, *([1] * (p.dim() - 1)))
    return out


def _start_from(
    model: nn.Module, config: TrainConfig, device: torch.device
) -> si.SynapticState | None:
    """Load the model of the finished run in `config.init_from`; with Synaptic Intelligence,
    return that run's record at its end (None without)."""
    folder = config.init_from
    source = RunFolder(folder)
    if not source.is_finished():
        raise ApicalError(
            f"init_from {folder} holds no finished run ({source.describe()}); finish that run "
            "first, or name the folder of one"
        )
    state = source.checkpoint(device)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise ApicalError(
            f"the model in init_from {folder} does not fit this run's model "
            f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); use the same model"
        ) from None
    if not config.si_strength:
        return None
    if "si" not in state:
        raise ApicalError(
            f"init_from {folder} was trained without Synaptic Intelligence, so the importance "
            "of its parameters is unknown; train the tasks before with si_strength > 0 too"
        )
    try:
        return si.from_dict(state["si"], dict(model.named_parameters()))
    except ValueError as e:
        raise ApicalError(f"the checkpoint in init_from {folder} does not fit: {e}") from None


_IMPLEMENTATION_FLAGS = ("params", "fused", "foreach")


def _check_like(saved: Any, fresh: Any) -> None:
    """The saved optimizer groups or scheduler state have the fresh one's keys and kinds
    of value (a damaged checkpoint can rename a key, which loading would not notice)."""
    if isinstance(fresh, list):
        if not isinstance(saved, list) or len(saved) != len(fresh):
            raise ValueError("its optimizer groups differ from this run's")
        for a, b in zip(saved, fresh, strict=True):
            _check_like(a, b)
    elif isinstance(fresh, dict):
        if not isinstance(saved, dict) or set(saved) != set(fresh):
            raise ValueError(
                f"its keys {sorted(map(str, saved))} are not {sorted(map(str, fresh))}"
            )
        for k in fresh:
            if k in _IMPLEMENTATION_FLAGS:  # how the update is computed, not what it is: a
                continue  # run saved before Adam became fused resumes as it ran
            if type(saved[k]) is not type(fresh[k]) and fresh[k] is not None:
                raise ValueError(f"its {k} is a {type(saved[k]).__name__}")


def _count(v: Any) -> int:
    if not isinstance(v, int) or v < 0:
        raise ValueError(f"a counter holds {v!r}")
    return v


def _like(saved: Any, fresh: Tensor) -> Tensor:
    if not isinstance(saved, Tensor) or saved.shape != fresh.shape or saved.dtype != fresh.dtype:
        raise ValueError("its loss or divergence record has another shape")
    return saved


def _permutation(perm: Any, trainer: Trainer) -> Tensor:
    """The epoch's order of examples: each row a permutation of the training examples."""
    n = len(trainer.data.x_train)
    if not isinstance(perm, Tensor) or perm.shape[-1:] != (n,) or perm.dtype != torch.long:
        raise ValueError("its order of examples does not fit the training set")
    rows = perm.reshape(-1, n).cpu()
    if not all(torch.equal(r.sort().values, torch.arange(n)) for r in rows):
        raise ValueError("its order of examples is not a permutation")
    return perm.to(trainer.device)


def _per_replica(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
