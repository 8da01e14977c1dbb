"""Continual learning on permuted images (Iyer et al. 2022, §4.1; docs/models/active-dendrites.md).

Task t permutes the pixels of every image by a fixed random permutation (task 0 included),
drawn from the run's seed. A task's context is its prototype: the mean training image of
the task. Rows are [image | context]: training rows carry their own task's prototype; the
validation and test sets hold every task seen so far (0..t), each image with the prototype
nearest to it (Euclidean), as at test time in the paper, so a run's test accuracy is the
mean accuracy over all tasks seen. `TrainConfig.task` selects the task and
`TrainConfig.init_from` starts from the model that learned the tasks before it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from apical.data import Dataset
from apical.errors import ApicalError


def permutation(task: int, n: int, seed: int) -> Tensor:
    """The pixel order of `task` (a permutation of n), fixed by (seed, task)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + task))


def nearest_prototype(x: Tensor, prototypes: Tensor, chunk: int = 8192) -> Tensor:
    """Index of the prototype (T, D) nearest to each row of x (N, D)."""
    return torch.cat([torch.cdist(part, prototypes).argmin(1) for part in x.split(chunk)])


def _flat(x: Tensor) -> Tensor:
    return x.reshape(len(x), -1)


def _orders_and_prototypes(data: Dataset, task: int, seed: int) -> tuple[list[Tensor], Tensor]:
    """The pixel orders of tasks 0..task and their prototypes (task + 1, D)."""
    if not isinstance(data.x_train, Tensor):
        raise ApicalError(f"continual tasks need a dataset held in memory, not {data.name}")
    n = math.prod(data.input_shape)
    orders = [permutation(t, n, seed) for t in range(task + 1)]
    mean = _flat(data.x_train).mean(0)
    return orders, torch.stack([mean[order] for order in orders])


def prototypes(data: Dataset, tasks: int, seed: int) -> Tensor:
    """The contexts of tasks 0..tasks-1: their prototypes, (tasks, D)."""
    return _orders_and_prototypes(data, tasks - 1, seed)[1]


class TaskRows:
    """The rows [image permuted by its task | context] of tasks 0..T-1 over the same N
    images (task t holds rows t N .. (t + 1) N - 1), each with the prototype nearest to its
    permuted image as context: a tensor-like view, made when indexed, whose memory does not
    grow with T (100 tasks of MNIST's test set held as one tensor would take 6 GB)."""

    def __init__(self, images: Tensor, orders: Tensor, prototypes: Tensor) -> None:
        self.images, self.orders, self.prototypes = images, orders, prototypes
        self.nearest = torch.cat([nearest_prototype(images[:, order], prototypes)
                                  for order in orders])  # fmt: skip

    def __len__(self) -> int:
        return len(self.orders) * len(self.images)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), self.images.shape[1] + self.prototypes.shape[1]))

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> TaskRows:
        moved = TaskRows.__new__(TaskRows)
        for k in ("images", "orders", "prototypes", "nearest"):
            setattr(moved, k, getattr(self, k).to(device))
        return moved

    def __getitem__(self, idx) -> Tensor:
        if isinstance(idx, tuple):  # rows first, then the rest of the index
            return self[idx[0]][(slice(None), *idx[1:])]
        if isinstance(idx, slice):
            r = range(len(self))[idx]
            rows = torch.arange(r.start, r.stop, r.step, device=self.device)
        else:
            rows = torch.arange(len(self), device=self.device)[idx]
        flat = rows.reshape(-1)
        task, image = flat // len(self.images), flat % len(self.images)
        permuted = self.images[image].gather(1, self.orders[task])
        out = torch.cat([permuted, self.prototypes[self.nearest[flat]]], 1)
        return out[0] if rows.dim() == 0 else out


def task_data(data: Dataset, task: int, seed: int) -> Dataset:
    """The dataset of `task`: its training rows with their prototype, validation and test
    rows of tasks 0..task with the nearest prototype as context (`TaskRows`)."""
    orders, prototypes = _orders_and_prototypes(data, task, seed)
    train = _flat(data.x_train)[:, orders[task]]
    return Dataset(
        f"{data.name} task {task}",
        torch.cat([train, prototypes[task].expand_as(train)], 1),
        data.y_train,
        TaskRows(_flat(data.x_val), torch.stack(orders), prototypes),
        data.y_val.repeat(task + 1),
        TaskRows(_flat(data.x_test), torch.stack(orders), prototypes),
        data.y_test.repeat(task + 1),
        data.n_classes,
    )


def context_accuracy(data: Dataset, task: int, seed: int) -> float:
    """Fraction of test images of tasks 0..task whose nearest prototype is their own task's."""
    orders, prototypes = _orders_and_prototypes(data, task, seed)
    rows = TaskRows(_flat(data.x_test), torch.stack(orders), prototypes)
    truth = torch.arange(task + 1).repeat_interleave(len(data.x_test))
    return float((rows.nearest == truth).float().mean())
