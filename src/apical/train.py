"""The one training loop, for every rule.

Each step: `rule.directions` -> `.grad` -> (optional clipping) -> `optimizer.step()` ->
`rule.after_step`. Alignment probes run every `probe_every` steps on a fixed probe batch
with their own generator, so they cannot change training. A run folder holds
`config.json`, `metrics.jsonl` (one row per epoch), `probes.jsonl` and `checkpoint.pt`
(model, optimizer, scheduler, every RNG state, epoch, step, history), all written
atomically; `resume=True` continues to the same weights as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from apical.augment import AUGMENTATIONS, training_batch
from apical.convert import convert
from apical.data import Dataset, load_dataset
from apical.errors import ApicalError, DivergedError
from apical.metrics import alignment, evaluate, mean_hidden_angle
from apical.models import build_model
from apical.optim import DecoupledMomentumSGD
from apical.params import param_groups
from apical.rules import Rule, make_rule
from apical.runs import load_checkpoint, save_checkpoint, write_json, write_jsonl

OPTIMIZERS = ("sgd", "adam", "adamw", "decoupled_sgd")
SCHEDULES = ("constant", "cosine", "step")


@dataclass
class TrainConfig:
    """Everything a run depends on (the run folder's config.json)."""

    dataset: str = "digits"
    data_dir: str | None = None
    val_size: int | float = 0.1
    standardize: bool = True
    image_size: int = 64
    augment: str = "none"
    model: str = "mlp"
    model_options: dict[str, Any] = field(default_factory=dict)
    rule: str = "backprop"
    rule_options: dict[str, Any] = field(default_factory=dict)
    loss: str = "cross_entropy"
    optimizer: str = "sgd"
    lr: float = 0.05
    output_lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    step_every: int = 30  # epochs between the lr drops of schedule "step"
    step_factor: float = 0.1
    grad_clip: float | None = None
    epochs: int = 10
    batch_size: int = 64
    seed: int = 0
    probe_every: int = 100
    probe_size: int = 512
    device: str = "auto"
    run_dir: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ApicalError(
                f"unknown config key {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
            )
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ApicalError(
                f"unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}"
            )
        if self.augment not in AUGMENTATIONS:
            raise ApicalError(
                f"unknown augmentation {self.augment!r}; known: {', '.join(AUGMENTATIONS)}"
            )
        if self.schedule not in SCHEDULES:
            raise ApicalError(f"unknown schedule {self.schedule!r}; known: {', '.join(SCHEDULES)}")
        for name in ("lr", "epochs", "batch_size"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ApicalError(f"{name} must be a positive number, got {value!r}")


@dataclass
class Run:
    """What `train` returns: the trained model and the rows written to the run folder."""

    config: TrainConfig
    model: nn.Module
    history: list[dict[str, Any]]
    probes: list[dict[str, Any]]


DATA_FIELDS = ("dataset", "data_dir", "val_size", "seed", "standardize", "image_size")


def load_config_data(config: TrainConfig) -> Dataset:
    """The dataset a config trains on (configs equal in DATA_FIELDS share it)."""
    return load_dataset(
        config.dataset,
        config.data_dir,
        val_size=config.val_size,
        seed=config.seed,
        standardize=config.standardize,
        image_size=config.image_size,
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ApicalError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ApicalError("device cuda asked for but CUDA is not available; use --device cpu")
    return device


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, config.lr, config.output_lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "decoupled_sgd":
        return DecoupledMomentumSGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=config.lr, weight_decay=config.weight_decay)


def build(config: TrainConfig, data: Dataset, device: torch.device) -> tuple[nn.Module, Rule]:
    """The rule and the converted model; initial weights depend only on the seed."""
    rule = make_rule(config.rule, loss=config.loss, **config.rule_options)
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.input_shape, data.n_classes, **config.model_options)
    example = data.x_train[:2].cpu()
    model = convert(model, rule, example, generator=torch.Generator().manual_seed(config.seed + 1))
    return model.to(device), rule


def _probe(model, rule, x, y, seed, device, epoch, step) -> dict[str, Any]:
    rows = alignment(model, rule, x, y, torch.Generator(device).manual_seed(seed))
    return {
        "epoch": epoch,
        "step": step,
        "mean_hidden_angle": mean_hidden_angle(model, rows),
        "layers": rows,
    }


def _rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    state = {k: g.get_state() for k, g in generators.items()}
    state["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(generators: dict[str, torch.Generator], state: dict[str, Any]) -> None:
    for k, g in generators.items():
        g.set_state(state[k].cpu())
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _resume_config(config: TrainConfig, run_dir: Path) -> None:
    saved_path = run_dir / "config.json"
    if not saved_path.is_file():
        raise ApicalError(f"nothing to resume: no config.json in {run_dir}")
    saved = json.loads(saved_path.read_text())
    ours = json.loads(json.dumps(config.to_dict()))
    differ = sorted(
        k for k in ours if k not in ("epochs", "device", "run_dir") and ours[k] != saved.get(k)
    )
    if differ:
        raise ApicalError(
            f"cannot resume {run_dir}: the config differs in {', '.join(differ)}; resume with "
            "the run's own config (apical train --resume --run-dir DIR) or start a new run"
        )


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    data: Dataset | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> Run:
    """Train `config`; with `resume`, continue the run in `config.run_dir` from its checkpoint.

    `data` may be passed to reuse an already loaded dataset (it must match the config).
    """
    config.check()
    device = resolve_device(config.device)
    run_dir = Path(config.run_dir) if config.run_dir else None
    if resume and run_dir is None:
        raise ApicalError("--resume needs --run-dir, the folder of the run to continue")
    if resume:
        _resume_config(config, run_dir)
    data = (data if data is not None else load_config_data(config)).to(device)
    model, rule = build(config, data, device)
    optimizer = make_optimizer(config, model)
    scheduler = None
    if config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    elif config.schedule == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=config.step_every, gamma=config.step_factor
        )
    generators = {
        "rule": torch.Generator(device).manual_seed(config.seed + 2),
        "shuffle": torch.Generator().manual_seed(config.seed + 3),
        "augment": torch.Generator(device).manual_seed(config.seed + 6),
        "decode": torch.Generator().manual_seed(config.seed + 7),
    }
    n = len(data.x_train)
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed + 4))
    pick = pick[: config.probe_size].to(device)
    probe_x, probe_y = data.x_train[pick], data.y_train[pick]
    probe_seed = config.seed + 5

    start_epoch, step, history, probes = 0, 0, [], []
    if resume:
        ckpt = load_checkpoint(run_dir / "checkpoint.pt", device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(generators, ckpt["rng"])
        start_epoch, step = ckpt["epoch"], ckpt["step"]
        history, probes = ckpt["history"], ckpt["probes"]
    if run_dir is not None:
        write_json(run_dir / "config.json", config.to_dict())
    if step == 0 and config.probe_every:
        probes.append(_probe(model, rule, probe_x, probe_y, probe_seed, device, 0, 0))

    params = dict(model.named_parameters())
    n_batches = math.ceil(n / config.batch_size)
    elapsed = history[-1]["seconds"] if history else 0.0
    for epoch in range(start_epoch, config.epochs):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=generators["shuffle"]).to(device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        first_bad = torch.full((), -1, dtype=torch.long, device=device)
        bar = tqdm(
            range(n_batches),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not progress,
            leave=False,
        )
        for i in bar:
            idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
            x = training_batch(config.augment, data.x_train, idx, generators)
            result = rule.directions(model, x, data.y_train[idx], generators["rule"])
            for name, direction in result.directions.items():
                params[name].grad = direction
            if config.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            rule.after_step(model, result)
            step += 1
            bad = ~torch.isfinite(result.loss) & (first_bad < 0)
            first_bad = torch.where(bad, step, first_bad)
            loss_sum += result.loss.double() * len(idx)
            probe_now = config.probe_every and step % config.probe_every == 0
            if probe_now or (progress and step % 50 == 0) or i == n_batches - 1:
                _stop_if_nonfinite(first_bad, epoch, history, run_dir)
                if progress:
                    bar.set_postfix(loss=f"{float(result.loss):.4f}")
            if probe_now:
                probes.append(
                    _probe(model, rule, probe_x, probe_y, probe_seed, device, epoch, step)
                )
        if scheduler is not None:
            scheduler.step()
        elapsed += time.perf_counter() - t0
        row = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": float(loss_sum) / n,
            **{
                f"val_{k}": v
                for k, v in evaluate(model, data.x_val, data.y_val, config.loss).items()
            },
            **{
                f"test_{k}": v
                for k, v in evaluate(model, data.x_test, data.y_test, config.loss).items()
            },
            "seconds": elapsed,
            "mean_hidden_angle": probes[-1]["mean_hidden_angle"] if probes else math.nan,
        }
        history.append(row)
        if run_dir is not None:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": _rng_state(generators),
                "epoch": epoch + 1,
                "step": step,
                "history": history,
                "probes": probes,
            }
            save_checkpoint(run_dir / "checkpoint.pt", state)
            write_jsonl(run_dir / "metrics.jsonl", history)
            write_jsonl(run_dir / "probes.jsonl", probes)
        if on_epoch is not None:
            on_epoch(row)
    return Run(config, model, history, probes)


def _stop_if_nonfinite(first_bad: torch.Tensor, epoch: int, history: list, run_dir) -> None:
    bad_step = int(first_bad)
    if bad_step < 0:
        return
    where = (
        f"the last good checkpoint (epoch {len(history)}) is in {run_dir}"
        if run_dir is not None and history
        else "no checkpoint was written"
    )
    raise DivergedError(
        f"the loss became NaN or inf at epoch {epoch + 1}, step {bad_step}; the run stopped and "
        f"{where}. Lower the learning rate or set grad_clip"
    )
