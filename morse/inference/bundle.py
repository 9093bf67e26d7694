"""``morse export RUN DIR --format bundle``: a MONAI bundle that segments NIfTI scans as
``morse predict`` does, run with MONAI's bundle API alone.

The bundle holds the run's graph as ``torch.export``'s ExportedProgram
(``models/model.pt2``, :mod:`morse.inference.export`), loaded in the config with
``torch.export.load``: MONAI and torch are all it imports, not ``morse``. Its inference
config (``configs/inference.json``) is MONAI's usual evaluator:

* ``preprocessing``: ``LoadImaged``; the run's intensity record as MONAI transforms
  (``ScaleIntensityRanged`` / ``NormalizeIntensityd`` / ``ScaleIntensityd`` with the recorded
  statistics, as :func:`morse.data.intensity.apply_intensity` runs them); for a run that
  resamples, ``Orientationd`` to RAS, the 2D slice axis moved last (``Transposed``) and
  ``Spacingd`` to the recorded spacing (2D: in plane only);
* ``inferer``: 2D runs a ``SliceInferer`` over the last axis with whole slices (the graph pads
  or resizes each slice itself, as ``morse predict``), 3D a ``SlidingWindowInferer`` of
  ``data.patch_size`` with Gaussian blending and ``eval.overlap`` (what ``morse predict``
  runs);
* ``postprocessing``: ``Invertd`` on the rendered logits (bilinear), argmax, ``SaveImaged``;
* ``run``: each scan through the three, one after the other (a plain loop: MONAI's
  ``SupervisedEvaluator`` would need pytorch-ignite).

Where it differs from ``morse predict``: a run that resamples renders on the resampled grid
and the logits are resampled back by ``Invertd``, where ``morse predict`` renders directly on
the scan's own voxels (and resamples with ``Resize`` over the field of view, not
``Spacingd``); labels then differ near boundaries (bounded in tests/test_bundle.py). Without
resampling they are ``morse predict``'s. Not included: flip TTA, mixed precision.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from morse.data.intensity import check_record
from morse.errors import DataError
from morse.inference.export import (
    ExportResult,
    RenderedLogits,
    check_export,
    check_inputs,
    describe,
    graph_sizes,
)
from morse.inference.graphs import export_program, load_program
from morse.inference.trained import TrainedRun, load_run
from morse.io import atomic_write_bytes, atomic_write_text
from morse.model.budget import Budget

__all__ = ["write_bundle", "intensity_transforms"]

MODEL = "models/model.pt2"


def write_bundle(
    source: str | Path,
    out: str | Path,
    *,
    size: Sequence[int] | None = None,
    checkpoint: str | None = None,
    overwrite: bool = False,
    budget: Budget | None = None,
) -> ExportResult:
    """Write the MONAI bundle of a run to folder ``out`` (see the module docstring); ``budget``
    as for :func:`morse.inference.export.export_run`.

    Raises:
        DataError: ``out`` exists (without ``overwrite``) or is a file, the checkpoint has no
            preprocessing record, or its intensity steps differ per channel in a way MONAI's
            transforms cannot apply in one pass.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: is a file; --format bundle writes a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out}: already exists; pass --overwrite or another DIR")
    run = load_run(source, "cpu", checkpoint, budget=budget)
    record = check_record(run.preprocessing, f"checkpoint {run.path}")
    preprocessing = preprocessing_transforms(record, run.path)  # refused before the export
    in_channels = int(record["in_channels"])
    sizes = graph_sizes(run, "bundle", size)
    examples = check_inputs(run, sizes, in_channels)
    module = RenderedLogits(run.model, run.config.data.slice_size, coarse=False)
    program = export_program(module, examples[0], sizes, f"{run.path}")
    data = _saved(program)
    exported = load_program(data)
    check = check_export(lambda image: [exported(image)], run, examples, coarse=False)
    description = describe(run, "bundle", MODEL, sizes, in_channels, check)
    if overwrite and out.exists():
        shutil.rmtree(out)
    atomic_write_bytes(out / MODEL, data)
    atomic_write_text(out / "configs" / "inference.json",
                      json.dumps(inference_config(run, preprocessing), indent=2) + "\n")
    metadata = out / "configs" / "metadata.json"
    atomic_write_text(metadata, json.dumps(_metadata(run, description), indent=2) + "\n")
    atomic_write_text(out / "configs" / "logging.conf", _LOGGING)
    atomic_write_text(out / "docs" / "README.md", _readme(run, description))
    atomic_write_text(out / "LICENSE", _LICENSE)
    return ExportResult(out, metadata, check.get("max_abs_difference"),
                        check.get("rendered_labels_agree"), sizes)


def _saved(program: torch.export.ExportedProgram) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _item(target: str, **arguments: Any) -> dict:
    return {"_target_": target, **arguments}


def intensity_transforms(record: dict, source: Path | str = "checkpoint") -> list[dict]:
    """The record's ``file_intensity`` and per channel ``intensity`` steps as MONAI
    dictionary transforms on ``image`` (C, *S); DataError for steps that differ per channel
    other than by z-score statistics."""
    transforms = _step_transforms(record["file_intensity"])
    steps = record["intensity"]
    if len(steps) == 1 or all(step == steps[0] for step in steps):
        return transforms + _step_transforms(steps[0])
    if all(step.get("scheme") == "zscore" and "mean" in step for step in steps):
        return transforms + [_item(
            "NormalizeIntensityd", keys="image", nonzero=True, channel_wise=True,
            subtrahend=[float(step["mean"]) for step in steps],
            divisor=[float(step["std"]) for step in steps])]
    raise DataError(
        f"{source}: its channels are normalised with different steps "
        f"({', '.join(step['scheme'] for step in steps)}), which the bundle's MONAI "
        "transforms cannot apply in one pass; use morse predict or --format pt2 with "
        "morse.data.intensity.raw_to_network")


def _step_transforms(step: dict) -> list[dict]:
    """One step on every channel (``morse.data.intensity``'s transforms, dictionary form)."""
    scheme = step["scheme"]
    if scheme == "none":
        return []
    if scheme == "zscore":
        stats = {} if "mean" not in step else {"subtrahend": float(step["mean"]),
                                               "divisor": float(step["std"])}
        return [_item("NormalizeIntensityd", keys="image", nonzero=True, channel_wise=True,
                      **stats)]
    if scheme == "minmax":
        return [_item("ScaleIntensityd", keys="image", minv=0.0, maxv=1.0, channel_wise=True)]
    if scheme == "ct":
        (low, high), (b_min, b_max) = step["clip"], step["scale"]
    else:  # ct-percentile
        low, high, mean, std = (float(step[k]) for k in ("lower", "upper", "mean", "std"))
        b_min, b_max = (low - mean) / std, (high - mean) / std
    return [_item("ScaleIntensityRanged", keys="image", a_min=float(low), a_max=float(high),
                  b_min=float(b_min), b_max=float(b_max), clip=True)]


def preprocessing_transforms(record: dict, source: Path | str = "checkpoint") -> list[dict]:
    """From a raw NIfTI scan to the network's grid: load, intensity, then the geometry."""
    order = list(record["axis_order"])
    geometry = record.get("geometry")
    if order != [0, 1, 2] and geometry is not None:
        raise DataError(f"{source}: its record both permutes the scan's axes and resamples "
                        "it, which the bundle cannot express; use morse predict")
    transforms = [_item("LoadImaged", keys="image", image_only=True, ensure_channel_first=True,
                        dtype="$numpy.float32")]
    if order != [0, 1, 2]:
        transforms.append(_item("Transposed", keys="image", indices=[0, *(1 + a for a in order)]))
    transforms += intensity_transforms(record, source)
    if geometry is None:
        return transforms
    # the labels given: nibabel's RAS, as morse.data.geometry reads it (MONAI warns otherwise)
    transforms.append(_item("Orientationd", keys="image", axcodes="RAS",
                            labels=[["L", "R"], ["P", "A"], ["I", "S"]]))
    slice_axis = geometry.get("slice_axis")
    axes = [0, 1, 2] if slice_axis is None else [a for a in range(3) if a != slice_axis] + [
        slice_axis]
    if axes != [0, 1, 2]:
        transforms.append(_item("Transposed", keys="image", indices=[0, *(1 + a for a in axes)]))
    # Spacingd keeps the spacing of an axis whose pixdim is <= 0: 2D slices stay as they are
    pixdim = [float(geometry["spacing"][a]) for a in axes]
    if slice_axis is not None:
        pixdim[-1] = -1.0
    # scale_extent: round(n * s / t) cells over the scan's field of view, as morse's own
    # resampling (morse.data.geometry.to_network) places them; the spacing stays t exactly
    transforms.append(_item("Spacingd", keys="image", pixdim=pixdim, mode="bilinear",
                            scale_extent=True, align_corners=True))
    return transforms


def _inferer(run: TrainedRun) -> dict:
    cfg = run.config
    if run.model.spatial_dims == 2:  # whole slices, the last axis; weight 1: exact
        return _item("SliceInferer", spatial_dim=2, roi_size=[-1, -1],
                     sw_batch_size=cfg.eval.slice_batch_size, mode="constant", progress=False)
    return _item("SlidingWindowInferer", roi_size=list(cfg.data.patch_size),
                 sw_batch_size=cfg.eval.sw_batch_size, overlap=cfg.eval.overlap,
                 mode="gaussian", progress=False)


def inference_config(run: TrainedRun, preprocessing: list[dict]) -> dict:
    """``configs/inference.json``: MONAI's evaluator over every scan in ``dataset_dir``."""
    channels = int(run.preprocessing["in_channels"])
    if channels == 1:
        datalist = ("$[{'image': f} for f in sorted(glob.glob(os.path.join(@dataset_dir, "
                    "'*.nii*')))]")
    else:  # nnU-Net channel files CASE_0000 ... CASE_{C-1}
        datalist = (f"$[{{'image': [f.replace('_0000.nii', '_%04d.nii' % c) for c in "
                    f"range({channels})]}} for f in sorted(glob.glob(os.path.join(@dataset_dir, "
                    "'*_0000.nii*')))]")
    return {
        "imports": ["$import glob", "$import os", "$import numpy", "$import torch",
                    "$import torch.export.passes"],
        "bundle_root": ".",
        "model_path": f"$os.path.join(@bundle_root, '{MODEL}')",
        "dataset_dir": "$os.path.join(@bundle_root, 'data')",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        # the program's constants (e.g. index ranges) are placed on the device with it
        "network_def": "$torch.export.passes.move_to_device_pass(torch.export.load("
                       "@model_path), @device).module()",
        "network": "@network_def",
        "datalist": datalist,
        "preprocessing": _item("Compose", transforms=preprocessing),
        "dataset": _item("Dataset", data="@datalist", transform="@preprocessing"),
        "inferer": _inferer(run),
        "postprocessing": _item("Compose", transforms=[
            _item("Invertd", keys="pred", transform="@preprocessing", orig_keys="image",
                  nearest_interp=False, to_tensor=True),
            _item("AsDiscreted", keys="pred", argmax=True),
            _item("SaveImaged", keys="pred", output_dir="@output_dir", output_postfix="seg",
                  output_dtype="$numpy.uint8", separate_folder=False, resample=False,
                  print_log=False),
        ]),
        # one scan at a time, no ignite: MONAI's SupervisedEvaluator needs pytorch-ignite
        "segment": "$lambda item: @postprocessing(dict(item, pred=@inferer("
                   "item['image'][None].to(@device), @network)[0]))",
        "run": ["$torch.no_grad()(lambda: [@segment(item) for item in @dataset])()"],
    }


def _metadata(run: TrainedRun, description: dict) -> dict:
    import monai

    classes = {str(i): name for i, name in enumerate(run.class_names)}
    dims = run.model.spatial_dims
    patch = dims == 3
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
                  "0.8.1/meta_schema_20240725.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by morse export from {run.path} (step {run.step})"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"nibabel": _version("nibabel")},
        "name": f"MORSE {run.config.name}",
        "task": f"{dims}D segmentation of {', '.join(run.class_names[1:])}",
        "description": f"A MORSE model ({run.config.model.backbone} backbone and implicit "
                       "point renderer) exported as torch.export's ExportedProgram; see "
                       "docs/README.md",
        "authors": "",
        "copyright": "",
        "data_type": "nifti",
        "image_classes": f"{run.preprocessing['in_channels']} channel(s), raw intensities",
        "label_classes": ", ".join(f"{i}: {name}" for i, name in enumerate(run.class_names)),
        "pred_classes": ", ".join(f"{i}: {name}" for i, name in enumerate(run.class_names)),
        "intended_use": "research; check it on your own data before any use",
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "magnitude", "modality": "",
                "num_channels": int(run.preprocessing["in_channels"]),
                "spatial_shape": description["input"]["shape"][2:],
                "dtype": "float32", "value_range": [], "is_patch_data": patch,
                "channel_def": {str(c): f"channel {c}"
                                for c in range(run.preprocessing["in_channels"])},
            }},
            "outputs": {"pred": {
                "type": "image", "format": "segmentation", "num_channels": len(classes),
                "spatial_shape": description["input"]["shape"][2:], "dtype": "float32",
                "value_range": [], "is_patch_data": patch, "channel_def": classes,
            }},
        },
        "morse": description,
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _readme(run: TrainedRun, description: dict) -> str:
    check = description["check"]
    return f"""# MORSE {run.config.name}

A {run.model.spatial_dims}D MORSE model (backbone `{run.config.model.backbone}` and implicit
point renderer) exported by `morse export --format bundle` from `{run.path}` (step
{run.step}). Classes: {", ".join(run.class_names)}.

## Run it

```bash
python -m monai.bundle run --config_file configs/inference.json --bundle_root . \\
    --dataset_dir /path/to/scans --output_dir /path/to/labels
```

Each `*.nii.gz` in `dataset_dir` (multi-channel runs: each `CASE_0000.nii.gz` with its
`CASE_0001...` files) gets `CASE_seg.nii.gz` in `output_dir`, on the scan's own grid.
MONAI and torch are all it needs; `torch.export.load` reads `models/model.pt2`.

## What it does

- preprocessing (`configs/inference.json`): the run's intensity normalisation with its
  recorded statistics, then, if the run resamples, RAS orientation and the training spacing;
- the network: {description["input"]["how"]};
- input sizes the graph takes: {description["input"]["sizes"]["rule"]};
- the rendered logits are brought back to the scan's grid (`Invertd`), then the argmax is
  saved.

Not included: flip test-time augmentation, mixed precision. A run that resamples renders on
the resampled grid and its logits are interpolated back, where `morse predict` renders on the
scan's own voxels: labels can differ near boundaries.

Check at export, on random inputs {check.get("inputs")}: largest logit difference to the
checkpoint {check.get("max_abs_difference")}, rendered labels agreeing on
{check.get("rendered_labels_agree")} of the cells.
"""


_LICENSE = """The code that wrote this bundle, MORSE (morse-seg), is under the Apache License 2.0.

The model's weights were trained by whoever ran `morse train`, on their data: the terms
under which they may be shared and used follow from that data's licence, which the owner of
this bundle states here.
"""


_LOGGING = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""
