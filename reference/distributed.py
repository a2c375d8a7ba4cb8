"""Data-parallel training: one process, or several under ``torchrun``.

Every process draws from the same seeded generator, advancing it as for the
whole global batch ``X [T, B, I]``, but builds and runs only its contiguous rows
``r*B/W .. (r+1)*B/W`` (rank ``r`` of ``W`` processes; :meth:`Parallel.rows`,
:meth:`~lsnn.reference.tasks.base.Task.batch`). The loss is combined from what
each process computes on its rows, so its value is the single-process loss of
the global batch ``L``:

* the task loss is a mean over ``n_r`` terms on rank ``r``
  (:meth:`~lsnn.reference.tasks.base.Task.loss_terms`); its share of the global
  mean is ``L_r * n_r / N`` with ``N = sum_r n_r`` (a sum over processes, which
  also gives the logged loss and score);
* a mean over the batch, such as the firing rate of each neuron
  ``f = 1/W * sum_r f_r`` (equal slices), is all-reduced;

both in one collective per step (:meth:`Parallel.reduce`): each collective
waits for the slowest process and costs a round trip.

Both give this process's own part of the gradient only, so backpropagating
its terms on rank ``r`` gives ``g_r``, this slice's share of the global gradient
``g = sum_r g_r``. DistributedDataParallel averages the
gradients over processes, so each process backpropagates ``W * L``
(:meth:`Parallel.backward`): the averaged gradient is ``1/W * sum_r W g_r = g``,
the single-process gradient of the global batch (up to float32 summation
order). Gradient clipping and the optimiser step then run identically on every
process.

:class:`OneProcess` and :class:`ProcessGroup` have the same methods, so the
trainer runs the same code on one process or many; :func:`session` picks one
from the environment ``torchrun`` sets (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``): the ``gloo`` backend on the CPU, ``nccl`` for a model on CUDA.
On the CPU each process of a machine keeps to its own equal share of the
machine's CPUs (:func:`cpu_share`).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Protocol

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError

#: what torchrun sets in each process it starts
TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


class Parallel(Protocol):
    """The processes training one model together."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """The process that writes files and shows progress (rank 0)."""

    def check_batch(self, batch_size: int) -> None:
        """Raise :class:`ConfigError` unless ``batch_size`` divides among the processes."""

    def rows(self, batch_size: int) -> slice:
        """This process's contiguous rows of a global batch of ``batch_size`` sequences."""

    def reduce(self, values: tuple[float, ...], mean: torch.Tensor | None = None
               ) -> tuple[tuple[float, ...], torch.Tensor | None]:
        """Each of ``values`` summed over processes, and the mean of ``mean`` over them (its
        gradient flows into this process's share ``mean / W``), in one collective."""

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate the global ``loss`` so the gradients averaged over processes are its gradients."""

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train (the model itself, or its DistributedDataParallel wrapper)."""

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every process."""

    def barrier(self) -> None:
        """Wait until every process gets here."""


class OneProcess:
    """Training in this process alone: every method is the identity."""

    rank, world_size = 0, 1
    is_main = True

    def check_batch(self, batch_size: int) -> None:
        pass

    def rows(self, batch_size: int) -> slice:
        return slice(0, batch_size)

    def reduce(self, values: tuple[float, ...], mean: torch.Tensor | None = None):
        return tuple(values), mean

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def broadcast(self, obj):
        return obj

    def barrier(self) -> None:
        pass


class ProcessGroup:
    """Rank ``rank`` of ``world_size`` processes of an initialised ``torch.distributed`` group."""

    def __init__(self, device: torch.device, local_rank: int):
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.device, self.local_rank = device, local_rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise ConfigError(f"batch size {batch_size} does not divide among the {self.world_size} processes of "
                              f"torchrun (every process takes an equal slice of the global batch); choose a multiple "
                              f"of {self.world_size}")

    def rows(self, batch_size: int) -> slice:
        self.check_batch(batch_size)
        n = batch_size // self.world_size
        return slice(self.rank * n, (self.rank + 1) * n)

    def reduce(self, values: tuple[float, ...], mean: torch.Tensor | None = None):
        k = len(values)
        parts = [torch.tensor(values, dtype=torch.float64)]
        if mean is not None:
            share = mean / self.world_size
            parts.append(share.detach().reshape(-1).to(torch.float64))  # exact: float32 in float64
        total = torch.cat(parts)
        dist.all_reduce(total)
        sums = tuple(total[:k].tolist())
        if mean is None:
            return sums, None
        reduced = total[k:].to(share.dtype).reshape(share.shape)
        return sums, reduced + (share - share.detach())  # the value of the mean; the gradient of the share

    def backward(self, loss: torch.Tensor) -> None:
        (loss * self.world_size).backward()

    def wrap(self, model: nn.Module) -> nn.Module:
        ids = [self.local_rank] if self.device.type == "cuda" else None
        # the buffers (masks, decay factors) are constants: no need to broadcast them at every step
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)

    def broadcast(self, obj):
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()


def under_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (its environment names a world size)."""
    return "WORLD_SIZE" in os.environ


def is_main_process() -> bool:
    """Whether this process is the one that reports (rank 0, or not under torchrun)."""
    return int(os.environ.get("RANK", "0")) == 0


def backend(device: torch.device) -> str:
    """The ``torch.distributed`` backend for a model on ``device``: nccl on CUDA, gloo on the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def _local_rank() -> int:
    missing = [v for v in TORCHRUN_VARIABLES if v not in os.environ]
    if missing:
        raise ConfigError(f"torch.distributed environment incomplete: {', '.join(missing)} not set "
                          f"(start the processes with torchrun)")
    try:
        return int(os.environ["LOCAL_RANK"])
    except ValueError:
        raise ConfigError(f"LOCAL_RANK={os.environ['LOCAL_RANK']!r} is not an integer") from None


def cpu_share(cpus: list[int], local_rank: int, local_world_size: int) -> list[int]:
    """Local rank ``local_rank``'s equal, contiguous share of ``cpus`` among ``local_world_size``
    processes (all of ``cpus`` when there are fewer CPUs than processes)."""
    if local_world_size > len(cpus):
        return cpus
    n = len(cpus) // local_world_size
    return cpus[local_rank * n:(local_rank + 1) * n]


def _pin(local_rank: int) -> None:
    """Keep the calling thread (the one that trains) and the threads it starts from now on (torch's
    intra-op pool) on this process's own share of the CPUs it may use (those ``taskset`` left it):
    processes of one machine that the scheduler lets move onto each other's cores slow each other
    down (measured: two processes of the sMNIST LSNN on two cores, forward and backward 5-8%
    faster pinned). The process group's threads, started before, are left free: confined to the
    core of a trainer that waits for them, a gloo all-reduce took 3.4 ms instead of 0.3 ms."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    mine = cpu_share(sorted(os.sched_getaffinity(0)), local_rank, local_world)
    os.sched_setaffinity(0, mine)
    if torch.get_num_threads() > len(mine):
        torch.set_num_threads(len(mine))


@contextmanager
def session(device: torch.device = torch.device("cpu")) -> Iterator[Parallel]:
    """The processes of this run: :class:`OneProcess` unless started by torchrun, else this
    process's :class:`ProcessGroup` (initialised here from the environment unless the caller did,
    and then also closed here)."""
    if not under_torchrun():
        yield OneProcess()
        return
    local_rank = _local_rank()
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend(device))
    if device.type == "cpu":
        _pin(local_rank)  # after the process group has started its threads: they stay free
    try:
        yield ProcessGroup(device, local_rank)
    finally:
        if owned:
            dist.destroy_process_group()
