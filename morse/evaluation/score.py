"""``morse score``: label maps in one folder against references in another, matched by case.

The counterpart of nnU-Net's folder evaluation with MORSE's metrics and empty-mask policy
(:mod:`morse.metrics`). It needs no model and no ``dataset.json``: a case is a file
name without its ending (``case7.nii.gz`` -> ``case7``), in either folder.

Shapes: a label map is (H, W), (H, W, 1), (X, Y, Z) or (X, Y, Z, 1) in nibabel's order (a
trailing axis of length 1 is dropped); its spacing comes from the reference's affine, in mm.

Before any case is scored, every pair is checked: both files readable, integer labels in range,
the same shape, spacing and affine (within :data:`morse.data.nifti.AFFINE_TOLERANCE_MM`), and
orientation in both headers or in neither. Maps that MORSE writes next to a label map
(``CASE_coarse``, ``CASE_probabilities``, ``CASE_points``) are not cases; with a suffix
(``suffix="_coarse"``) the predictions are the ``CASE_coarse`` maps instead, each scored
against the reference ``CASE``. Every file left unscored is listed, in one line.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from morse.data.dataset_json import read_dataset_json
from morse.data.files import list_files, strip_ending
from morse.data.nifti import UNORIENTED, Grid, LabelMap, grid_problems, read_label_map
from morse.errors import DataError
from morse.evaluation.tables import format_table, summarise, write_metrics
from morse.metrics import ClassMetrics, MetricSettings, case_metrics

__all__ = [
    "EXTRA_MAPS",
    "ScoreResult",
    "flag_settings",
    "label_files",
    "select_files",
    "pair_problem",
    "pair_metrics",
    "default_output",
    "score_folders",
    "skipped_line",
]

#: Suffixes of the maps ``morse predict`` writes beside ``CASE.nii.gz``; never cases here.
EXTRA_MAPS = ("coarse", "probabilities", "points")

#: Name of the one output in ``metrics.json`` written by :func:`score_folders`.
OUTPUT = "prediction"


PREDICTION_FIX = ("a prediction must lie on its reference's grid (resample it onto the "
                  "reference image, nearest neighbour)")


#: Why a file is left unscored, as :func:`select_files` and :func:`score_folders` say it.
EXTRA_REASON = "maps written beside a label map"
UNMATCHED_REASON = "cases in one folder only"


def select_files(
    folder: str | Path, what: str = "label maps", suffix: str = ""
) -> tuple[dict[str, Path], dict[Path, str]]:
    """The NIfTI files of ``folder`` that are cases, and those that are not.

    Args:
        folder: a folder of label maps.
        what: what the files are, for messages.
        suffix: ``""``: every file is a case but MORSE's extra maps (``CASE_coarse`` beside
            ``CASE``...); ``"_coarse"``: only ``CASE_coarse`` files are, as case ``CASE``.

    Returns:
        ``({case: file}, {skipped file: why})``.

    Raises:
        DataError: no such folder, no case file in it, or a case given twice (.nii and .nii.gz).
    """
    folder = Path(folder)
    if suffix[:1].isalnum():
        raise DataError(f"--suffix {suffix}: give the text between the case name and the "
                        f"ending with its separator, e.g. _{suffix} for CASE_{suffix}.nii.gz")
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; give the folder holding the {what}")
    found: dict[str, Path] = {}
    for path in list_files(folder):
        case = strip_ending(path.name)
        if case in found:
            raise DataError(f"{path}: case {case} is also {found[case].name}; keep one of them")
        found[case] = path
    if suffix:
        cases = {c[: -len(suffix)]: p for c, p in found.items()
                 if c.endswith(suffix) and len(c) > len(suffix)}
        why = f"not named CASE{suffix}"
    else:
        cases = {c: p for c, p in found.items()
                 if not (c.rpartition("_")[2] in EXTRA_MAPS and c.rpartition("_")[0] in found)}
        why = EXTRA_REASON
    if not cases:
        named = f"named CASE{suffix}.nii.gz or .nii" if suffix else "(.nii or .nii.gz)"
        raise DataError(f"{folder}: no NIfTI {what} {named} in this folder; give the folder "
                        f"the {what} are in")
    chosen = set(cases.values())
    return cases, {path: why for path in found.values() if path not in chosen}


def label_files(folder: str | Path, what: str = "label maps") -> dict[str, Path]:
    """``{case: file}`` of the NIfTI files in ``folder``, MORSE's extra maps left out (see
    :func:`select_files`)."""
    return select_files(folder, what)[0]


def pair_problem(pred: Grid, ref: Grid, fix: str = PREDICTION_FIX) -> str | None:
    """Why ``pred`` (a prediction, or the image it is made from) cannot be scored against
    ``ref`` (its reference label map): one line naming both files and what differs, or None."""
    if pred.oriented != ref.oriented:
        bare, other = (pred, ref) if ref.oriented else (ref, pred)
        return (f"{bare.path}: {UNORIENTED} "
                f"while {other.path} has one, so their grids cannot be compared; write the "
                "prediction with the reference image's header and affine")
    grid = grid_problems(pred.shape, pred.affine, ref.shape, ref.affine,
                         f"its reference {ref.path}", fix=fix)
    return f"{pred.path}: {grid[0]}" if grid else None


def pair_metrics(
    pred: np.ndarray, ref: LabelMap, num_classes: int, settings: MetricSettings
) -> dict[int, ClassMetrics]:
    """:func:`case_metrics` of a prediction (*spatial) against a reference, in mm.

    The one place that turns a reference file into metrics, shared by ``morse score`` and the
    held-out sets of ``morse evaluate`` so that both report the same numbers.
    """
    return case_metrics(pred, ref.label, num_classes, ref.spacing, settings)


@dataclass
class ScoreResult:
    """What :func:`score_folders` scored and wrote.

    Attributes:
        per_case: ``{case: {class_label: ClassMetrics}}``.
        class_names: K names, background first.
        summary: :func:`morse.evaluation.tables.summarise` of ``per_case``.
        missing: ``{"predictions": [...], "references": [...]}``, cases found on one side only.
        paths: ``(metrics.json, metrics.csv)`` when written.
        skipped: ``{file: why}`` of the NIfTI files in either folder that were not scored.
        output: the name of the scored maps in the table and ``metrics.json``.
    """

    per_case: dict[str, dict[int, ClassMetrics]]
    class_names: list[str]
    summary: dict
    missing: dict[str, list[str]] = field(default_factory=dict)
    paths: tuple[Path, ...] = ()
    skipped: dict[Path, str] = field(default_factory=dict)
    output: str = OUTPUT


def default_output(predictions: str | Path, suffix: str = "") -> Path:
    """Where ``morse score`` writes without ``-o``: the predictions folder, or
    ``PREDICTIONS/score_coarse`` for ``--suffix _coarse`` (the plain maps' scores stay)."""
    return Path(predictions) / f"score{suffix}" if suffix else Path(predictions)


def _missing(preds: dict[str, Path], refs: dict[str, Path]) -> dict[str, list[str]]:
    return {"predictions": sorted(set(refs) - set(preds)),
            "references": sorted(set(preds) - set(refs))}


def _missing_message(missing: dict[str, list[str]], predictions: Path, labels: Path,
                     matched: int) -> str:
    def some(cases: list[str]) -> str:
        return ", ".join(cases[:5]) + (f" and {len(cases) - 5} more" if len(cases) > 5 else "")

    parts = []
    if missing["predictions"]:
        parts.append(f"{predictions}: no prediction for {len(missing['predictions'])} "
                     f"reference case(s) ({some(missing['predictions'])})")
    if missing["references"]:
        parts.append(f"{labels}: no reference for {len(missing['references'])} predicted "
                     f"case(s) ({some(missing['references'])})")
    fix = (f"predict every case, or pass --allow-missing to score the {matched} matched "
           "case(s) and record the others" if matched else "no case is in both folders; "
           "check the two folders and their file names")
    return "; ".join(parts) + "; " + fix


def _class_names(labels: Path, classes: int | None, largest: int) -> list[str]:
    """K names, background first: ``--classes``, else ``dataset.json`` next to the labels, else
    the largest label of the references (names ``label_1``, ...): a stray label in a
    prediction must not invent a class that then scores as a perfect absent class."""
    if classes is None:
        for folder in (labels, labels.parent):
            if (folder / "dataset.json").is_file():
                return read_dataset_json(folder).class_names
        classes = max(largest + 1, 2)
        print(f"score: no dataset.json beside {labels} and no --classes: {classes} classes "
              "(0..largest reference label); give --classes K if a class is absent from every "
              "reference", file=sys.stderr)
    if classes < 2:
        raise DataError(f"--classes {classes}: give K >= 2 (background and one class)")
    return ["background", *(f"label_{c}" for c in range(1, classes))]


def _as_slice(label_map: LabelMap) -> LabelMap:
    """An H x W x 1 map as the H x W slice it is, so it scores against an H x W one."""
    label = label_map.label
    if label.ndim == 3 and label.shape[-1] == 1:
        return replace(label_map, label=label[..., 0])
    return label_map


def _check_pairs(pairs: Sequence[tuple[Path, Path]]) -> tuple[int, bool]:
    """Read and check every pair before any is scored: the largest reference label and whether
    every reference is oriented. Raises DataError on the first pair that cannot be scored."""
    largest, oriented = 0, True
    for pred_path, ref_path in pairs:
        pred, ref = _as_slice(read_label_map(pred_path)), _as_slice(read_label_map(ref_path))
        problem = pair_problem(pred.grid, ref.grid)
        if problem:
            raise DataError(problem)
        largest = max(largest, int(ref.label.max()) if ref.label.size else 0)
        oriented = oriented and ref.oriented
    return largest, oriented


def flag_settings(nsd: Sequence[float] | None, biou: float | None) -> MetricSettings:
    """The metric settings of ``morse score --nsd MM ... --biou MM`` (None: the default).

    >>> flag_settings([0.5, 3], None).names[-3:]
    ('nsd_0.5mm', 'nsd_3mm', 'biou')

    Raises:
        DataError: a negative, infinite or repeated value, naming the flags.
    """
    default = MetricSettings()
    tolerances = tuple(nsd) if nsd else default.nsd_tolerances
    width = default.biou_width if biou is None else biou
    try:
        return MetricSettings(tolerances, width)
    except ValueError:
        shown = " ".join(f"{t:g}" for t in tolerances)
        raise DataError(f"--nsd {shown} --biou {width:g}: NSD tolerances must be distinct and the "
                        "tolerances and the band width finite and >= 0 (mm)") from None


def score_folders(
    predictions: str | Path,
    labels: str | Path,
    out_dir: str | Path | None = None,
    *,
    classes: int | None = None,
    allow_missing: bool = False,
    settings: MetricSettings | None = None,
    suffix: str = "",
    verbose: bool = True,
) -> ScoreResult:
    """Score every prediction against the reference of the same case; write metrics.

    Args:
        predictions: folder of predicted label maps (any tool's NIfTI).
        labels: folder of reference label maps.
        out_dir: where ``metrics.json`` and ``metrics.csv`` go (None: not written).
        classes: K, labels 0..K-1 (default: from ``dataset.json`` in or above ``labels``,
            else the largest label found in either folder).
        allow_missing: score the matched cases when one folder lacks some (recorded in
            ``metrics.json`` under ``"missing"``) instead of refusing.
        settings: NSD tolerances and bIoU width in mm (default :class:`MetricSettings`).
        suffix: score the predictions named ``CASE{suffix}`` (e.g. ``"_coarse"``, the maps
            ``morse predict --coarse`` writes) against the references ``CASE``.

    Raises:
        DataError: an empty folder, missing cases (without ``allow_missing``), a pair on
            different grids, a file that is not a label map; the message names the file(s).
    """
    predictions, labels = Path(predictions), Path(labels)
    preds, skipped = select_files(predictions, "predicted label maps", suffix)
    refs, skipped_refs = select_files(labels, "reference label maps")
    missing = _missing(preds, refs)
    cases = sorted(set(preds) & set(refs))
    if not cases or (not allow_missing and any(missing.values())):
        raise DataError(_missing_message(missing, predictions, labels, len(cases)))
    skipped.update(skipped_refs)
    skipped.update({refs[c]: UNMATCHED_REASON for c in missing["predictions"]})
    skipped.update({preds[c]: UNMATCHED_REASON for c in missing["references"]})
    output = suffix.lstrip("_") or OUTPUT
    pairs = [(preds[c], refs[c]) for c in cases]
    largest, oriented = _check_pairs(pairs)
    names = _class_names(labels, classes, largest)
    settings = settings or MetricSettings()
    per_case = {}
    for case, (pred_path, ref_path) in zip(cases, pairs, strict=True):
        pred, ref = (_as_slice(read_label_map(p, len(names))) for p in (pred_path, ref_path))
        per_case[case] = pair_metrics(pred.label, ref, len(names), settings)
    result = ScoreResult(per_case, names, summarise(per_case, names), missing,
                         skipped=skipped, output=output)
    if out_dir is not None:
        extra = {"missing": missing, "predictions": str(predictions), "labels": str(labels),
                 "suffix": suffix, "skipped": sorted(str(p) for p in skipped)}
        result.paths = write_metrics(out_dir, {output: per_case}, names, settings=settings,
                                     extra=extra)
    if verbose:
        _print_result(result, oriented, out_dir)
    return result


def skipped_line(skipped: dict[Path, str], shown: int = 8) -> str | None:
    """One line naming the files left unscored, their count and why; None when none were.

    >>> skipped_line({Path("p/a_coarse.nii.gz"): "maps written beside a label map"})
    'skipped 1 file(s), not scored: p/a_coarse.nii.gz (maps written beside a label map)'
    """
    if not skipped:
        return None
    names = sorted(str(p) for p in skipped)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    why = "; ".join(dict.fromkeys(skipped[p] for p in sorted(skipped)))
    return (f"skipped {len(names)} file(s), not scored: {', '.join(names[:shown])}{more} "
            f"({why})")


def _print_result(result: ScoreResult, oriented: bool, out_dir: str | Path | None) -> None:
    print(format_table({result.output: result.summary}, result.class_names))
    if not oriented:
        print("warning: some references have no orientation (qform_code and sform_code 0); "
              "distances use their pixdim voxel sizes", file=sys.stderr)
    line = skipped_line(result.skipped)
    if line:
        print(line)
    skipped = sum(len(v) for v in result.missing.values())
    note = f"; {skipped} unmatched case(s) recorded, not scored" if skipped else ""
    where = f"; wrote {Path(out_dir) / 'metrics.json'}" if out_dir is not None else ""
    print(f"scored {len(result.per_case)} case(s){note}{where}")
