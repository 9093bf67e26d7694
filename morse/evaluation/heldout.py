"""Score a trained run on a held-out folder pair: raw NIfTI images and their label maps.

The images go through ``morse predict``'s path (:func:`morse.inference.files.segment_files`:
raw scan + the checkpoint's preprocessing record -> the model -> maps on each scan's own grid)
and the maps are scored as ``morse score`` scores files
(:func:`morse.evaluation.score.pair_metrics`), so the numbers are the ones a user gets from
``morse predict`` followed by ``morse score``.

The default pair is ``imagesTs/`` + ``labelsTs/`` of the run's nnU-Net or Decathlon dataset.
Shapes: label maps (*S) on the grid of the case's first image file.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from morse.config import Config
from morse.data.files import group_channel_files, list_files
from morse.data.nifti import image_grid, read_label_map
from morse.data.volume import Volume
from morse.device import resolve_device, set_threads
from morse.errors import DataError
from morse.evaluation.evaluate import evaluate, example_slice, example_slices, save_examples
from morse.evaluation.score import label_files, pair_metrics, pair_problem
from morse.evaluation.tables import format_table, summarise, write_metrics
from morse.inference.files import ScanPrediction, segment_files
from morse.inference.trained import TrainedRun, load_run
from morse.io.lock import FolderLock
from morse.metrics import ClassMetrics, MetricSettings

__all__ = ["SUBSETS", "dataset_heldout", "evaluate_heldout", "evaluate_run", "heldout_pair"]

#: What ``morse evaluate --subset`` accepts; "all" is the split's test subset and the held-out
#: set.
SUBSETS = ("all", "test", "val", "heldout")

_IMAGE_FIX = "an image and its label map must share one grid"


def dataset_heldout(cfg: Config) -> tuple[Path, Path] | None:
    """``(imagesTs, labelsTs)`` of the run's nnU-Net / Decathlon dataset when both exist."""
    if cfg.data.format not in ("nnunet", "msd"):
        return None
    root = Path(cfg.data.root)
    images, labels = root / "imagesTs", root / "labelsTs"
    return (images, labels) if images.is_dir() and labels.is_dir() else None


def _image_groups(images: Path) -> dict[str, list[Path]]:
    """``{case: channel files}`` of the NIfTI images in a folder."""
    if not images.is_dir():
        raise DataError(f"{images}: no such folder; give the folder holding the held-out images")
    files = list_files(images)
    if not files:
        raise DataError(f"{images}: no NIfTI images (.nii or .nii.gz) in this folder; give the "
                        "folder the held-out scans are in")
    return group_channel_files(files)


def _matched(images: Path, labels: Path) -> tuple[dict[str, list[Path]], dict[str, Path]]:
    """The image groups and label files of the same cases; DataError naming unmatched ones."""
    groups, refs = _image_groups(images), label_files(labels, "held-out label maps")
    parts = []
    unlabelled, orphans = sorted(set(groups) - set(refs)), sorted(set(refs) - set(groups))
    if unlabelled:
        parts.append(f"{labels}: no label map for image case(s) {unlabelled[:5]}")
    if orphans:
        parts.append(f"{images}: no image for label map(s) {orphans[:5]}")
    if parts:
        raise DataError("; ".join(parts) + "; every held-out image needs its label map "
                        "(CASE.nii.gz for CASE_0000.nii.gz) and every label map its image")
    return groups, refs


def _check_grids(groups: dict[str, list[Path]], refs: dict[str, Path], num_classes: int) -> None:
    """Every image against its label map (grid, label values) before anything is predicted."""
    for case, files in groups.items():
        ref = read_label_map(refs[case], num_classes,
                             fix=f"the model predicts {num_classes} classes; give label maps of "
                                 "the classes it was trained on")
        problem = pair_problem(image_grid(files[0]), ref.grid, fix=_IMAGE_FIX)
        if problem:
            raise DataError(problem)


def evaluate_heldout(
    run: TrainedRun | str | Path,
    images: str | Path,
    labels: str | Path,
    out_dir: str | Path | None = None,
    *,
    device: str = "auto",
    verbose: bool = True,
) -> dict[str, dict]:
    """Predict every image of ``images`` as ``morse predict`` does and score it against
    ``labels``; write ``metrics.json``, ``metrics.csv`` (outputs coarse and rendered) and
    ``examples.npz`` (slices chosen as for the split's test subset, shown by ``morse report``).

    Args:
        run: a loaded run, or its folder or checkpoint.
        images: folder of raw scans (``CASE_0000.nii.gz``..., or one file per case).
        labels: folder of label maps ``CASE.nii.gz``.
        out_dir: results folder (default ``RUN/eval_<images folder name>``).
        device: where the network runs.

    Returns:
        ``{"coarse": summary, "rendered": summary}`` as from :func:`evaluate`.

    Raises:
        DataError: an empty folder, an image without label (or the reverse), an image and
            label on different grids, labels outside the model's classes.
    """
    torch_device = resolve_device(device)
    run = run if isinstance(run, TrainedRun) else load_run(run, torch_device)
    images, labels = Path(images), Path(labels)
    groups, refs = _matched(images, labels)
    names = run.class_names
    _check_grids(groups, refs, len(names))
    settings = MetricSettings(tuple(run.config.eval.nsd_tolerances_mm),
                              run.config.eval.biou_width_mm)
    outputs = ("coarse", "rendered") if run.model.renderer is not None else ("coarse",)
    if verbose:
        print(f"held-out set {images} ({len(groups)} case(s)), labels {labels}")
    results: dict[str, dict[str, dict[int, ClassMetrics]]] = {o: {} for o in outputs}
    examples, wanted = [], run.config.eval.num_examples
    for scan in segment_files(run, groups, torch_device, progress=verbose):
        ref = read_label_map(refs[scan.case], len(names))
        for output in outputs:
            results[output][scan.case] = pair_metrics(getattr(scan.prediction, output), ref,
                                                      len(names), settings)
        examples += _examples(scan, ref.label, -(-wanted // len(groups)), outputs)
    out_dir = Path(out_dir) if out_dir else run.path.parent / f"eval_{images.name}"
    write_metrics(out_dir, results, names, settings=settings,
                  checkpoint={"file": run.path.name, "step": run.step},
                  extra={"images": str(images), "labels": str(labels),
                         "tta": run.config.eval.tta})
    save_examples(out_dir / "examples.npz", examples[:wanted])
    summaries = {name: summarise(per_case, names) for name, per_case in results.items()}
    if verbose:
        print(format_table(summaries, names))
        tta = ", flip TTA" if run.config.eval.tta else ""
        print(f"scored {run.path} (step {run.step}{tta}) on {images}; wrote "
              f"{out_dir / 'metrics.json'}")
    return summaries


def _examples(
    scan: ScanPrediction, label: np.ndarray, count: int, outputs: tuple[str, ...]
) -> list[dict]:
    """``count`` example slices of a held-out case, as the split's test subset gives them.

    The reference (*S) may lack the trailing axis of length 1 that the scan (C, *S) keeps."""
    if scan.image is None or count < 1:
        return []
    volume = Volume(scan.image, label.reshape(scan.image.shape[1:]), case_id=scan.case,
                    source=str(scan.reference))
    return [example_slice(volume, scan.prediction, k, outputs)
            for k in example_slices(volume.label, count)]


def heldout_pair(
    cfg: Config, images: str | Path | None = None, labels: str | Path | None = None,
    *, required: bool = True,
) -> tuple[Path, Path] | None:
    """The held-out pair to score: ``images`` + ``labels`` when given, else the dataset's
    imagesTs + labelsTs; checked (both folders, every image with its label map) before
    anything is predicted.

    Args:
        cfg: the run's config (its ``data.root`` and ``data.format``).
        images, labels: a folder pair given on the command line (both or neither).
        required: raise when there is no pair; False returns None instead.

    Raises:
        DataError: one of images/labels without the other, no held-out set (the message says
            which folder is missing), or images and label maps that do not pair up.
    """
    if (images is None) != (labels is None):
        raise DataError("--images and --labels go together: give the held-out scans and the "
                        "folder of their label maps")
    pair = (Path(images), Path(labels)) if images is not None else dataset_heldout(cfg)
    if pair is None:
        if not required:
            return None
        raise DataError(_no_heldout(cfg))
    _matched(*pair)
    return pair


def _no_heldout(cfg: Config) -> str:
    """Why the run's dataset has no held-out set, and the fix."""
    fix = "pass --images DIR --labels DIR"
    if cfg.data.format not in ("nnunet", "msd"):
        return (f"data.format {cfg.data.format}: only nnunet and msd datasets have a held-out "
                f"set (imagesTs + labelsTs); {fix}")
    root = Path(cfg.data.root)
    if not (root / "imagesTs").is_dir():
        return f"{root / 'imagesTs'}: no such folder, so {root} has no held-out set; {fix}"
    return (f"{root / 'labelsTs'}: no such folder: the held-out scans in imagesTs have no label "
            f"maps to score against; put them there (CASE.nii.gz) or {fix}")


def evaluate_run(
    source: str | Path,
    out_dir: str | Path | None = None,
    *,
    subset: str = "all",
    data_root: str | None = None,
    images: str | Path | None = None,
    labels: str | Path | None = None,
    device: str = "auto",
    checkpoint: str | None = None,
    tta: bool | None = None,
    threads: int | None = None,
) -> dict[str, dict]:
    """``morse evaluate``: the split's test (or val) subset and/or a held-out folder pair.

    Args:
        source: run folder or checkpoint.
        out_dir: results folder of the one set scored; with ``subset="all"`` the test
            subset's, the held-out set going to ``OUT/eval_<images folder name>``. Default:
            the run folder (test), ``RUN/eval_val``, ``RUN/eval_<images folder name>``.
        subset: one of :data:`SUBSETS`.
        data_root: the dataset folder instead of the run's.
        images, labels: a held-out pair instead of the dataset's imagesTs + labelsTs.
        tta: flip test-time augmentation on or off (None: the run's ``eval.tta``).
        threads: CPU threads of torch (None: the run's ``train.threads``).

    Returns:
        ``{set name: {"coarse": summary, "rendered": summary}}`` of the sets scored.
    """
    if subset not in SUBSETS:
        raise DataError(f"--subset {subset}: unknown; choose one of {', '.join(SUBSETS)}")
    torch_device = resolve_device(device)
    run = load_run(source, torch_device, checkpoint, tta=tta)
    set_threads(threads if threads is not None else run.config.train.threads)
    if data_root is not None:
        run.config = replace(run.config, data=replace(run.config.data, root=data_root))
    with FolderLock(Path(out_dir) if out_dir else run.path.parent, "morse evaluate"):
        return _evaluate_sets(run, out_dir, subset, images, labels, device)


def _evaluate_sets(run: TrainedRun, out_dir: str | Path | None, subset: str,
                   images: str | Path | None, labels: str | Path | None,
                   device: str) -> dict[str, dict]:
    """The sets of :func:`evaluate_run`, scored while it holds the output folder."""
    scored = {}
    # the held-out pair is checked before the split's subset is scored, so a wrong flag
    # stops at once instead of after a whole evaluation
    pair = (heldout_pair(run.config, images, labels, required=subset == "heldout")
            if subset in ("all", "heldout") else None)
    if subset != "heldout":
        split = "test" if subset == "all" else subset
        scored[split] = evaluate(run, out_dir, subset=split, device=device,
                                 require_cases=subset != "all")
    if pair is not None:
        base = Path(out_dir) if out_dir else run.path.parent
        folder = base if subset == "heldout" and out_dir else base / f"eval_{pair[0].name}"
        print()
        scored[pair[0].name] = evaluate_heldout(run, *pair, folder, device=device)
    if not any(scored.values()):
        raise DataError(f"{run.config.data.root}: nothing to score: the split's test subset is "
                        "empty and there is no imagesTs with labelsTs; give data.split_fractions "
                        "a test share or pass --images DIR --labels DIR")
    return scored
