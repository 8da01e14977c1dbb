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


def task_data(data: Dataset, task: int, seed: int) -> Dataset:
    """The dataset of `task`: its training rows with their prototype, validation and test
    rows of tasks 0..task with the nearest prototype as context."""
    orders, prototypes = _orders_and_prototypes(data, task, seed)

    def seen(x: Tensor) -> Tensor:
        images = torch.cat([_flat(x)[:, order] for order in orders])
        return torch.cat([images, prototypes[nearest_prototype(images, prototypes)]], 1)

    train = _flat(data.x_train)[:, orders[task]]
    return Dataset(
        f"{data.name} task {task}",
        torch.cat([train, prototypes[task].expand_as(train)], 1),
        data.y_train,
        seen(data.x_val),
        data.y_val.repeat(task + 1),
        seen(data.x_test),
        data.y_test.repeat(task + 1),
        data.n_classes,
    )


def context_accuracy(data: Dataset, task: int, seed: int) -> float:
    """Fraction of test images of tasks 0..task whose nearest prototype is their own task's."""
    orders, prototypes = _orders_and_prototypes(data, task, seed)
    images = torch.cat([_flat(data.x_test)[:, order] for order in orders])
    truth = torch.arange(task + 1).repeat_interleave(len(data.x_test))
    return float((nearest_prototype(images, prototypes) == truth).float().mean())
