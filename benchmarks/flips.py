"""Where rendering changed the backbone's label, and whether for the better.

A voxel *flips* when the rendered label differs from the coarse one. A **right flip** is
rendered correct and coarse wrong, a **wrong flip** coarse correct and rendered wrong; the
other flips are wrong both times (one wrong class for another).

    python -m benchmarks flips runs/demo                  # examples.npz of `morse evaluate`
    python -m benchmarks flips runs/demo --volumes test   # and counts over every voxel,
                                                            # in all and by true class

The figure draws the example slices ``morse evaluate`` saved (``examples.npz``: ``image``,
``truth``, ``coarse``, ``rendered``, (N, H, W)) in grey with right flips in green and wrong
flips in magenta, counts in each panel's title.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from morse.report.figures import _display_range

__all__ = ["FLIP_COLOURS", "FlipCounts", "count_flips", "flip_masks", "flip_rgba",
           "flips_by_class", "load_examples", "make_flip_figure", "main", "volume_flips"]

#: RGBA of each kind of flip: right green, wrong magenta, other (wrong both times) light blue.
FLIP_COLOURS = {"right": (0.1, 0.85, 0.2, 1.0), "wrong": (0.95, 0.1, 0.75, 1.0),
                "other": (0.3, 0.75, 1.0, 0.8)}


@dataclass(frozen=True)
class FlipCounts:
    """Voxels of each kind of flip."""

    right: int
    wrong: int
    other: int

    @property
    def changed(self) -> int:
        """Every voxel whose label rendering changed."""
        return self.right + self.wrong + self.other

    def __add__(self, other: FlipCounts) -> FlipCounts:
        return FlipCounts(self.right + other.right, self.wrong + other.wrong,
                          self.other + other.other)

    def text(self) -> str:
        """``"+12 right, -3 wrong, 1 other"``."""
        return f"+{self.right} right, -{self.wrong} wrong, {self.other} other"


def flip_masks(truth: np.ndarray, coarse: np.ndarray, rendered: np.ndarray
               ) -> dict[str, np.ndarray]:
    """Boolean masks (same shape as the inputs, any) of right, wrong and other flips.

    >>> m = flip_masks(np.array([1, 1, 2, 0]), np.array([0, 1, 1, 0]), np.array([1, 0, 0, 0]))
    >>> {k: v.astype(int).tolist() for k, v in m.items()}
    {'right': [1, 0, 0, 0], 'wrong': [0, 1, 0, 0], 'other': [0, 0, 1, 0]}
    """
    truth, coarse, rendered = (np.asarray(a) for a in (truth, coarse, rendered))
    if not truth.shape == coarse.shape == rendered.shape:
        raise ValueError(f"truth {truth.shape}, coarse {coarse.shape} and rendered "
                         f"{rendered.shape} must have one shape")
    changed = coarse != rendered
    right = changed & (rendered == truth)
    wrong = changed & (coarse == truth)
    return {"right": right, "wrong": wrong, "other": changed & ~right & ~wrong}


def count_flips(truth: np.ndarray, coarse: np.ndarray, rendered: np.ndarray) -> FlipCounts:
    """:class:`FlipCounts` of :func:`flip_masks`."""
    masks = flip_masks(truth, coarse, rendered)
    return FlipCounts(*(int(masks[k].sum()) for k in ("right", "wrong", "other")))


def flip_rgba(truth: np.ndarray, coarse: np.ndarray, rendered: np.ndarray) -> np.ndarray:
    """(H, W) label maps -> (H, W, 4) overlay in :data:`FLIP_COLOURS`, unchanged cells
    transparent."""
    masks = flip_masks(truth, coarse, rendered)
    rgba = np.zeros((*np.shape(truth), 4))
    for kind, mask in masks.items():
        rgba[mask] = FLIP_COLOURS[kind]
    return rgba


def load_examples(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an ``examples.npz`` that the figure needs, (N, H, W) each, plus
    ``title`` (N,) strings (case and slice)."""
    with np.load(path, allow_pickle=False) as npz:
        missing = sorted({"image", "truth", "coarse", "rendered"} - set(npz.files))
        if missing:
            raise ValueError(f"{path}: no {', '.join(missing)} array; score a MORSE run (renderer"
                             " on) with `morse evaluate` to write it")
        data = {k: npz[k] for k in ("image", "truth", "coarse", "rendered")}
        cases = npz["case_id"] if "case_id" in npz.files else None
        slices = npz["slice"] if "slice" in npz.files else None
    data["title"] = np.array([
        f"{cases[i]} slice {slices[i]}" if cases is not None and slices is not None
        else f"example {i}" for i in range(len(data["image"]))])
    return data


def make_flip_figure(
    image: np.ndarray,
    truth: np.ndarray,
    coarse: np.ndarray,
    rendered: np.ndarray,
    titles: Sequence[str] | None = None,
    *,
    columns: int = 2,
    suptitle: str | None = None,
):
    """A grid of slices, each in grey with its flips coloured and counted.

    Args:
        image: (N, H, W) float slices.
        truth, coarse, rendered: (N, H, W) integer label maps.
        titles: N panel titles (the counts are added below each).
        columns: panels per row.
        suptitle: figure title; default the counts over all N slices.

    Returns:
        A :class:`matplotlib.figure.Figure` (not attached to pyplot).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    image = np.asarray(image, dtype=float)
    if image.ndim != 3:
        raise ValueError(f"image must be (N, H, W), got shape {image.shape}")
    count = len(image)
    titles = list(titles) if titles is not None else [f"example {i}" for i in range(count)]
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    height, width = image.shape[1:]
    panel = 3.6  # inches per column
    figure = Figure(figsize=(panel * columns, panel * rows * height / width + 1.0),
                    layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    total = FlipCounts(0, 0, 0)
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= count:
            continue
        counts = count_flips(truth[i], coarse[i], rendered[i])
        total = total + counts
        low, high = _display_range(image[i])
        ax.imshow(image[i], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        ax.imshow(flip_rgba(truth[i], coarse[i], rendered[i]), interpolation="nearest")
        ax.set_title(f"{titles[i]}\n{counts.text()}", fontsize=8)
    handles = [Patch(color=FLIP_COLOURS[k], label=label) for k, label in (
        ("right", "right flip: rendered correct, coarse wrong"),
        ("wrong", "wrong flip: coarse correct, rendered wrong"),
        ("other", "changed, wrong both times"))]
    figure.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=7,
                  frameon=False)
    figure.suptitle(suptitle or f"Rendered vs coarse over {count} slices: {total.text()}",
                    fontsize=9)
    return figure


def flips_by_class(truth: np.ndarray, coarse: np.ndarray, rendered: np.ndarray,
                   class_names: Sequence[str]) -> dict[str, FlipCounts]:
    """:class:`FlipCounts` of the voxels of each true class (label ``c`` named
    ``class_names[c]``, background first), for the classes present in ``truth``.

    >>> flips_by_class(np.array([0, 1, 1]), np.array([1, 0, 1]), np.array([0, 1, 0]), ["bg", "a"])
    {'bg': FlipCounts(right=1, wrong=0, other=0), 'a': FlipCounts(right=1, wrong=1, other=0)}
    """
    masks = flip_masks(truth, coarse, rendered)
    out = {}
    for label in np.unique(truth):
        inside = np.asarray(truth) == label
        out[str(class_names[int(label)])] = FlipCounts(
            *(int((masks[k] & inside).sum()) for k in ("right", "wrong", "other")))
    return out


def volume_flips(source: str | Path, subset: str = "test", device: str = "cpu"
                 ) -> dict[str, dict[str, FlipCounts]]:
    """Flip counts over every voxel of each case of a run's subset: ``{case id: {"all":
    counts, class name: counts of its true voxels}}``; predicted by
    :func:`morse.inference.trained.predict_case`, as ``morse evaluate`` predicts."""
    from morse.data.prepare import load_eval_volumes
    from morse.inference.trained import load_run, predict_case

    run = load_run(source, device)
    counts = {}
    for volume in load_eval_volumes(run.config.data, subset, run.preprocessing):
        prediction = predict_case(run.model, run.config, volume, device)
        maps = (volume.label, prediction.coarse, prediction.rendered)
        counts[volume.case_id] = {"all": count_flips(*maps),
                                  **flips_by_class(*maps, run.class_names)}
    return counts


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks flips RUN_OR_EXAMPLES [--volumes SUBSET] [-o PNG]``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks flips",
        description="Right and wrong flips of the renderer over the example slices of a run.")
    parser.add_argument("source", help="examples.npz, or the folder holding it (a run folder "
                        "after `morse evaluate`, or its eval_val/)")
    parser.add_argument("--volumes", choices=["val", "test"],
                        help="also count flips over every voxel of this subset (SOURCE must be "
                             "the run folder)")
    parser.add_argument("--columns", type=int, default=2)
    parser.add_argument("-o", "--output", help="PNG path (default: flips.png beside the npz)")
    args = parser.parse_args(argv)
    source = Path(args.source)
    path = source / "examples.npz" if source.is_dir() else source
    data = load_examples(path)
    figure = make_flip_figure(data["image"], data["truth"], data["coarse"], data["rendered"],
                              data["title"], columns=args.columns)
    output = Path(args.output) if args.output else path.with_name("flips.png")
    figure.savefig(output, dpi=120)
    for title, *maps in zip(data["title"], data["truth"], data["coarse"], data["rendered"]):
        print(f"{title}: {count_flips(*maps).text()}")
    if args.volumes:
        for case, by_class in volume_flips(source, args.volumes).items():
            for name, counts in by_class.items():
                print(f"{case}, every voxel, {name}: {counts.changed} changed: {counts.text()}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
