"""Export a trained run for deployment: backbone and renderer as one graph of any input size.

Shapes: B images (any number), C_in channels, K classes, ``*S`` the spatial size of one
network input: a 2D slice of any size, or a 3D window (see :class:`Sizes`).

The exported graph takes what ``morse predict`` hands the network for one slice or window: a
float32 (B, C_in, *S) tensor already brought to what the network was trained on (the run's
preprocessing record: axis order, the dataset files' own preprocessing, normalisation; see
:func:`morse.data.intensity.raw_to_network`). A 2D graph then pads or resizes each slice as
``morse predict`` does (:func:`morse.model.volumes.slice_input`) and renders on the slice's
own grid. It returns ``coarse`` (B, K, *S), the backbone's logits read on that grid, and
``logits`` (B, K, *S), the rendered logits. The point selection is MORSE's (top-k uncertain
cells, adaptive margin, ``render_steps`` steps), run with static shapes: the point network
sees all N candidate rows of every step and the rows that do not count are discarded
(``static_shapes`` of :func:`morse.renderer.render.subdivision_render`), so N is a function
of the grid's size, which ``torch.export`` keeps symbolic: no size in the graph depends on
values, and one graph serves every size in :class:`Sizes`.

Formats: ``pt2`` (``torch.export``'s ExportedProgram, loaded with ``torch.export.load``),
``onnx`` (the same program through the dynamo exporter), ``torchscript`` (a trace, one fixed
size: it loads from C++ libtorch without compiling) and ``bundle`` (a MONAI bundle around the
program, :mod:`morse.inference.bundle`). Next to a model file, ``OUT.json`` says what the
input must be and holds the preprocessing record, the classes, the accepted sizes and the
check of the exported file against the checkpoint on inputs of two sizes. Not in the graph:
TTA, mixed precision, sliding windows over a volume, the resampling of a run with a target
spacing (``morse predict`` renders on the scan's own voxels; the graph on its input's grid).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from morse.data.intensity import check_record
from morse.errors import DataError
from morse.inference.graphs import (
    EXTRA,
    check_onnx_packages,
    export_program,
    onnx_bytes,
    runner,
    save_program,
    torchscript_bytes,
)
from morse.inference.trained import TrainedRun, load_run
from morse.io import atomic_write_bytes, atomic_write_text
from morse.model import Morse
from morse.model.budget import Budget
from morse.model.volumes import slice_input
from morse.renderer.render import onto_grid
from morse.shapes import PAD_MULTIPLE, check_grid_size, per_axis

__all__ = ["FORMATS", "ExportResult", "RenderedLogits", "Sizes", "check_export", "check_inputs",
           "describe", "export_run", "graph_sizes"]

FORMATS = ("pt2", "onnx", "torchscript", "bundle")
"""What ``morse export --format`` writes (the first is the default)."""

class RenderedLogits(nn.Module):
    """A ``Morse`` model as ``morse predict`` runs it on one slice or window, static shapes.

    ``forward(image (B, C_in, *S))`` returns ``coarse`` (B, K, *S) and the rendered
    ``logits`` (B, K, *S) fp32 on the input's grid (only ``logits`` when ``coarse`` is
    False). 2D inputs are padded or resized to the network's size first (``slice_size``,
    see :func:`morse.model.volumes.slice_input`). The renderer is set to
    ``render_precision="fp32"`` (its ``auto`` default would record bf16 casts).

    Args:
        model: the trained model (its renderer's precision is changed in place).
        slice_size: 2D: the run's ``data.slice_size`` (None: slices are padded).
        static_shapes: False runs the checkpoint's own path (the reference of the checks).
        coarse: also return the coarse logits.
    """

    def __init__(self, model: Morse, slice_size: Sequence[int] | None = None, *,
                 static_shapes: bool = True, coarse: bool = True) -> None:
        super().__init__()
        if model.renderer is not None:
            model.renderer.config = dataclasses.replace(model.renderer.config,
                                                        render_precision="fp32")
        self.model = model
        self.slice_size = None if slice_size is None else tuple(int(s) for s in slice_size)
        self.static_shapes = static_shapes
        self.coarse = coarse
        # a deployed graph is never trained: parameters that require grad make a traced graph
        # build autograd history and fail under torch.inference_mode
        self.eval().requires_grad_(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        size = image.shape[2:]
        net_input, grid_map = image, None
        if self.model.spatial_dims == 2:
            net_input, grid_map = slice_input(image, self.slice_size)
        coarse, features = self.model.backbone_outputs(net_input)
        out = self.model.render(coarse, features, size, grid_map,
                                static_shapes=self.static_shapes)
        if not self.coarse:
            return out.logits
        return (out.coarse if grid_map is None else onto_grid(out.coarse, size, grid_map),
                out.logits)


@dataclass(frozen=True)
class Sizes:
    """The spatial sizes an exported graph takes: each axis a multiple of ``multiple``, at
    least ``minimum``; ``fixed``: exactly ``minimum``."""

    multiple: tuple[int, ...]
    minimum: tuple[int, ...]
    fixed: bool = False

    def text(self) -> str:
        """The rule in words, e.g. ``each axis a multiple of 16, at least 32``."""
        if self.fixed:
            return "exactly " + " x ".join(map(str, self.minimum))
        multiple = _one(self.multiple)
        lowest = f"at least {_one(self.minimum)}"
        return f"any size, each axis {lowest}" if multiple == "1" else (
            f"each axis a multiple of {multiple}, {lowest}")

    def accepts(self, size: Sequence[int]) -> bool:
        if self.fixed:
            return tuple(size) == self.minimum
        return all(s >= lo and s % m == 0 for s, m, lo in zip(size, self.multiple, self.minimum))

    def dynamic_shapes(self) -> dict:
        """``torch.export``'s ``dynamic_shapes`` for the input ``image``: the batch and, unless
        fixed, each spatial axis as ``multiple * Dim(min=minimum / multiple)``."""
        axes = {0: torch.export.Dim("batch")}
        if not self.fixed:
            names = ("H", "W") if len(self.minimum) == 2 else ("X", "Y", "Z")
            for axis, (name, m, lo) in enumerate(zip(names, self.multiple, self.minimum)):
                dim = torch.export.Dim(name, min=lo // m)
                axes[axis + 2] = dim if m == 1 else m * dim
        return {"image": axes}

    def checked(self, training: Sequence[int] | None) -> list[tuple[int, ...]]:
        """Two sizes to check the export on: the smallest accepted one at or above the
        training size, and that with its last axis one multiple longer (unless fixed)."""
        if self.fixed:
            return [self.minimum]
        first = tuple(max(lo, -(-int(t) // m) * m) for t, m, lo in
                      zip(training or self.minimum, self.multiple, self.minimum))
        return [first, (*first[:-1], first[-1] + self.multiple[-1])]

    def as_dict(self) -> dict:
        return {"rule": self.text(), "multiple": list(self.multiple),
                "minimum": list(self.minimum), "fixed": self.fixed}


def _one(values: Sequence[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else str(list(values))


@dataclass
class ExportResult:
    """What ``export_run`` wrote and how close the file's outputs are to the checkpoint's.

    Attributes:
        model: the exported file (the bundle's folder for ``bundle``).
        description: the JSON next to it (the bundle's ``configs/metadata.json``).
        max_difference: largest |exported - checkpoint| of coarse and rendered logits over
            the checked inputs; None when ONNX Runtime is absent (ONNX only).
        labels_agree: the smallest share of cells whose rendered label is the checkpoint's
            (None as above).
        sizes: the spatial sizes the graph takes.
    """

    model: Path
    description: Path
    max_difference: float | None
    labels_agree: float | None
    sizes: Sizes


def graph_sizes(run: TrainedRun, fmt: str, size: Sequence[int] | None = None) -> Sizes:
    """The sizes a graph of ``run`` will take: ``size`` alone when given (TorchScript: else
    2D ``data.slice_size``, 3D ``data.patch_size``); else a 2D graph any slice of at least 2
    x 2 (it pads or resizes the slice itself), a 3D graph multiples of the backbone's size
    multiple, at least twice it (one cell at the coarsest stride is a graph of its own), or
    the one size a fixed-size backbone (UNETR) takes."""
    dims = run.model.spatial_dims
    if size is None and fmt == "torchscript":
        size = run.config.data.slice_size if dims == 2 else run.config.data.patch_size
        if size is None:
            raise DataError(
                f"{run.path}: this 2D run pads each slice (data.slice_size is null) and a "
                "TorchScript graph takes one size; give it with --size H W, or use --format "
                "pt2, which takes every size")
    if size is not None:
        return _fixed(run, size)
    if dims == 2:
        return Sizes((1, 1), (2, 2))
    backbone = run.model.backbone
    required = getattr(backbone, "required_size", None)
    if required is not None:
        return Sizes(tuple(required), tuple(required), fixed=True)
    multiple = per_axis(getattr(backbone, "size_multiple", PAD_MULTIPLE), dims)
    return Sizes(multiple, tuple(2 * m for m in multiple))


def _fixed(run: TrainedRun, size: Sequence[int]) -> Sizes:
    dims, given = run.model.spatial_dims, " ".join(map(str, size))
    if len(size) != dims or min(size) < 1:
        raise DataError(f"--size {given}: a {dims}D model needs {dims} positive sizes")
    # the check runs the model on 2 inputs: K-class coarse and rendered maps for each
    check_grid_size(size, f"--size {given}", 2 * 4 * 2 * run.model.num_classes,
                    "give the network's input size in voxels")
    size = tuple(int(s) for s in size)
    return Sizes(size, size, fixed=True)


def _training_size(run: TrainedRun) -> Sequence[int] | None:
    """The network's input size in training; padded 2D slices: 2 x PAD_MULTIPLE a side."""
    data = run.config.data
    if run.model.spatial_dims == 3:
        return data.patch_size
    return data.slice_size or (2 * PAD_MULTIPLE, 2 * PAD_MULTIPLE)


def check_inputs(run: TrainedRun, sizes: Sizes, in_channels: int) -> list[torch.Tensor]:
    """Standard normal inputs (seed 0) of the checked sizes: batch 2, then batch 1; each
    first run through the model, so that a size it refuses is one line."""
    generator = torch.Generator().manual_seed(0)
    training = _training_size(run)
    if (training is not None and not sizes.fixed and run.model.spatial_dims == 3
            and not sizes.accepts(training)):
        raise DataError(
            f"{run.path}: data.patch_size {list(training)} is below what one graph for every "
            f"size takes ({sizes.text()}); export that size alone with --size "
            f"{' '.join(map(str, training))}")
    examples = [torch.randn(2 if n == 0 else 1, in_channels, *size, generator=generator)
                for n, size in enumerate(sizes.checked(training))]
    module = RenderedLogits(run.model, run.config.data.slice_size)
    for example in examples:
        try:
            with torch.inference_mode():
                module(example)
        except ValueError as error:
            raise DataError(f"--size {' '.join(map(str, example.shape[2:]))}: {error}") from None
    return examples


def _check_out(out: Path, overwrite: bool) -> Path:
    """The JSON path for model file ``out``; DataError when either exists (no overwrite)."""
    if out.suffix == ".json":
        raise DataError(f"{out}: OUT names the model file (e.g. model.pt2 or model.onnx); its "
                        "description goes next to it as OUT.json")
    description = out.with_name(out.name + ".json")
    existing = [p for p in (out, description) if p.exists()]
    if existing and not overwrite:
        raise DataError(f"{existing[0]}: already exists; pass --overwrite or another OUT")
    if out.is_dir():
        raise DataError(f"{out}: is a folder; OUT names the model file, e.g. {out / 'model.pt2'}")
    return description


def check_export(run_exported, run: TrainedRun, examples: list[torch.Tensor],
                 coarse: bool = True) -> dict:
    """The exported file's outputs (coarse and logits, or only logits without ``coarse``)
    against the checkpoint's own path (``Morse.forward`` on the input ``morse predict``
    makes) on each example; a note when it cannot run."""
    if run_exported is None:
        return {"note": f"not checked: onnxruntime is not installed ({EXTRA})"}
    reference_module = RenderedLogits(run.model, run.config.data.slice_size, static_shapes=False,
                                      coarse=coarse)
    inputs, differences, agreements = [], [], []
    for example in examples:
        outputs = run_exported(example)
        with torch.inference_mode():
            reference = reference_module(example)
        reference = reference if coarse else (reference,)
        differences.append(max(float((a - b.float()).abs().max())
                               for a, b in zip(outputs, reference)))
        agreements.append(float((outputs[-1].argmax(1) == reference[-1].argmax(1)).float()
                                .mean()))
        inputs.append(list(example.shape))
    return {"inputs": inputs, "input": "standard normal, seed 0",
            "max_abs_difference": max(differences), "rendered_labels_agree": min(agreements)}


def export_run(
    source: str | Path,
    out: str | Path,
    *,
    fmt: str = FORMATS[0],
    size: Sequence[int] | None = None,
    checkpoint: str | None = None,
    overwrite: bool = False,
    budget: Budget | None = None,
) -> ExportResult:
    """``morse export``: write a run's model as an ExportedProgram, ONNX or TorchScript, and
    its description (a MONAI bundle: :func:`morse.inference.bundle.write_bundle`).

    Args:
        source: run folder or checkpoint.
        out: the model file to write (e.g. ``model.pt2``), its description going to
            ``OUT.json``.
        fmt: one of :data:`FORMATS` but ``bundle``.
        size: export for this spatial input size alone (default see :func:`graph_sizes`).
        checkpoint: "best" or "last" of a run folder (default the run's ``eval.checkpoint``).
        overwrite: replace existing files.
        budget: the render budget built into the graph (:mod:`morse.model.budget`; None:
            calibrated where the checkpoint holds a calibration, else the run's default);
            recorded in ``OUT.json``.

    Raises:
        DataError: unknown format, existing files, a checkpoint without a preprocessing
            record, no input size, a size the backbone refuses, ONNX packages missing, a
            graph torch.export cannot express; the message says what to change.
    """
    if fmt not in FORMATS:
        raise DataError(f"--format {fmt}: unknown; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if fmt == "bundle":  # the bundle builds on this module, so it has its own entry point
        raise DataError("--format bundle writes a folder: call "
                        "morse.inference.bundle.write_bundle")
    description = _check_out(out, overwrite)
    if fmt == "onnx":
        check_onnx_packages()
    run = load_run(source, "cpu", checkpoint, budget=budget)
    in_channels = int(check_record(run.preprocessing, f"checkpoint {run.path}")["in_channels"])
    sizes = graph_sizes(run, fmt, size)
    examples = check_inputs(run, sizes, in_channels)
    module = RenderedLogits(run.model, run.config.data.slice_size)
    if fmt == "torchscript":
        data = torchscript_bytes(module, examples[0], in_channels)
    else:
        program = export_program(module, examples[0], sizes, f"{run.path}")
        data = save_program(program) if fmt == "pt2" else onnx_bytes(program)
    check = check_export(runner(fmt, data), run, examples)
    atomic_write_bytes(out, data)
    atomic_write_text(description, json.dumps(
        describe(run, fmt, out.name, sizes, in_channels, check), indent=2) + "\n")
    return ExportResult(out, description, check.get("max_abs_difference"),
                        check.get("rendered_labels_agree"), sizes)


_HOW = {
    2: "slices along the last axis of the preprocessed scan (after the geometry, if any), "
       "one per image, each at its own size: the graph pads it (edge values, bottom and "
       "right, to a multiple of 32) when data.slice_size is null, else resizes it bilinearly "
       "to data.slice_size, and renders on the slice's own grid, as morse predict does",
    3: "windows cut from the preprocessed scan (after the geometry, if any): morse predict "
       "cuts windows of data.patch_size, blends overlapping windows with Gaussian weights "
       "and pads a smaller scan with zeros (MONAI's sliding_window_inference, eval.overlap)",
}
"""How ``morse predict`` cuts a scan into graph inputs, by spatial dims."""


def describe(run: TrainedRun, fmt: str, name: str, sizes: Sizes, in_channels: int,
             check: dict) -> dict:
    """What a deployment needs to feed the exported graph and read its outputs."""
    names = ["H", "W"] if run.model.spatial_dims == 2 else ["X", "Y", "Z"]
    spatial = list(sizes.minimum) if sizes.fixed else names
    classes = len(run.class_names)
    geometry = run.geometry
    return {
        "format": fmt,
        "file": name,
        "checkpoint": {"file": str(run.path), "step": run.step},
        "spatial_dims": run.model.spatial_dims,
        "input": {
            "name": "image", "dtype": "float32", "shape": ["B", in_channels, *spatial],
            "sizes": sizes.as_dict(),
            "meaning": "the network input: the scan (C, *S) with the preprocessing record "
                       "applied (axis_order on the spatial axes, then file_intensity, then "
                       "intensity per channel: morse.data.intensity.raw_to_network); B is free",
            "how": _HOW[run.model.spatial_dims],
            "geometry": None if geometry is None else (
                "the run resamples: bring the scan to RAS at preprocessing.geometry.spacing "
                "first (2D: in plane, the slice axis last); morse predict then renders on the "
                "scan's own voxels, the graph on its input's grid"),
        },
        "outputs": {
            "coarse": f"(B, {classes}, {', '.join(map(str, spatial))}) float32 logits of the "
                      "backbone, on the input's grid",
            "logits": f"(B, {classes}, {', '.join(map(str, spatial))}) float32 rendered "
                      "logits; the label map is their argmax over classes",
        },
        "in_channels": in_channels,
        "class_names": run.class_names,
        "training_size": {"slice_size": run.config.data.slice_size}
        if run.model.spatial_dims == 2 else {"patch_size": run.config.data.patch_size},
        "preprocessing": run.preprocessing,
        "renderer": None if run.model.renderer is None
        else dataclasses.asdict(run.model.renderer.config),
        "budget": run.budget(),
        "not_included": "flip TTA (eval.tta), mixed precision, sliding windows, resampling",
        "check": check,
        "torch": torch.__version__,
    }
