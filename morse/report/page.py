"""A one-page report of a run directory: config, metrics, training curves and example overlays.

:func:`write_report` reads what the run directory holds and skips, with a note in the page,
whatever is missing or unreadable; it never fails because of one file:

* ``config.yaml``: the resolved config, shown verbatim (collapsed in HTML).
* ``metrics.json``: as written by :func:`morse.evaluation.tables.write_metrics`; a table of the
  per-class means of every metric it holds (Dice, IoU, HD95, ASD, NSD, bIoU) for each output
  (coarse, rendered) side by side, distances labelled with the file's ``distance_unit`` (mm or
  voxels), the per-case Dice, the empty-mask policy text and how often it fired.
* ``curves.csv``: as written by :class:`morse.training.curves.CurveLog`; its plot.
* ``examples.npz``: arrays ``image`` (N, H, W) float, ``truth``, ``coarse``, ``rendered``
  (N, H, W) int, ``points`` (N, H, W) bool (the cells the renderer re-predicted), optional
  ``case_id`` and ``slice`` (N,); one row of panels per example (see
  :func:`make_overlay_figure`).
* ``eval_*/``: held-out sets scored by ``morse evaluate`` (their ``metrics.json`` records the
  ``images`` folder); each under its own heading, with its mean scores and its
  ``examples.npz``.

``fmt="html"`` writes ``report.html``, a single self-contained file (CSS inline, images as
``data:image/png;base64`` URIs). ``fmt="md"`` writes ``report.md`` with its PNGs in
``report_files/`` next to it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import cast

import numpy as np

from morse.evaluation.tables import FOREGROUND, metric_header
from morse.io import atomic_write_text
from morse.metrics import DISTANCE_METRICS
from morse.model.budget import budget_text
from morse.report.figures import make_overlay_figure
from morse.report.markup import HtmlPage, MarkdownPage, Page
from morse.training.curves import curves_figure, figure_png_bytes

__all__ = ["write_report"]


def _fmt(value: object, metric: str) -> str:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"
    digits = 2 if metric in DISTANCE_METRICS else 4
    return f"{v:.{digits}f}" if np.isfinite(v) else "nan"


def _outputs(doc: Mapping) -> list[str]:
    return [k for k, v in doc.items() if isinstance(v, Mapping) and "mean" in v]


def _section_config(page: Page, run_dir: Path) -> None:
    page.heading("Configuration")
    path = run_dir / "config.yaml"
    if not path.exists():
        page.note("config.yaml not found in the run directory; skipped.")
        return
    page.code(path.read_text(encoding="utf-8", errors="replace"), "config.yaml (resolved)")


def _metrics_tables(page: Page, doc: Mapping, outputs: list[str]) -> None:
    first = doc[outputs[0]]["mean"]
    names = [n for n in first if n != FOREGROUND]
    metrics = list(first.get(FOREGROUND, {}))
    unit = str(doc.get("distance_unit", "mm"))  # files from before the unit was recorded: mm
    columns = ["class"] + [metric_header(m, unit) for _ in outputs for m in metrics]
    rows = []
    for name in [*names, FOREGROUND]:
        row = [name if name != FOREGROUND else "mean (foreground)"]
        for out in outputs:
            m = doc[out]["mean"].get(name, {})
            row += [_fmt(m.get(k), k) for k in metrics]
        rows.append(row)
    n_cases = ", ".join(f"{o}: {doc[o].get('n_cases', '?')} cases" for o in outputs)
    page.para(f"Mean over cases ({n_cases}); distances in {unit}. " + _settings_text(doc, unit))
    page.table(columns, rows, groups=[(o, len(metrics)) for o in outputs], mean_rows=1)


def _settings_text(doc: Mapping, unit: str) -> str:
    """What NSD@t and bIoU measure, with the tolerances recorded in metrics.json."""
    settings = doc.get("settings", {})
    if not isinstance(settings, Mapping) or "biou_width" not in settings:
        return ""
    return (
        f"NSD@t: share of both surfaces within t {unit} of the other; bIoU: IoU of the "
        f"boundary bands of width {settings['biou_width']} {unit}."
    )


def _per_case_table(page: Page, doc: Mapping, outputs: list[str]) -> None:
    per_case = {o: doc[o].get("per_case", {}) for o in outputs}
    cases = list(dict.fromkeys(c for o in outputs for c in per_case[o]))
    if not cases:
        return
    names = [n for n in doc[outputs[0]]["mean"] if n != FOREGROUND]
    rows = []
    for case in cases:
        row = [str(case)]
        for o in outputs:
            cell = per_case[o].get(case, {})
            row += [_fmt(cell.get(n, {}).get("dice"), "dice") for n in names]
        rows.append(row)
    page.table(
        ["case"] + names * len(outputs),
        rows,
        groups=[(f"{o} Dice", len(names)) for o in outputs],
        summary=f"Per-case Dice ({len(cases)} cases)",
    )


def _policy_table(page: Page, doc: Mapping, outputs: list[str]) -> None:
    rows = []
    for o in outputs:
        counts = doc[o].get("empty_policy", {})
        total = sum(len(v) for v in doc[o].get("per_case", {}).values())
        rows.append(
            [o, str(counts.get("both_empty", 0)), str(counts.get("one_empty", 0)), str(total)]
        )
    page.para("Empty-mask policy: " + str(doc.get("policy", "(not recorded)")))
    page.table(["output", "both_empty", "one_empty", "case x class pairs"], rows)


def _budget_line(page: Page, doc: Mapping) -> None:
    """The render budget the scores were made with and the share of voxels rendered, where
    metrics.json records it (written before it did: nothing)."""
    budget = doc.get("budget")
    if isinstance(budget, Mapping):
        text = budget_text(budget, budget.get("rendered_share"))
        note = f" ({budget['note']})" if budget.get("note") else ""
        page.para(text[0].upper() + text[1:] + note + ".")


def _section_metrics(page: Page, run_dir: Path) -> list[str] | None:
    """Metrics tables; returns the foreground class names listed in metrics.json."""
    page.heading("Metrics")
    path = run_dir / "metrics.json"
    if not path.exists():
        page.note("metrics.json not found in the run directory; skipped.")
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    outputs = _outputs(doc)
    if not outputs:
        page.note("metrics.json holds no output with a 'mean' block; skipped.")
        return None
    _budget_line(page, doc)
    _metrics_tables(page, doc, outputs)
    _policy_table(page, doc, outputs)
    _per_case_table(page, doc, outputs)
    names = doc.get("class_names")
    if isinstance(names, list):
        return [str(n) for n in names]
    return [n for n in doc[outputs[0]]["mean"] if n != FOREGROUND]


def _section_curves(page: Page, run_dir: Path) -> None:
    page.heading("Training curves")
    path = run_dir / "curves.csv"
    if not path.exists():
        page.note("curves.csv not found in the run directory; skipped.")
        return
    page.image(figure_png_bytes(curves_figure(path)), "curves.png", "training curves")


def _example_title(data: Mapping[str, np.ndarray], i: int) -> str:
    """``"#i: <case_id>, slice <s>"`` from the optional ``case_id`` and ``slice`` arrays."""
    parts = []
    if "case_id" in data and data["case_id"].ndim == 1 and i < len(data["case_id"]):
        parts.append(str(data["case_id"][i]))
    if "slice" in data and data["slice"].ndim == 1 and i < len(data["slice"]):
        parts.append(f"slice {data['slice'][i]}")
    return f"#{i}: " + ", ".join(parts) if parts else f"example {i}"


def _section_examples(
    page: Page, path: Path, class_names: list[str] | None, max_examples: int, prefix: str = ""
) -> None:
    """One row of overlay panels per example of ``path`` (an ``examples.npz``)."""
    if not path.exists():
        page.note(f"{path.name} not found in {path.parent}; skipped.")
        return
    with np.load(path, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    if "image" not in data:
        page.note(f"examples.npz has no 'image' array (found {sorted(data)}); skipped.")
        return
    images = data["image"] if data["image"].ndim == 3 else data["image"][None]
    keys = [k for k in ("truth", "coarse", "rendered", "points", "gate") if k in data]
    missing = sorted({"truth", "coarse", "rendered", "points"} - set(keys))
    if missing:
        page.note("examples.npz lacks " + ", ".join(missing) + "; those panels are left out.")
    labels = [data[k] for k in ("truth", "coarse", "rendered") if k in data]
    num_classes = 1 + max([len(class_names or [])] + [int(a.max()) for a in labels if a.size])
    n = min(len(images), max_examples)
    if len(images) > n:
        page.para(f"Showing {n} of {len(images)} examples.")
    for i in range(n):
        arrays = {k: (data[k] if data[k].ndim == 3 else data[k][None])[i] for k in keys}
        title = _example_title(data, i)
        fig = make_overlay_figure(
            images[i], **arrays, num_classes=num_classes, class_names=class_names, title=title
        )
        page.image(figure_png_bytes(fig), f"{prefix}example_{i:03d}.png", title)


def _heldout_folders(run_dir: Path) -> list[tuple[Path, Mapping]]:
    """``(folder, metrics)`` of the held-out sets scored into ``run_dir/eval_*``."""
    found = []
    for folder in sorted(run_dir.glob("eval_*")):
        path = folder / "metrics.json"
        if path.is_file():
            doc = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(doc, Mapping) and "images" in doc:
                found.append((folder, doc))
    return found


def _section_heldout(
    page: Page, folder: Path, doc: Mapping, class_names: list[str] | None, max_examples: int
) -> None:
    """A held-out set: where its scans came from, its mean scores and its example slices."""
    page.heading(f"Held-out set: {Path(str(doc['images'])).name}")
    page.para(f"Scans {doc['images']}, label maps {doc.get('labels', '?')}; results in "
              f"{folder.name}/.")
    outputs = _outputs(doc)
    if outputs:
        _budget_line(page, doc)
        _metrics_tables(page, doc, outputs)
    _section_examples(page, folder / "examples.npz", class_names, max_examples,
                      prefix=f"{folder.name}_")


def _guarded(page: Page, name: str, fn: Callable[[], object]) -> object:
    """Run one section; an error becomes a note in the page instead of a crash."""
    try:
        return fn()
    except Exception as err:  # a report must never fail on one bad file
        page.note(f"could not render {name}: {type(err).__name__}: {err}")
        return None


def write_report(run_dir: str | os.PathLike, fmt: str = "html", max_examples: int = 8) -> Path:
    """Write ``report.html`` (one self-contained file) or ``report.md`` (+ ``report_files/``)
    into ``run_dir`` from its ``config.yaml``, ``metrics.json``, ``curves.csv``,
    ``examples.npz`` and held-out sets (``eval_*/``); absent or unreadable files are skipped
    with a note in the page.

    Args:
        run_dir: the run directory (must exist).
        fmt: ``"html"`` or ``"md"``.
        max_examples: at most this many rows of example panels.

    Returns:
        The path of the report written.
    """
    if fmt not in ("html", "md"):
        raise ValueError(f"fmt must be 'html' or 'md', got {fmt!r}")
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {run} does not exist")
    out_path = run / f"report.{fmt}"
    page: Page = HtmlPage(out_path) if fmt == "html" else MarkdownPage(out_path)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    page.para(f"Run directory: {run.resolve()} (report generated {stamp}).")
    _guarded(page, "config.yaml", lambda: _section_config(page, run))
    names = cast(
        "list[str] | None", _guarded(page, "metrics.json", lambda: _section_metrics(page, run))
    )
    _guarded(page, "curves.csv", lambda: _section_curves(page, run))
    page.heading("Examples")
    _guarded(page, "examples.npz",
             lambda: _section_examples(page, run / "examples.npz", names, max_examples))
    for folder, doc in cast("list", _guarded(page, "eval_*/metrics.json",
                                             lambda: _heldout_folders(run)) or []):
        _guarded(page, f"{folder.name}/examples.npz",
                 lambda f=folder, d=doc: _section_heldout(page, f, d, names, max_examples))
    return atomic_write_text(out_path, page.finish(f"MORSE run report: {run.name}"))
