"""Data-parallel training over `torch.distributed` processes, started by `torchrun` (or by
`apical train --nproc N`, which starts it).

Every process holds the whole model, data and random generators, and all draw the same
numbers, so they stay equal without ever sending weights. Each step every process takes
its contiguous shard of the batch (sizes differ by at most one; an augmented batch is
drawn whole, so that the generators stay in step), runs the rule on the shard, and one
all-reduce combines the shards' results by the rule's batch convention (`Rule.reduction`):

    mean:  d = sum_r (n_r / N) d_r         sum:  d = sum_r d_r

(n_r examples on process r, N in the batch), for every direction and buffer increment
(burstprop's Z); the loss is always the weighted mean. Per-example state carried from
step to step (`Step.replacements`, batch on dim 0: the segregated-dendrite simulation) is
gathered in rank order, so every process holds the whole batch's state, as one process
would. Random draws keyed per example (`apical.keyed`) do not depend on the shard, so a
sharded run computes what one process computes, up to the rounding of the sums. Rules
that draw batch-shaped noise from a generator (node perturbation, the microcircuit's
noise) and BatchNorm's batch statistics see the shard instead: such runs are as valid,
not equal to one process's.

Process 0 (the lead) writes the run folder, evaluates and probes; the others read the
folder only to resume. A signal on any process stops all of them at the same step (the
stop flag rides in the step's all-reduce). Backends: NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import signal
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from apical.errors import ApicalError

MESSAGES = "APICAL_LAUNCHER_MESSAGES"  # the folder where `launch`'s processes leave their line


@dataclass(frozen=True)
class Group:
    """This process's place in the run: its rank among `world` processes, its rank on its
    own node (`local`, which picks its GPU) and the device it trains on."""

    rank: int
    world: int
    local: int
    device: torch.device

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This process's contiguous part of a batch of n (torch.tensor_split's split)."""
        q, r = divmod(n, self.world)
        start = self.rank * q + min(self.rank, r)
        return slice(start, start + q + (self.rank < r))

    def sizes(self, n: int) -> list[int]:
        q, r = divmod(n, self.world)
        return [q + (k < r) for k in range(self.world)]


def environment() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) as torchrun sets them; None outside torchrun or for
    a world of one process (which trains as a plain run)."""
    if "WORLD_SIZE" not in os.environ:
        return None
    try:
        world = int(os.environ["WORLD_SIZE"])
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise ApicalError(
            "WORLD_SIZE is set but RANK is missing or not a number; start distributed runs "
            "with torchrun (or apical train --nproc N), which sets both"
        ) from None
    return None if world == 1 else (rank, world, local)


def speaks() -> bool:
    """Whether this process speaks for its run: a plain process, or a distributed run's
    process 0."""
    return os.environ.get("RANK", "0") == "0"


def join(device: torch.device) -> Group:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on the CPU)."""
    place = environment()
    if place is None:
        raise ApicalError("not started by torchrun: no distributed environment")
    rank, world, local = place
    if MESSAGES in os.environ and threading.current_thread() is threading.main_thread():
        # the launcher's SIGTERM (sent to every process once one fails) must not end this
        # one before it has left its line; inside the training loop SIGTERM stops at a
        # step as always (apical.interrupts), and a process that lingers gets SIGKILL
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **kwargs)
        atexit.register(leave)
    return Group(rank, world, local, device)


def leave() -> None:
    """Destroy the process group while the interpreter is whole: left to interpreter
    shutdown, gloo's worker threads are torn down unjoined and the process aborts now and
    then ("terminate called without an active exception", SIGABRT; pytorch#190489)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def check_batches(group: Group, n_train: int, batch_size: int) -> None:
    """Every batch (the last, smaller one included) must give every process an example."""
    last = n_train % batch_size
    smallest = min(batch_size, n_train) if last == 0 else min(last, batch_size)
    if smallest < group.world:
        raise ApicalError(
            f"a batch of {smallest} examples cannot be split over {group.world} processes "
            f"({n_train} training examples in batches of {batch_size}); use fewer processes "
            "or a batch size whose last batch has at least one example per process"
        )


def agree(group: Group, flag: bool) -> bool:
    """Whether any process says yes (a collective: every process must call it)."""
    t = torch.tensor([float(flag)], device=group.device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def combine(
    directions: dict[str, Tensor],
    increments: dict[str, Tensor],
    loss: Tensor,
    weight: float,
    loss_weight: float,
    stop: bool,
) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor, bool]:
    """One all-reduce of every direction and increment times `weight` (n_r / N for batch
    means, 1 for sums), the loss times `loss_weight` (n_r / N) and the stop flag; tensors
    shared between names (a learned feedback's direction is its weight's) are sent once.
    Sparse directions (rows of active-dendrite segments) are summed dense and made sparse
    again over the rows any process touched."""
    named = {**{("d", k): v for k, v in directions.items()},
             **{("i", k): v for k, v in increments.items()}}  # fmt: skip
    unique: dict[int, Tensor] = {}
    for v in named.values():
        unique.setdefault(id(v), v)
    dense, rows = {}, {}
    for key, v in unique.items():
        if v.is_sparse:
            v = v.coalesce()
            mask = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
            mask[v.indices()[0]] = 1
            rows[key] = mask
            v = v.to_dense()
        dense[key] = v
    flag = torch.tensor([float(stop)], dtype=loss.dtype, device=loss.device)
    parts = [*dense.values(), *rows.values(), loss.reshape(-1), flag]
    scales = [weight] * len(dense) + [1.0] * len(rows) + [loss_weight, 1.0]
    summed = _all_reduce(parts, scales)
    keys = [*dense, *(("rows", k) for k in rows)]
    out = dict(zip(keys, summed[: len(keys)], strict=True))
    loss_sum, flag_sum = summed[-2], summed[-1]
    for key in rows:
        touched = out.pop(("rows", key)).nonzero().flatten()
        values = out[key].index_select(0, touched)
        out[key] = torch.sparse_coo_tensor(touched[None], values, unique[key].shape,
                                           is_coalesced=True)  # fmt: skip
    pick = {name: out[id(v)] for name, v in named.items()}
    return (
        {k: pick[("d", k)] for k in directions},
        {k: pick[("i", k)] for k in increments},
        loss_sum.reshape(loss.shape),
        bool(flag_sum.item() > 0),
    )


def gather_batch(group: Group, tensors: dict[str, Tensor], n: int) -> dict[str, Tensor]:
    """Each process's shard (batch on dim 0) of every tensor, joined in rank order into
    the whole batch of n on every process."""
    sizes = group.sizes(n)
    out = {}
    for k, t in tensors.items():
        padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=t.device)
        padded[: len(t)] = t
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        out[k] = torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])
    return out


def broadcast_flag(group: Group, flag: bool) -> bool:
    """The lead's value of `flag`, on every process."""
    t = torch.tensor([float(flag)], device=group.device)
    dist.broadcast(t, 0)
    return bool(t.item() > 0)


def peer_gone(e: BaseException) -> bool:
    """Whether a collective failed because another process is gone (gloo raises a plain
    RuntimeError naming the closed connection)."""
    text = str(e)
    return isinstance(e, dist.DistError) or (
        isinstance(e, RuntimeError)
        and any(s in text for s in ("Connection closed", "Connection reset", "gloo", "NCCL"))
    )


def _all_reduce(tensors: list[Tensor], scales: list[float]) -> list[Tensor]:
    """Sum every tensor times its scale over the processes: one collective per dtype, on
    a flat buffer written in one pass (the sums come back as views of it)."""
    out: list[Tensor | None] = [None] * len(tensors)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(t.dtype, []).append(i)
    for dtype, idx in by_dtype.items():
        sizes = [tensors[i].numel() for i in idx]
        flat = torch.empty(sum(sizes), dtype=dtype, device=tensors[idx[0]].device)
        views = [
            part.view(tensors[i].shape) for i, part in zip(idx, flat.split(sizes), strict=True)
        ]
        for i, view in zip(idx, views, strict=True):
            torch.mul(tensors[i], scales[i], out=view) if scales[i] != 1 else view.copy_(tensors[i])
        dist.all_reduce(flat)
        for i, view in zip(idx, views, strict=True):
            out[i] = view
    return out  # type: ignore[return-value]


def launch(nproc: int, args: list[str]) -> int:
    """Run `python -m apical.cli ARGS` as nproc processes on this machine (as `torchrun
    --standalone --nproc-per-node N` would) and return the exit code. A failure is one
    line: the lead's (each process leaves its line in a folder, `tell_launcher`), else
    another process's, else the name of the signal that ended a process (torchrun's own
    report is left out)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc,
                          run_id=str(uuid.uuid4()), rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="apical-launch-") as folder:
        os.environ[MESSAGES] = folder
        try:
            elastic_launch(config, sys.executable)("-m", "apical.cli", *args)
            failures = {}
        except ChildFailedError as e:
            failures = {rank: f.exitcode for rank, f in e.failures.items()}
        finally:
            del os.environ[MESSAGES]
        said = {int(p.name): p.read_text().strip() for p in Path(folder).glob("[0-9]*")}
    if said:
        print(said[min(said)], file=sys.stderr)
    if not failures:
        return 0
    if not said:
        rank, code = min(failures.items(), key=lambda kv: (kv[1] >= 0, kv[0]))
        how = (f"was ended by {signal.Signals(-code).name}" if code < 0
               else f"exited with status {code}")  # fmt: skip
        print(
            f"error: process {rank} of the {nproc} {how}; the run stopped. Its run folder "
            "holds the last epoch's checkpoint: continue with --resume on the same number of "
            "processes",
            file=sys.stderr,
        )
    positive = [c for c in failures.values() if c > 0]
    return positive[0] if positive else 2


def tell_launcher(line: str) -> bool:
    """Leave this process's one line for `launch` (False when not started by it)."""
    folder = os.environ.get(MESSAGES)
    if folder is None:
        return False
    (Path(folder) / os.environ.get("RANK", "0")).write_text(line + "\n")
    return True
