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

import contextlib
import os
import warnings
from collections.abc import Iterator, Sized
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, Sampler

__all__ = [
    "DistributedContext",
    "SeededRandomSampler",
    "SequentialEpochSampler",
    "all_gather_objects",
    "all_reduce_mean",
    "autocast_context",
    "barrier",
    "cleanup",
    "init_distributed",
    "load_sampler_state",
    "main_process_first",
    "make_grad_scaler",
    "make_sampler",
    "reduce_dict",
    "resolve_precision",
    "sampler_state",
    "unwrap_model",
    "wrap_model",
]

Precision = Literal["fp32", "bf16", "fp16"]
_PRECISIONS = ("fp32", "bf16", "fp16")
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
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    device_type = torch.device(device).type
    if device_type not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
    if device_type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available; use device='cpu'")
    return device_type


def _launch_env() -> dict[str, str]:
    missing = [name for name in _LAUNCH_VARS if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE is set but {missing} are not; launch multi-process runs with torchrun"
        )
    return {name: os.environ[name] for name in _LAUNCH_VARS}


def cleanup(ctx: DistributedContext) -> None:
    """Leave the process group (call once at the end of training)."""
    if ctx.is_distributed and dist.is_initialized():
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


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP and ``torch.compile`` wrappers (for state_dict saving)."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


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


def all_gather_objects(obj: Any, ctx: DistributedContext) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` for a single process."""
    if not ctx.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(ctx: DistributedContext) -> None:
    """Wait until every rank gets here; no-op for a single process."""
    if not ctx.is_distributed:
        return
    if ctx.backend == "nccl":
        dist.barrier(device_ids=[ctx.local_rank])
    else:
        dist.barrier()


@contextlib.contextmanager
def main_process_first(ctx: DistributedContext) -> Iterator[None]:
    """Run the body on rank 0 first, then on the others (dataset caching, downloads)."""
    if not ctx.is_main:
        barrier(ctx)
    try:
        yield
    finally:
        if ctx.is_main:
            barrier(ctx)


def _comm_device(ctx: DistributedContext) -> torch.device:
    """NCCL moves CUDA tensors only; gloo wants CPU tensors."""
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")


# ---------------------------------------------------------------------------
# samplers


class SeededRandomSampler(Sampler[int]):
    """Random order that depends only on ``seed + epoch`` (call :meth:`set_epoch`).

    The single-process twin of ``DistributedSampler``: resuming needs only the
    epoch number, not a generator state.
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        self.data_source = data_source
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation of the coming epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(len(self.data_source), generator=generator).tolist())

    def __len__(self) -> int:
        return len(self.data_source)


class SequentialEpochSampler(Sampler[int]):
    """``0..n-1`` in order, with a ``set_epoch`` that only records the epoch."""

    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source
        self.seed = 0
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Record the epoch (the order never changes)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


def make_sampler(dataset: Sized, ctx: DistributedContext, shuffle: bool, seed: int) -> Sampler:
    """A sampler with ``set_epoch``: ``DistributedSampler`` when distributed, else seeded.

    The distributed sampler pads the last uneven share by repeating samples
    (``drop_last=False``), so validation metrics gathered across ranks may
    count a few cases twice; deduplicate per-case results by case id.
    """
    if ctx.is_distributed:
        return DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                  shuffle=shuffle, seed=seed, drop_last=False)
    if shuffle:
        return SeededRandomSampler(dataset, seed=seed)
    return SequentialEpochSampler(dataset)


def sampler_state(sampler: Sampler) -> dict[str, int]:
    """``{"epoch", "seed"}`` of a sampler from :func:`make_sampler` (checkpoint ``sampler``)."""
    return {"epoch": int(getattr(sampler, "epoch", 0)), "seed": int(getattr(sampler, "seed", 0))}


def load_sampler_state(sampler: Sampler, state: dict[str, int]) -> None:
    """Put the epoch back; warn when the checkpoint was shuffled with another seed."""
    if int(state.get("seed", 0)) != int(getattr(sampler, "seed", 0)):
        warnings.warn("sampler seed differs from the checkpoint's; data order will differ",
                      stacklevel=2)
    sampler.set_epoch(int(state.get("epoch", 0)))  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# mixed precision


def resolve_precision(precision: str, device: str | torch.device) -> Precision:
    """The precision actually used: fp16 on CPU falls back to fp32 (with a warning)."""
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    if precision == "fp16" and torch.device(device).type != "cuda":
        warnings.warn("fp16 autocast needs a GPU; running in fp32 on CPU (bf16 works on CPU)",
                      stacklevel=3)
        return "fp32"
    return precision  # type: ignore[return-value]


def autocast_context(
    device: str | torch.device, precision: str = "fp32"
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for bf16/fp16, a null context for fp32."""
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def make_grad_scaler(precision: str, device: str | torch.device) -> torch.amp.GradScaler:
    """A GradScaler enabled only for fp16 on CUDA; disabled it passes losses through.

    Use it the same way in every precision: ``scaler.scale(loss).backward();
    scaler.step(optimizer); scaler.update()``.
    """
    device_type = torch.device(device).type
    enabled = resolve_precision(precision, device) == "fp16"
    return torch.amp.GradScaler(device_type, enabled=enabled)
