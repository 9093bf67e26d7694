"""Multi-GPU and multi-node training on PyTorch's own DistributedDataParallel.

Launch with ``torchrun``; it sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``, which :func:`init_distributed` reads::

    torchrun --nproc_per_node=4 -m morse.cli.main train ...            # one node
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 \\
        --master_addr=node0 --master_port=29500 -m morse.cli.main train ...

Without ``WORLD_SIZE`` (plain ``python``) everything here degrades to a
single-process no-op, so the same training loop runs on a laptop CPU.

Stochastic experts and DDP: MORSE drops experts by multiplying their gate
weight by zero, never by skipping their forward pass. Every parameter therefore
stays in the autograd graph and receives a gradient (zero for a dropped
expert), so DDP's bucketed all-reduce sees the same set of gradients on every
rank even though each rank drops different experts. That is why
:func:`wrap_model` uses ``find_unused_parameters=False`` (faster: no graph
traversal after each forward). A model that *skips* a module on some steps
would hang or fail under this setting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from morse.device import resolve_device

__all__ = [
    "DistributedContext",
    "all_reduce_mean",
    "cleanup",
    "init_distributed",
    "is_launch_main",
    "reduce_dict",
    "wrap_model",
]

_LAUNCH_VARS = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job; ``backend`` is None for a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on global rank 0 (logging, checkpoint writing)."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


# ---------------------------------------------------------------------------
# process group


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistributedContext:
    """Join the torchrun job described by the environment, or run as a single process.

    ``device`` is ``"cuda"``, ``"cpu"`` or None (CUDA when available). Under
    torchrun with CUDA, each process uses ``cuda:LOCAL_RANK`` and the ``nccl``
    backend; on CPU it uses ``gloo``.
    """
    device_type = _device_type(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        index = torch.cuda.current_device() if device_type == "cuda" else None
        return DistributedContext(device=torch.device(device_type, index))
    env = _launch_env()
    rank, local_rank = int(env["RANK"]), int(env["LOCAL_RANK"])
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank,
                                world_size=world_size, timeout=timedelta(seconds=timeout_s))
    return DistributedContext(rank, world_size, local_rank, torch_device, backend)


def _device_type(device: str | None) -> str:
    return resolve_device(device or "auto").type


def _launch_env() -> dict[str, str]:
    missing = [name for name in _LAUNCH_VARS if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE is set but {missing} are not; launch multi-process runs with torchrun"
        )
    return {name: os.environ[name] for name in _LAUNCH_VARS}


def is_launch_main() -> bool:
    """Whether this process is rank 0 (or the only one), known before the process group."""
    return int(os.environ.get("RANK", "0")) == 0


def cleanup(ctx: DistributedContext) -> None:
    """Leave the process group (call once at the end of training).

    Every rank waits for the others first: a rank that tears its connections down while a
    peer is still finishing its last collective can abort that peer (gloo: "terminate called
    without an active exception").
    """
    if ctx.is_distributed and dist.is_initialized():
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.local_rank])
        else:
            dist.barrier()
        dist.destroy_process_group()


# ---------------------------------------------------------------------------
# model


def wrap_model(model: nn.Module, ctx: DistributedContext) -> nn.Module:
    """Move ``model`` to ``ctx.device`` and wrap it in DDP when distributed.

    ``find_unused_parameters=False``: see the module docstring for why MORSE's
    stochastic experts keep every parameter in the graph.
    """
    model = model.to(ctx.device)
    if not ctx.is_distributed:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=False)


# ---------------------------------------------------------------------------
# collectives


def all_reduce_mean(tensor: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Mean of ``tensor`` across ranks (a new detached tensor on the input's device).

    Integer tensors come back as floating point.
    """
    result = tensor.detach().clone()
    if not result.is_floating_point():
        result = result.to(torch.float64)
    if not ctx.is_distributed:
        return result
    on_device = result.to(_comm_device(ctx))
    dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
    return (on_device / ctx.world_size).to(tensor.device)


def reduce_dict(values: dict[str, float], ctx: DistributedContext) -> dict[str, float]:
    """Mean of each entry across ranks; every rank must pass the same keys."""
    if not values or not ctx.is_distributed:
        return {key: float(value) for key, value in values.items()}
    keys = sorted(values)
    stacked = torch.tensor([float(values[key]) for key in keys], dtype=torch.float64)
    averaged = all_reduce_mean(stacked, ctx)
    return {key: float(value) for key, value in zip(keys, averaged.tolist(), strict=True)}


def _comm_device(ctx: DistributedContext) -> torch.device:
    """NCCL moves CUDA tensors only; gloo wants CPU tensors."""
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")
