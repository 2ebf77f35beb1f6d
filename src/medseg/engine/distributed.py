"""Several processes, one run: torch.distributed mechanics for training and prediction.

``torchrun --nproc-per-node N -m medseg train ...`` (or ``medseg train ... --devices N``, which starts
the same through :mod:`torch.distributed.run`) runs N copies of the training loop. This module holds
everything they need to agree on, so that ``engine/train.py`` reads like the single-process loop:

- :func:`init_distributed`: the process group from torchrun's environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``): NCCL on GPUs, gloo on CPUs; one GPU per local rank.
- :class:`ShardedSampler`: a ``DistributedSampler`` whose order is drawn from (seed, epoch) alike on every
  rank (``set_epoch``), optionally class-weighted, and which can start part-way into an epoch. Rank r
  reads ``order[r::world]`` in consecutive batches, so with the same effective batch an optimiser step
  sees the same images whatever the number of processes.
- :func:`shard` / :func:`gather_in_order`: validation split without padding (``items[rank::world]``) and
  the per-image results put back in dataset order on every rank, so that N processes average exactly the
  numbers one process would, in the same order.
- :meth:`DistContext.agree`: one all-reduce per optimiser step that carries the stop request (SIGTERM on
  any rank) and rank 0's clock (time budget), so every rank stops at the same step.
- Rank-0 writes: callers test :attr:`DistContext.is_main`; no collective is ever called under that test.

Conventions follow PyTorch's DDP tutorial and ``torch.distributed.run`` (docs.pytorch.org/docs/stable/elastic/run.html).
"""

from __future__ import annotations

import datetime
import gc
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

from medseg.engine.runtime import usable_cores
from medseg.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Who this process is among the run's processes (world 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    backend: str | None = None  # None: no process group (one process)
    stop_requested: bool = field(default=False, repr=False)

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Global rank 0: the only process that writes files and logs progress."""
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        """This rank's GPU under NCCL; None lets the runtime choose (CPU for gloo)."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else None

    # ---------------------------------------------------------------- collectives (every rank calls them)
    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """``obj`` from rank ``src`` on every rank (any picklable object)."""
        if not self.enabled:
            return obj
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def agree(self, *main_values: float) -> tuple[bool, list[float]]:
        """(stop: any rank was asked to stop, rank 0's ``main_values``): the same on every rank.

        One all-reduce; call it at every optimiser-step boundary and base every decision that must be
        common (time budget, learning rate by elapsed time) on the values it returns, never on a
        rank's own clock.
        """
        if not self.enabled:
            return self.stop_requested, list(main_values)
        mine = [float(self.stop_requested)] + [v if self.is_main else 0.0 for v in main_values]
        t = torch.tensor(mine, dtype=torch.float64, device=self.device or torch.device("cpu"))
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        stop = bool(t[0].item() > 0)
        self.stop_requested = self.stop_requested or stop
        return stop, t[1:].tolist()

    # ---------------------------------------------------------------- signals
    def stop_on_sigterm(self) -> None:
        """SIGTERM (a scheduler's pre-emption notice, torchrun's shutdown) only sets a flag.

        The training loop reads it through :meth:`agree` at the next step boundary, saves its
        resume state once and returns, so the process exits 0.
        """

        def handler(signum, frame):  # noqa: ARG001
            if not self.stop_requested:
                log.warning("SIGTERM received: stopping at the next step boundary and saving resume state")
            self.stop_requested = True

        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous_handler = signal.signal(signal.SIGTERM, handler)

    def restore_sigterm(self) -> None:
        previous = getattr(self, "_previous_handler", None)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def init_distributed(backend: str | None = None, timeout_min: float = 30.0) -> DistContext:
    """The process group from torchrun's environment; a one-process context without it.

    ``backend``: ``nccl`` when CUDA is available, else ``gloo`` (the default). Under NCCL each local rank
    takes the GPU of its number. Raises :class:`ConfigError` when torchrun starts more processes on a
    node than it has GPUs.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        if local_world > torch.cuda.device_count():
            raise ConfigError(f"{local_world} processes on this node but {torch.cuda.device_count()} GPU(s); "
                              "use --nproc-per-node at most the number of GPUs")
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    return DistContext(rank, world, local_rank, local_world, backend)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group: every rank meets once more, then each destroys its own.

    On the normal path (no exception propagating) the ranks first meet in a barrier, so that no rank
    tears down its gloo connections while a peer still has a collective in flight: a rank that left
    early once made its peer abort at exit (SIGABRT, "terminate called without an active exception")
    after all the work was done. When an exception is propagating, the barrier is skipped (the other
    ranks may never reach it). The group's objects are then freed while the interpreter is fully alive
    rather than during interpreter finalisation.
    """
    if not (ctx.enabled and dist.is_initialized()):
        return
    if sys.exc_info()[0] is None:
        dist.barrier()
    dist.destroy_process_group()
    gc.collect()


def cpu_threads_per_process(ctx: DistContext) -> int:
    """This node's cores shared among its processes (each at least one thread)."""
    return max(1, usable_cores() // max(ctx.local_world, 1))


# -------------------------------------------------------------------------------------- batch sizes
@dataclass(frozen=True)
class BatchPlan:
    """How ``effective`` images per optimiser step are made: ``world`` processes x ``accum`` x ``micro``."""

    micro: int  # images per forward pass on one process
    accum: int  # forward/backward passes per optimiser step
    world: int

    @property
    def effective(self) -> int:
        return self.micro * self.accum * self.world


def plan_batches(batch_size: int, effective: int | None, world: int, n_train: int) -> BatchPlan:
    """Micro-batch and accumulation steps so that one optimiser step sees ``effective`` images.

    ``effective`` None: every process takes ``batch_size`` images per step (standard DDP: the step
    grows with the number of processes). Otherwise the fewest accumulation steps whose micro-batch fits in
    ``batch_size``. Raises :class:`ConfigError` when ``effective`` cannot be split evenly.
    """
    batch_size = max(1, min(batch_size, math.ceil(n_train / world)))
    if effective is None:
        return BatchPlan(batch_size, 1, world)
    if effective % world:
        raise ConfigError(f"train.effective_batch_size={effective} cannot be split over {world} processes; "
                          f"use a multiple of {world}")
    per_rank = effective // world
    accum = math.ceil(per_rank / batch_size)
    while per_rank % accum:
        accum += 1
    return BatchPlan(per_rank // accum, accum, world)


def steps_in_epoch(n_images: int, plan: BatchPlan) -> int:
    """Optimiser steps over ``n_images`` (each rank's share padded to equal length; a lone last image dropped)."""
    per_rank = math.ceil(n_images / plan.world)
    batches = math.ceil(per_rank / plan.micro) - (1 if per_rank > 1 and per_rank % plan.micro == 1 else 0)
    return math.ceil(batches / plan.accum)


# ------------------------------------------------------------------------------------------ sampling
class ShardedSampler(DistributedSampler):
    """This rank's share of an epoch's order, drawn from (seed, epoch) alike on every rank.

    The order is a permutation (uniform) or ``len(weights)`` draws with replacement in proportion to
    ``weights`` (class-balanced). Rank r reads ``order[start:][r::world]``, padded at the end by repeating
    the first items so that every rank runs the same number of batches (as DistributedSampler does).
    ``start`` resumes an epoch after the images already consumed.
    """

    def __init__(self, dataset, ctx: DistContext, seed: int, weights: Sequence[float] | None = None) -> None:
        super().__init__(dataset, num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=seed)
        self.weights = torch.as_tensor(weights, dtype=torch.float64) if weights is not None else None
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = max(0, start)

    def order(self) -> list[int]:
        """The whole epoch's order (every rank computes the same)."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        n = len(self.dataset)
        if self.weights is not None:
            return torch.multinomial(self.weights, n, replacement=True, generator=g).tolist()
        return torch.randperm(n, generator=g).tolist()

    def __iter__(self):
        order = self.order()[self.start:]
        if order and len(order) % self.num_replicas:
            pad = self.num_replicas - len(order) % self.num_replicas
            order += (order * math.ceil(pad / len(order)))[:pad]
        return iter(order[self.rank::self.num_replicas])

    def __len__(self) -> int:
        return math.ceil(max(len(self.dataset) - self.start, 0) / self.num_replicas)


def shard(items: Sequence[Any], ctx: DistContext) -> list[Any]:
    """This rank's items, ``items[rank::world]``: no padding, no item twice."""
    return list(items[ctx.rank::ctx.world])


def gather_in_order(ctx: DistContext, values: list[Any], n: int) -> list[Any]:
    """Per-item ``values`` of this rank's :func:`shard` put back in the original order of all ``n`` items.

    Every rank gets the same list, so any reduction over it (a mean in that order) is bit-identical on
    every rank and to the single-process one.
    """
    parts = ctx.gather(values)
    out: list[Any] = [None] * n
    for rank, part in enumerate(parts):
        out[rank::ctx.world] = part
    return out


# ------------------------------------------------------------------------------------------ launching
def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch(nproc: int, medseg_args: list[str]) -> int:
    """Run ``python -m torch.distributed.run --standalone --nproc-per-node N -m medseg ARGS``; its exit status.

    SIGTERM to this launcher goes straight to the worker processes (not to torchrun's agent, which
    would report the stop as a failure): they save their resume state and exit 0, and so does the launch.
    """
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "medseg", *medseg_args]
    agent = subprocess.Popen(cmd)

    def forward(signum, frame):  # noqa: ARG001
        workers = _children(agent.pid)
        for pid in workers or [agent.pid]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        return agent.wait()
    except KeyboardInterrupt:
        agent.send_signal(signal.SIGINT)
        return agent.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _children(pid: int) -> list[int]:
    """Child process ids of ``pid`` (Linux /proc; empty elsewhere)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
    except OSError:
        return []
    return found


def wrap_model(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """``model`` in DistributedDataParallel (gradients averaged over ranks), or itself for one process.

    Call again after parameters are frozen or unfrozen: DDP fixes the set it synchronises when built.
    The wrapper starts by copying rank 0's weights to every rank.
    """
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.local_rank] if ctx.backend == "nccl" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def maybe_sync_batchnorm(model: torch.nn.Module, ctx: DistContext, wanted: bool) -> torch.nn.Module:
    """BatchNorm statistics over all processes (``train.sync_batchnorm``): GPUs only, as in PyTorch."""
    if not (wanted and ctx.enabled):
        return model
    if ctx.backend != "nccl":
        log.warning("train.sync_batchnorm needs GPUs (NCCL); BatchNorm statistics stay per process on CPU")
        return model
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
