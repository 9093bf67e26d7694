"""What training tells the person running it: the plan it chose and one line per interval.

Both go to the screen (or the file stdout is sent to) and to the run folder's ``train.log``
through :class:`morse.io.progress.Progress`.
"""

from __future__ import annotations

from collections.abc import Mapping

from morse.config import Config
from morse.data.prepare import PreparedData
from morse.io.progress import format_eta

__all__ = ["describe_plan", "interval_line"]

_AXES = ("sagittal", "coronal", "axial")
_PARTS = ("coarse_ce", "coarse_dice", "point_ce")


def describe_plan(cfg: Config, data: PreparedData, device: str, threads: int) -> list[str]:
    """Two lines: the network's grid and sample size, then the cases and the machine.

    >>> from morse.data.split import Split
    >>> data = PreparedData([0] * 12, [0], ["bg", "fg"], 1,
    ...                     {"geometry": {"spacing": [0.7, 0.9, 3.0], "slice_axis": 2}},
    ...                     Split(["a", "b", "c"], ["d"], ["e"]))
    >>> for line in describe_plan(Config(), data, "cpu", 2):
    ...     print(line.replace("; ", ";\\n  "))
    plan: 2D slices across RAS axis 2 (axial) at 0.7 x 0.9 x 3 mm, padded to a multiple of 32
    cases: 3 training (12 samples), 1 validation, 1 test;
      30000 steps of batch 4 on cpu, 2 CPU threads
    """
    geometry = data.preprocessing.get("geometry")
    if geometry is None:
        grid = "on the grids as stored (no resampling)"
    else:
        spacing = " x ".join(f"{s:g}" for s in geometry["spacing"])
        grid = f"at {spacing} mm"
    if cfg.data.spatial_dims == 3:
        patch = " x ".join(str(s) for s in cfg.data.patch_size)
        shape = f"plan: 3D patches of {patch} voxels {grid}"
    else:
        axis = geometry.get("slice_axis") if geometry is not None else None
        across = ("the stored arrays' last axis" if axis is None
                  else f"RAS axis {axis} ({_AXES[axis]})")
        size = (f"resized to {' x '.join(str(s) for s in cfg.data.slice_size)}"
                if cfg.data.slice_size else f"padded to {_padded_size(data)}")
        shape = f"plan: 2D slices across {across} {grid}, {size}"
    if data.split is not None:
        counts = (len(data.split.train), len(data.split.val), len(data.split.test))
        cases = (f"cases: {counts[0]} training ({len(data.train)} samples), {counts[1]} "
                 f"validation, {counts[2]} test")
    else:
        cases = f"cases: {len(data.train)} training samples, {len(data.val)} validation volumes"
    steps = cfg.train.iterations
    machine = (f"{steps} step{'' if steps == 1 else 's'} of batch {cfg.train.batch_size} on "
               f"{device}, {threads} CPU thread{'' if threads == 1 else 's'}")
    return [shape, f"{cases}; {machine}"]


def _padded_size(data: PreparedData) -> str:
    """The common padded slice size of the training volumes, when the dataset shows it."""
    volumes = getattr(data.train, "volumes", None)
    if volumes:
        return " x ".join(str(s) for s in volumes[0].image.shape[1:3])
    return "a multiple of 32"


def interval_line(step: int, total: int, row: Mapping[str, float]) -> str:
    """One logging interval: step, the loss and its parts, the learning rate, speed, ETA.

    >>> print(interval_line(20, 60, {"loss": 0.61234, "coarse_ce": 0.4, "coarse_dice": 0.3,
    ...                              "point_ce": 0.25, "lr": 0.002, "it_per_s": 1.5}))
    ... # doctest: +NORMALIZE_WHITESPACE
    step 20/60 loss 0.6123 (coarse_ce 0.4000, coarse_dice 0.3000, point_ce 0.2500)
    lr 0.002 1.50 it/s ETA 0:00:27
    """
    parts = ", ".join(f"{name} {row[name]:.4f}" for name in _PARTS if name in row)
    speed = row["it_per_s"]
    eta = format_eta((total - step) / speed if speed > 0 else float("inf"))
    return (f"step {step}/{total} loss {row['loss']:.4f} ({parts}) lr {row['lr']:.3g} "
            f"{speed:.2f} it/s ETA {eta}")
