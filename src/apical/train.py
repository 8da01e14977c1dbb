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
from apical.keyed import example_keys
from apical.metrics import alignment, evaluate, mean_hidden_angle
from apical.models import build_model
from apical.optim import DecoupledMomentumSGD
from apical.params import param_groups
from apical.replicas import replicate
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
    train_size: int | None = None  # train on the first N of the (shuffled) training split
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
    # replicas (apical.replicas): one network per entry of `seeds` (its initialisation, data
    # order and probe batch), trained side by side; `seed` then keys only the validation
    # split. `lr_scales` multiplies each replica's learning rates (sgd without weight decay
    # or decoupled_sgd, where scaling the direction is exactly scaling the lr).
    seeds: list[int] | None = None
    lr_scales: list[float] | None = None
    probe_every: int = 100
    probe_size: int = 512
    probe_epochs: bool = False  # also probe at the end of every epoch
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
        if self.seeds is not None:
            self._check_replicas()
        elif self.lr_scales is not None:
            raise ApicalError("lr_scales needs seeds (one learning-rate scale per replica)")
        for name in ("lr", "epochs", "batch_size"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ApicalError(f"{name} must be a positive number, got {value!r}")

    def _check_replicas(self) -> None:
        seeds, scales = self.seeds, self.lr_scales
        if not seeds or not all(isinstance(v, int) for v in seeds):
            raise ApicalError(f"seeds must be a non-empty list of integers, got {seeds!r}")
        if scales is not None and not all(v > 0 and math.isfinite(v) for v in scales):
            raise ApicalError(f"lr_scales must be positive finite numbers, got {scales!r}")
        if scales is not None and len(scales) != len(seeds):
            raise ApicalError(
                f"lr_scales has {len(scales)} entries for {len(seeds)} seeds; give one per seed"
            )
        if self.augment != "none" or self.grad_clip:
            raise ApicalError("replicas (seeds) train without augmentation and grad_clip")
        scaled = scales is not None and any(v != 1 for v in scales)
        plain_sgd = self.optimizer == "sgd" and self.weight_decay == 0
        if scaled and not (plain_sgd or self.optimizer == "decoupled_sgd"):
            raise ApicalError(
                "lr_scales needs optimizer sgd without weight decay, or decoupled_sgd (where a "
                "scaled direction is a scaled learning rate)"
            )

    @property
    def replicas(self) -> int | None:
        return len(self.seeds) if self.seeds is not None else None


@dataclass
class Run:
    """What `train` returns: the trained model and the rows written to the run folder."""

    config: TrainConfig
    model: nn.Module
    history: list[dict[str, Any]]
    probes: list[dict[str, Any]]


DATA_FIELDS = (
    "dataset", "data_dir", "val_size", "train_size", "seed", "standardize", "image_size",
)  # fmt: skip


def clip_grads(model: nn.Module, max_norm: float) -> None:
    """clip_grad_norm_ over every `.grad` (a learned feedback tensor's direction counted as
    its own term, as it moves its tensor), scaling each tensor once where parameters share
    one (`apical.rules.base.weight_direction`)."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = nn.utils.get_total_norm([p.grad for p in params])
    once = list({id(p.grad): p for p in params}.values())
    nn.utils.clip_grads_with_norm_(once, max_norm, norm)


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
    if config.train_size is None:
        return data
    if not 0 < config.train_size <= len(data.x_train):
        raise ApicalError(
            f"train_size {config.train_size} is not between 1 and the {len(data.x_train)} "
            f"training examples of {config.dataset}"
        )
    keep = slice(0, config.train_size)  # the split is already a seeded permutation
    return dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])


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


def _probe(model, rule, x, y, seed, device, epoch, step, config) -> list[dict[str, Any]]:
    """Probe rows: one, or one per replica (with its seed and lr scale)."""
    rows = alignment(model, rule, x, y, torch.Generator(device).manual_seed(seed))
    tags = _replica_tags(config)
    return [
        {
            "epoch": epoch,
            "step": step,
            "images": step * config.batch_size,
            **tag,
            "mean_hidden_angle": mean_hidden_angle(model, layers),
            "layers": layers,
        }
        for tag, layers in zip(tags, rows if isinstance(rows, list) else [rows], strict=True)
    ]


def _replica_tags(config: TrainConfig) -> list[dict[str, Any]]:
    """What tells a replica's rows apart ([{}] without replicas)."""
    if config.seeds is None:
        return [{}]
    scales = config.lr_scales or [1.0] * len(config.seeds)
    return [
        {"replica": r, "seed": s, "lr_scale": c}
        for r, (s, c) in enumerate(zip(config.seeds, scales, strict=True))
    ]


def _direction_scales(config: TrainConfig, model: nn.Module) -> dict[str, torch.Tensor] | None:
    """Per-parameter (R, 1, ...) multipliers from lr_scales (None: all ones)."""
    if config.lr_scales is None or all(v == 1 for v in config.lr_scales):
        return None
    out = {}
    for name, p in model.named_parameters():
        scale = torch.tensor(config.lr_scales, dtype=p.dtype, device=p.device)
        out[name] = scale.reshape(-1, *([1] * (p.dim() - 1)))
    return out


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
    reps = config.replicas
    seeds = config.seeds if reps is not None else [config.seed]
    generators = {
        "rule": torch.Generator(device).manual_seed(config.seed + 2),
        "augment": torch.Generator(device).manual_seed(config.seed + 6),
        "decode": torch.Generator().manual_seed(config.seed + 7),
    }
    shuffles = [f"shuffle{r}" if reps is not None else "shuffle" for r in range(len(seeds))]
    for key, s in zip(shuffles, seeds, strict=True):
        generators[key] = torch.Generator().manual_seed(s + 3)
    n = len(data.x_train)
    picks = [
        torch.randperm(n, generator=torch.Generator().manual_seed(s + 4))[: config.probe_size]
        for s in seeds
    ]
    pick = (torch.stack(picks) if reps is not None else picks[0]).to(device)
    probe_x, probe_y = data.x_train[pick], data.y_train[pick]
    probe_seed = config.seed + 5
    scales = _direction_scales(config, model)
    tags = _replica_tags(config)

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

    def probe(epoch: int) -> None:
        probes.extend(
            _probe(model, rule, probe_x, probe_y, probe_seed, device, epoch, step, config)
        )

    if step == 0 and (config.probe_every or config.probe_epochs):
        probe(0)

    params = dict(model.named_parameters())
    n_batches = math.ceil(n / config.batch_size)
    elapsed = history[-1]["seconds"] if history else 0.0
    shape = () if reps is None else (reps,)
    first_bad = torch.full(shape, -1, dtype=torch.long, device=device)
    if history and reps is not None:  # replicas that diverged before the checkpoint
        last = history[-reps:]
        first_bad = torch.tensor([r.get("diverged_step", -1) for r in last], device=device)
    for epoch in range(start_epoch, config.epochs):
        model.train()
        t0 = time.perf_counter()
        perm = torch.stack([torch.randperm(n, generator=generators[k]) for k in shuffles])
        perm = (perm if reps is not None else perm[0]).to(device)
        loss_sum = torch.zeros(shape, dtype=torch.float64, device=device)
        bar = tqdm(
            range(n_batches),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not progress,
            leave=False,
        )
        for i in bar:
            idx = perm[..., i * config.batch_size : (i + 1) * config.batch_size]
            x = training_batch(config.augment, data.x_train, idx, generators)
            keyed = {"keys": example_keys(config.seed, epoch, idx)} if rule.keyed else {}
            # free the last step's directions (its .grad and `result`) before this step's
            # are made: the heap stays steady, where the allocator would otherwise return
            # memory to the OS and page-fault it back every step
            optimizer.zero_grad(set_to_none=True)
            result = None
            result = rule.directions(model, x, data.y_train[idx], generators["rule"], **keyed)
            for name, direction in result.directions.items():
                params[name].grad = direction if scales is None else direction * scales[name]
            if config.grad_clip:
                clip_grads(model, config.grad_clip)
            optimizer.step()
            rule.after_step(model, result)
            step += 1
            bad = ~torch.isfinite(result.loss) & (first_bad < 0)
            first_bad = torch.where(bad, step, first_bad)
            loss_sum += result.loss.double() * idx.shape[-1]
            probe_now = config.probe_every and step % config.probe_every == 0
            if probe_now or (progress and step % 50 == 0) or i == n_batches - 1:
                _stop_if_nonfinite(first_bad, epoch, run_dir)
                if progress:
                    bar.set_postfix(loss=f"{float(result.loss.mean()):.4f}")
            if probe_now:
                probe(epoch)
        if scheduler is not None:
            scheduler.step()
        elapsed += time.perf_counter() - t0
        if config.probe_epochs and not probe_now:
            probe(epoch + 1)
        splits = {"val": (data.x_val, data.y_val), "test": (data.x_test, data.y_test)}
        evals = {
            f"{split}_{k}": v
            for split, (xs, ys) in splits.items()
            for k, v in evaluate(model, xs, ys, config.loss, replicas=reps).items()
        }
        losses, diverged = (loss_sum / n).tolist(), first_bad.tolist()
        angles = [p["mean_hidden_angle"] for p in probes[-len(tags) :]] if probes else None
        rows = []
        for r, tag in enumerate(tags):
            pick_r = (lambda v, r=r: v[r]) if reps is not None else (lambda v: v)
            row = {
                "epoch": epoch + 1,
                "step": step,
                **tag,
                "train_loss": pick_r(losses),
                **{k: pick_r(v) for k, v in evals.items()},
                "seconds": elapsed,
                "mean_hidden_angle": angles[r] if angles else math.nan,
            }
            if reps is not None and diverged[r] >= 0:
                row["diverged_step"] = diverged[r]
            rows.append(row)
        history.extend(rows)
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
            for row in rows:
                on_epoch(row)
    return Run(config, model, history, probes)


def _stop_if_nonfinite(first_bad: torch.Tensor, epoch: int, run_dir) -> None:
    """Stop when the loss went NaN or inf (for replicas: when every replica's did; a
    replica that diverged alone is marked in its rows and the others go on)."""
    if not bool((first_bad >= 0).all()):
        return
    bad_step = int(first_bad.max())
    where = (
        f"the last good checkpoint (epoch {epoch}) is in {run_dir}"
        if run_dir is not None and epoch > 0
        else "no checkpoint was written"
    )
    raise DivergedError(
        f"the loss became NaN or inf at epoch {epoch + 1}, step {bad_step}; the run stopped and "
        f"{where}. Lower the learning rate or set grad_clip"
    )
