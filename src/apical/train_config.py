"""TrainConfig: everything a training run depends on (its run folder's config.json).

Every field has a type and, where it can be out of range, a Range (apical.config), so a
wrong value is refused with one line before any work starts, from the command line, a
TOML file or Python alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from apical.config import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range, check_fields, from_dict
from apical.errors import ConfigError

Seed = Annotated[int, Range(ge=0, lt=2**32)]
FLOAT32_MAX = 3.4e38  # a learning rate must be representable in the parameters' float32
LEARNING_RATE = Range(gt=0, lt=FLOAT32_MAX)

# Fields that say where a run's data lives, what runs it and how often it is measured, not
# what the run is: a run resumes with other values of these.
LOCATION_FIELDS = ("data_dir", "device", "run_dir", "eval_every", "tensorboard")
# The fields that decide which dataset (and split) a run trains on.
DATA_FIELDS = (
    "dataset", "data_dir", "val_size", "train_size", "seed", "standardize", "image_size",
    "task",
)  # fmt: skip


@dataclass
class TrainConfig:
    """A training run: data, model, rule, optimizer, schedule, replicas, probes, folder."""

    dataset: str = "digits"
    data_dir: str | None = None
    # held out of the training set for validation: a count, or a fraction of it (0: none)
    val_size: Annotated[int, NON_NEGATIVE] | Annotated[float, Range(ge=0, lt=1)] = 0.1
    train_size: Annotated[int, AT_LEAST_ONE] | None = None  # the first N of the training split
    standardize: bool = True
    image_size: Annotated[int, AT_LEAST_ONE] = 64
    augment: Literal["none", "crop_flip", "resized_crop_flip"] = "none"
    # continual learning (apical.continual): train on permuted task `task` of the dataset;
    # validation and test cover tasks 0..task. `init_from`: a finished run folder whose
    # model this run starts from (the run of the task before).
    task: Annotated[int, NON_NEGATIVE] | None = None
    init_from: str | None = None
    # Synaptic Intelligence (apical.synaptic_intelligence): the strength c of the penalty
    # that holds each parameter near its value after the task before, in proportion to its
    # importance (0: off), and the damping xi of the importances
    si_strength: Annotated[float, NON_NEGATIVE] = 0.0
    si_damping: Annotated[float, POSITIVE] = 0.1
    model: str = "mlp"
    model_options: dict[str, Any] = field(default_factory=dict)
    rule: str = "backprop"
    rule_options: dict[str, Any] = field(default_factory=dict)
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    optimizer: Literal["sgd", "adam", "adamw", "decoupled_sgd"] = "sgd"
    lr: Annotated[float, LEARNING_RATE] = 0.05
    output_lr: Annotated[float, Range(ge=0, lt=FLOAT32_MAX)] | None = None  # None: lr
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[float, NON_NEGATIVE] = 0.0
    schedule: Literal["constant", "cosine", "step"] = "constant"
    step_every: Annotated[int, AT_LEAST_ONE] = 30  # epochs between the drops of schedule "step"
    step_factor: Annotated[float, Range(gt=0, le=1)] = 0.1
    grad_clip: Annotated[float, POSITIVE] | None = None
    epochs: Annotated[int, AT_LEAST_ONE] = 10
    batch_size: Annotated[int, AT_LEAST_ONE] = 64
    seed: Seed = 0
    # replicas (apical.replicas): one network per entry of `seeds` (its initialisation, data
    # order, crops and probe batch), trained side by side; `seed` then keys only the validation
    # split. `lr_scales` multiplies each replica's learning rates (sgd without weight decay
    # or decoupled_sgd, where scaling the direction is exactly scaling the lr).
    seeds: list[Seed] | None = None
    lr_scales: list[Annotated[float, POSITIVE]] | None = None
    probe_every: Annotated[int, NON_NEGATIVE] = 100  # steps between alignment probes (0: none)
    probe_size: Annotated[int, AT_LEAST_ONE] = 512
    probe_epochs: bool = False  # also probe at the end of every epoch
    # epochs between evaluations of the validation and test splits (the last epoch is always
    # evaluated); the rows of the others hold null for them
    eval_every: Annotated[int, AT_LEAST_ONE] = 1
    device: str = "auto"
    run_dir: str | None = None
    # also write the rows as TensorBoard events in RUN/tensorboard (needs run_dir and the
    # tensorboard package: pip install apical[tensorboard])
    tensorboard: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """A config from a dict (a TOML table, config.json): unknown keys and values of the
        wrong type or range are refused with one line."""
        config = from_dict(cls, d)
        config.check()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def replicas(self) -> int | None:
        return len(self.seeds) if self.seeds is not None else None

    def check(self) -> None:
        """Every field's type and range, and the rules between fields (ConfigError)."""
        from apical.data import DATASETS
        from apical.models import MODELS, check_model_options
        from apical.rules import RULES, make_rule

        check_fields(self)
        for what, value, known in (
            ("dataset", self.dataset, DATASETS),
            ("model", self.model, MODELS),
            ("rule", self.rule, RULES),
        ):
            if value not in known:
                raise ConfigError(f"unknown {what} {value!r}; known: {', '.join(known)}")
        if self.run_dir is not None and not self.run_dir.strip():
            raise ConfigError("run_dir is empty; name a folder, or leave it out to save nothing")
        if self.tensorboard and self.run_dir is None:
            raise ConfigError("tensorboard writes into the run folder: set run_dir (--run-dir)")
        if "loss" in self.rule_options:
            raise ConfigError(
                "loss is a config field, not a rule option: set loss (--loss) instead"
            )
        make_rule(self.rule, loss=self.loss, **self.rule_options)  # its options, now
        check_model_options(self.model, self.model_options)
        if self.optimizer == "decoupled_sgd" and self.weight_decay >= 1:
            raise ConfigError(
                f"weight_decay {self.weight_decay:g} of decoupled_sgd multiplies the weights by "
                "1 - weight_decay every step; give a value below 1"
            )
        if self.seeds is not None:
            self._check_replicas()
        elif self.lr_scales is not None:
            raise ConfigError("lr_scales needs seeds (one learning-rate scale per replica)")

    def _check_replicas(self) -> None:
        seeds, scales = self.seeds, self.lr_scales
        if not seeds:
            raise ConfigError("seeds must be a non-empty list of integers, got []")
        if scales is not None and len(scales) != len(seeds):
            raise ConfigError(
                f"lr_scales has {len(scales)} entries for {len(seeds)} seeds; give one per seed"
            )
        if self.augment == "resized_crop_flip" or self.grad_clip:
            raise ConfigError(
                "replicas (seeds) train without grad_clip and resized_crop_flip (images decoded "
                "per batch); train those runs one seed at a time"
            )
        scaled = scales is not None and any(v != 1 for v in scales)
        plain_sgd = self.optimizer == "sgd" and self.weight_decay == 0
        if scaled and not (plain_sgd or self.optimizer == "decoupled_sgd"):
            raise ConfigError(
                "lr_scales needs optimizer sgd without weight decay, or decoupled_sgd (where a "
                "scaled direction is a scaled learning rate)"
            )


def extension_check(config: TrainConfig):
    """The resume check of `epochs` (run_folder.RunFolder.begin): a run may be extended
    (or continued with fewer epochs than configured, if it has not passed them) when the
    schedule does not depend on the length; a cosine schedule does, so it is refused."""

    def check(saved: Any, new: Any) -> str | None:
        if config.schedule == "cosine":
            return (
                f"its cosine schedule anneals over epochs = {saved}, so a run of {new} epochs "
                f"would have had other learning rates from the start; start a new run with "
                f"epochs = {new}, or keep epochs = {saved}"
            )
        return None

    return {"epochs": check}
