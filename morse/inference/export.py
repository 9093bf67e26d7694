"""Export a trained run for deployment: backbone and renderer as one TorchScript or ONNX graph.

Shapes: B images (any number), C_in channels, K classes, ``*S`` the fixed spatial size of
the export (the run's 2D ``data.slice_size``, 3D ``data.patch_size``, or ``--size``).

The exported graph takes the network input, a float32 (B, C_in, *S) tensor already brought
to what the network was trained on (the run's preprocessing record: axis order, the dataset
files' own preprocessing, normalisation; see :func:`morse.data.intensity.raw_to_network`),
and returns ``coarse`` (B, K, *S), the backbone's logits, and ``logits`` (B, K, *S), the
rendered logits on the same grid. The point selection is MORSE's (top-k uncertain cells,
adaptive margin, ``render_steps`` steps), run with static shapes: the point network sees all
N candidate rows of every step and the rows that do not count are discarded
(``static_shapes`` of :func:`morse.renderer.render.subdivision_render`), so the graph holds
no size that depends on values; cells and values are those of the checkpoint.

Next to the model, ``OUT.json`` (e.g. ``model.pt.json``) says what the input must be and holds
the preprocessing record, the classes and the check of the exported file against the
checkpoint. What the exported graph does not do: TTA, mixed precision, resizing a slice to
the training size and rendering back on its own grid (``morse predict`` does), sliding
windows over a volume larger than ``*S``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from morse.data.intensity import check_record
from morse.errors import DataError
from morse.inference.trained import TrainedRun, load_run
from morse.io import atomic_write_bytes, atomic_write_text
from morse.model import Morse
from morse.model.budget import Budget
from morse.shapes import check_grid_size

__all__ = ["FORMATS", "ExportResult", "RenderedLogits", "export_run", "export_size"]

FORMATS = ("torchscript", "onnx")
"""What ``morse export --format`` writes."""

_EXTRA = "pip install 'morse-seg[export]' (from a checkout: pip install -e '.[export]')"


class RenderedLogits(nn.Module):
    """A ``Morse`` model as one function of a fixed-size input, with static shapes.

    ``forward(image (B, C_in, *S))`` returns ``coarse`` (B, K, *S) and the rendered
    ``logits`` (B, K, *S) fp32, rendered on the input's grid as ``morse predict`` does.
    The graph runs in fp32 throughout: the model's renderer is set to
    ``render_precision="fp32"`` (its ``auto`` default would record bf16 casts).
    """

    def __init__(self, model: Morse, size: Sequence[int]) -> None:
        super().__init__()
        if model.renderer is not None:
            model.renderer.config = dataclasses.replace(model.renderer.config,
                                                        render_precision="fp32")
        self.model = model
        self.size = tuple(int(s) for s in size)
        # a deployed graph is never trained: parameters that require grad make a traced graph
        # build autograd history and fail under torch.inference_mode
        self.eval().requires_grad_(False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coarse, features = self.model.backbone_outputs(image)
        out = self.model.render(coarse, features, self.size, static_shapes=True)
        return out.coarse, out.logits


class _ShapeChecked(nn.Module):
    """The traced graph behind a check of the input (TorchScript, so it is kept in the file):
    a trace is only right for the shape it was traced at, so any other is refused."""

    def __init__(self, traced: nn.Module, in_channels: int, size: Sequence[int]) -> None:
        super().__init__()
        self.traced = traced
        self.in_channels = in_channels
        self.size = [int(s) for s in size]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image.dtype != torch.float32:
            raise ValueError("this MORSE export takes float32 input; convert it with .float()")
        if (image.dim() != len(self.size) + 2 or image.shape[1] != self.in_channels
                or image.shape[2:] != self.size):
            raise ValueError(f"this MORSE export takes (B, {self.in_channels}, *{self.size}) "
                             f"network input; got shape {image.shape}: pad or resize it, or "
                             "export again with morse export --size")
        return self.traced(image)


@dataclass
class ExportResult:
    """What ``export_run`` wrote and how close the file's outputs are to the checkpoint's.

    Attributes:
        model: the exported file.
        description: the JSON next to it.
        max_difference: largest |exported - checkpoint| of coarse and rendered logits on the
            check input; None when ONNX Runtime is absent (ONNX only).
        labels_agree: share of cells whose rendered label is the checkpoint's (None as above).
    """

    model: Path
    description: Path
    max_difference: float | None
    labels_agree: float | None


def export_size(run: TrainedRun, size: Sequence[int] | None = None) -> tuple[int, ...]:
    """The input size to export for: ``size``, else 2D ``data.slice_size``, 3D
    ``data.patch_size`` (the sliding window); DataError when a 2D run pads its slices."""
    dims = run.model.spatial_dims
    data = run.config.data
    if size is None:
        size = data.slice_size if dims == 2 else data.patch_size
        if size is None:
            raise DataError(
                f"{run.path}: this 2D run pads each slice to a multiple of 32 (data.slice_size "
                "is null), so there is no one input size; give the padded slice size to export "
                "for with --size H W"
            )
    if len(size) != dims or min(size) < 1:
        raise DataError(f"--size {' '.join(map(str, size))}: a {dims}D model needs {dims} "
                        "positive sizes")
    # the check runs the model on 2 inputs: K-class coarse and rendered maps for each
    check_grid_size(size, f"--size {' '.join(map(str, size))}",
                    2 * 4 * 2 * run.model.num_classes, "give the network's input size in voxels")
    return tuple(int(s) for s in size)


def _check_out(out: Path, overwrite: bool) -> Path:
    """The JSON path for model file ``out``; DataError when either exists (no overwrite)."""
    if out.suffix == ".json":
        raise DataError(f"{out}: OUT names the model file (e.g. model.pt or model.onnx); its "
                        "description goes next to it as OUT.json")
    description = out.with_name(out.name + ".json")
    existing = [p for p in (out, description) if p.exists()]
    if existing and not overwrite:
        raise DataError(f"{existing[0]}: already exists; pass --overwrite or another OUT")
    if out.is_dir():
        raise DataError(f"{out}: is a folder; OUT names the model file, e.g. {out / 'model.pt'}")
    return description


def _torchscript(module: RenderedLogits, example: torch.Tensor, in_channels: int) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # every size the trace reads is fixed by the input's shape, which _ShapeChecked pins;
        # TorchScript's deprecation notices (torch 2.13) are told once in docs/how-to/export.md
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.no_grad():
            traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(torch.jit.script(_ShapeChecked(traced, in_channels, module.size)), buffer)
    return buffer.getvalue()


def _onnx(module: RenderedLogits, example: torch.Tensor) -> bytes:
    try:
        import onnx  # noqa: F401  (the exporter needs both)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise DataError(f"--format onnx needs the packages onnx and onnxscript ({error.name} "
                        f"is missing): {_EXTRA}") from None
    # torch logs the torchvision operators it cannot register, the graph optimiser a line per
    # operator it leaves as it is: nothing a user of `morse export` can act on
    logs = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree notice
            program = torch.onnx.export(
                module, (example,), dynamo=True, verbose=False, external_data=False,
                input_names=["image"], output_names=["coarse", "logits"],
                dynamic_shapes={"image": {0: torch.export.Dim("batch")}},
            )
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)
    return program.model_proto.SerializeToString()


def _run_exported(fmt: str, data: bytes, image: torch.Tensor) -> list[torch.Tensor] | None:
    """The exported file's (coarse, logits) on ``image``; None for ONNX without onnxruntime."""
    if fmt == "torchscript":  # as a user calls it: grad mode on, no inference_mode
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return list(torch.jit.load(io.BytesIO(data))(image))
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return [torch.from_numpy(a) for a in session.run(None, {"image": image.numpy()})]


def _check(fmt: str, data: bytes, run: TrainedRun, example: torch.Tensor, size) -> dict:
    """The exported file against the checkpoint's own path (``Morse.forward``)."""
    outputs = _run_exported(fmt, data, example)
    if outputs is None:
        return {"note": f"not checked: onnxruntime is not installed ({_EXTRA})"}
    with torch.inference_mode():
        reference = run.model(example, output_size=size)
    pairs = zip(outputs, (reference.coarse, reference.logits))
    difference = max(float((a - b.float()).abs().max()) for a, b in pairs)
    agree = float((outputs[1].argmax(1) == reference.logits.argmax(1)).float().mean())
    return {"input": f"standard normal {list(example.shape)}, seed 0",
            "max_abs_difference": difference, "rendered_labels_agree": agree}


def export_run(
    source: str | Path,
    out: str | Path,
    *,
    fmt: str = "torchscript",
    size: Sequence[int] | None = None,
    checkpoint: str | None = None,
    overwrite: bool = False,
    budget: Budget | None = None,
) -> ExportResult:
    """``morse export``: write a run's model as TorchScript or ONNX, and its description.

    Args:
        source: run folder or checkpoint.
        out: the model file to write (e.g. ``model.pt``); the description goes to
            ``OUT.json`` (``model.pt.json``).
        fmt: one of :data:`FORMATS`.
        size: the spatial input size (default see :func:`export_size`).
        checkpoint: "best" or "last" of a run folder (default the run's ``eval.checkpoint``).
        overwrite: replace existing files.
        budget: the render budget built into the graph (:mod:`morse.model.budget`; None:
            calibrated where the checkpoint holds a calibration, else the run's default);
            recorded in ``OUT.json``.

    Raises:
        DataError: unknown format, existing files, a checkpoint without a preprocessing
            record, no input size, a size the backbone refuses, ONNX packages missing; the
            message says what to change.
    """
    if fmt not in FORMATS:
        raise DataError(f"--format {fmt}: unknown; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    description = _check_out(out, overwrite)
    run = load_run(source, "cpu", checkpoint, budget=budget)
    in_channels = int(check_record(run.preprocessing, f"checkpoint {run.path}")["in_channels"])
    size = export_size(run, size)
    example = torch.randn(2, in_channels, *size, generator=torch.Generator().manual_seed(0))
    module = RenderedLogits(run.model, size)
    try:
        with torch.inference_mode():
            module(example)
    except ValueError as error:
        raise DataError(f"--size {' '.join(map(str, size))}: {error}") from None
    data = _torchscript(module, example, in_channels) if fmt == "torchscript" else _onnx(
        module, example)
    check = _check(fmt, data, run, example, size)
    atomic_write_bytes(out, data)
    atomic_write_text(description, json.dumps(
        _description(run, out, fmt, size, in_channels, check), indent=2) + "\n")
    return ExportResult(out, description, check.get("max_abs_difference"),
                        check.get("rendered_labels_agree"))


_HOW = {
    2: "slices along the last axis of the preprocessed scan, each brought to `size`: morse "
       "predict pads (edge values, bottom and right) when data.slice_size is null, else resizes "
       "bilinearly and renders on the slice's own grid, which this graph does not: it renders "
       "on its input's grid",
    3: "windows of `size` cut from the preprocessed scan: morse predict blends overlapping "
       "windows with Gaussian weights and pads a smaller scan with zeros (MONAI's "
       "sliding_window_inference, eval.overlap)",
}
"""How ``morse predict`` cuts a scan into inputs of the exported size, by spatial dims."""


def _description(run: TrainedRun, out: Path, fmt: str, size, in_channels: int,
                 check: dict) -> dict:
    """What a deployment needs to feed the exported graph and read its outputs."""
    shape = ["B", in_channels, *size]
    return {
        "format": fmt,
        "file": out.name,
        "checkpoint": {"file": str(run.path), "step": run.step},
        "spatial_dims": run.model.spatial_dims,
        "input": {
            "name": "image", "dtype": "float32", "shape": shape,
            "meaning": "the network input: the scan (C, *S) with the preprocessing record "
                       "applied (axis_order on the spatial axes, then file_intensity, then "
                       "intensity per channel: morse.data.intensity.raw_to_network); B is free",
            "how": _HOW[run.model.spatial_dims],
        },
        "outputs": {
            "coarse": f"(B, {len(run.class_names)}, {', '.join(map(str, size))}) float32 "
                      "logits of the backbone",
            "logits": f"(B, {len(run.class_names)}, {', '.join(map(str, size))}) float32 "
                      "rendered logits; the label map is their argmax over classes",
        },
        "in_channels": in_channels,
        "class_names": run.class_names,
        "size": list(size),
        "training_size": {"slice_size": run.config.data.slice_size}
        if run.model.spatial_dims == 2 else {"patch_size": run.config.data.patch_size},
        "preprocessing": run.preprocessing,
        "renderer": None if run.model.renderer is None
        else dataclasses.asdict(run.model.renderer.config),
        "budget": run.budget(),
        "not_included": "flip TTA (eval.tta), mixed precision",
        "check": check,
        "torch": torch.__version__,
    }
