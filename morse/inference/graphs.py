"""The exported graph's file formats: torch.export's program (``.pt2``), ONNX (from that
program, through the dynamo exporter) and TorchScript (one traced size), written to bytes and
run back as a user runs them (:func:`runner`). What goes into the graph, its sizes and its
check: :mod:`morse.inference.export`.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from morse.errors import DataError

if TYPE_CHECKING:
    from morse.inference.export import Sizes

__all__ = ["EXTRA", "check_onnx_packages", "export_program", "load_program", "onnx_bytes",
           "runner", "save_program", "torchscript_bytes"]

EXTRA = "pip install 'morse-seg[export]' (from a checkout: pip install -e '.[export]')"


def export_program(module: nn.Module, example: torch.Tensor, sizes: Sizes,
                   what: str) -> torch.export.ExportedProgram:
    """``torch.export`` of ``module`` for every size in ``sizes`` (any batch); DataError
    naming ``what`` and ``--size`` when torch.export cannot express it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree notice
            return torch.export.export(module, (example,), dynamic_shapes=sizes.dynamic_shapes(),
                                       strict=False)
    except Exception as error:  # torch.export's errors have no common base
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
        fix = "" if sizes.fixed else "; export one size with --size"
        raise DataError(f"{what}: torch.export cannot export it for {sizes.text()} "
                        f"({type(error).__name__}: {detail}){fix}") from None


def load_program(data: bytes) -> nn.Module:
    """A saved ExportedProgram as a module (it refuses inputs outside its sizes)."""
    return torch.export.load(io.BytesIO(data)).module()


def save_program(program: torch.export.ExportedProgram) -> bytes:
    """The program as the bytes of a ``.pt2`` file."""
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


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
                             "export again with morse export --size (or --format pt2)")
        return self.traced(image)


def torchscript_bytes(module: nn.Module, example: torch.Tensor, in_channels: int) -> bytes:
    """``module`` traced at ``example``'s shape, behind a check that refuses any other."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # every size the trace reads is fixed by the input's shape, which _ShapeChecked pins;
        # TorchScript's deprecation notices (torch 2.13) are told once in docs/how-to/export.md
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.no_grad():
            traced = torch.jit.trace(module, example, check_trace=False)
        size = example.shape[2:]
        torch.jit.save(torch.jit.script(_ShapeChecked(traced, in_channels, size)), buffer)
    return buffer.getvalue()


def check_onnx_packages() -> None:
    """DataError with the install line unless the ONNX exporter's packages import."""
    try:
        import onnx  # noqa: F401  (the exporter needs both)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise DataError(f"--format onnx needs the packages onnx and onnxscript ({error.name} "
                        f"is missing): {EXTRA}") from None


def onnx_bytes(program: torch.export.ExportedProgram) -> bytes:
    """The program through the dynamo ONNX exporter, as the bytes of a ``.onnx`` file."""
    # torch logs the torchvision operators it cannot register, the graph optimiser a line per
    # operator it leaves as it is: nothing a user of `morse export` can act on
    logs = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            onnx_program = torch.onnx.export(
                program, dynamo=True, verbose=False, external_data=False,
                input_names=["image"], output_names=["coarse", "logits"])
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)
    return onnx_program.model_proto.SerializeToString()


def runner(fmt: str, data: bytes):
    """A function running the exported file on an input, as a user calls it (grad mode on,
    no inference_mode); None for ONNX without onnxruntime."""
    if fmt == "pt2":
        program = load_program(data)
        return lambda image: list(program(image))
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            script = torch.jit.load(io.BytesIO(data))
        return lambda image: list(script(image))
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return lambda image: [torch.from_numpy(a)
                          for a in session.run(None, {"image": image.numpy()})]
