"""A one-page report of a run directory: config, metrics, training curves and example overlays.

:func:`write_report` reads what the run directory holds and skips, with a note in the page,
whatever is missing or unreadable; it never fails because of one file:

* ``config.yaml``: the resolved config, shown verbatim (collapsed in HTML).
* ``metrics.json``: as written by :func:`morse.evaluation.metrics.write_metrics`; a table of the
  per-class mean Dice, IoU, HD95 and ASD of each output (coarse, rendered) side by side, the
  per-case Dice, the empty-mask policy text and how often it fired.
* ``curves.csv``: as written by :class:`morse.report.curves.CurveLog`; its plot.
* ``examples.npz``: arrays ``image`` (N, H, W) float, ``truth``, ``coarse``, ``rendered``
  (N, H, W) int, ``points`` (N, H, W) bool (the cells the renderer re-predicted), optional
  ``case_id`` and ``slice`` (N,); one row of panels per example (see
  :func:`make_overlay_figure`).

``fmt="html"`` writes ``report.html``, a single self-contained file (CSS inline, images as
``data:image/png;base64`` URIs). ``fmt="md"`` writes ``report.md`` with its PNGs in
``report_files/`` next to it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import cast

import numpy as np

from morse.evaluation.metrics import METRIC_NAMES
from morse.io import atomic_write_bytes, atomic_write_text
from morse.report.curves import curves_figure, figure_png_bytes
from morse.report.figures import make_overlay_figure

__all__ = ["write_report"]

_DIGITS = {"dice": 4, "iou": 4, "hd95": 2, "asd": 2}
_HEADERS = {"dice": "Dice", "iou": "IoU", "hd95": "HD95 (mm)", "asd": "ASD (mm)"}


# --------------------------------------------------------------------------------------------
# page writers: the same sections rendered as HTML or Markdown
# --------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.mean td { font-weight: bold; background: #f2f2f2; }
.note { color: #8a5a00; font-style: italic; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
img { max-width: 100%; }
"""


class _Page:
    """Collects a page section by section; subclasses render HTML or Markdown."""

    def __init__(self, out_path: Path):
        self.out_path = out_path
        self.parts: list[str] = []
        self.n_images = 0

    def heading(self, text: str, level: int = 2) -> None:
        raise NotImplementedError

    def para(self, text: str) -> None:
        raise NotImplementedError

    def note(self, text: str) -> None:
        raise NotImplementedError

    def code(self, text: str, summary: str) -> None:
        raise NotImplementedError

    def table(
        self,
        columns: list[str],
        rows: list[list[str]],
        groups: list[tuple[str, int]] | None = None,
        mean_rows: int = 0,
        summary: str | None = None,
    ) -> None:
        """``groups``: (name, n_columns) spans over ``columns[1:]``; the last ``mean_rows``
        rows are emphasised; ``summary``: title of a collapsible table."""
        raise NotImplementedError

    def image(self, png: bytes, name: str, alt: str) -> None:
        raise NotImplementedError

    def finish(self, title: str) -> str:
        raise NotImplementedError


class _HtmlPage(_Page):
    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')

    def code(self, text: str, summary: str) -> None:
        self.parts.append(
            f"<details><summary>{html.escape(summary)}</summary>"
            f"<pre>{html.escape(text)}</pre></details>"
        )

    def table(
        self,
        columns: list[str],
        rows: list[list[str]],
        groups=None,
        mean_rows: int = 0,
        summary: str | None = None,
    ) -> None:
        head = ""
        if groups:
            head += (
                "<tr><th></th>"
                + "".join(f'<th colspan="{n}">{html.escape(g)}</th>' for g, n in groups)
                + "</tr>"
            )
        head += "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>"
        body = "".join(
            ('<tr class="mean">' if i >= len(rows) - mean_rows else "<tr>")
            + "".join(f"<td>{html.escape(v)}</td>" for v in row)
            + "</tr>"
            for i, row in enumerate(rows)
        )
        table = f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"
        if summary:
            table = f"<details><summary>{html.escape(summary)}</summary>{table}</details>"
        self.parts.append(table)

    def image(self, png: bytes, name: str, alt: str) -> None:
        data = base64.b64encode(png).decode("ascii")
        self.parts.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
        self.n_images += 1

    def finish(self, title: str) -> str:
        return (
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n" + "\n".join(self.parts) + "\n</body></html>\n"
        )


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


class _MdPage(_Page):
    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append("#" * level + " " + text)

    def para(self, text: str) -> None:
        self.parts.append(text)

    def note(self, text: str) -> None:
        self.parts.append(f"> *{text}*")

    def code(self, text: str, summary: str) -> None:
        fence = "````" if "```" in text else "```"
        self.parts.append(
            f"<details><summary>{summary}</summary>\n\n{fence}yaml\n"
            f"{text.rstrip()}\n{fence}\n\n</details>"
        )

    def table(
        self,
        columns: list[str],
        rows: list[list[str]],
        groups=None,
        mean_rows: int = 0,
        summary: str | None = None,
    ) -> None:
        if groups:
            prefixes = [g for g, n in groups for _ in range(n)]
            columns = [columns[0]] + [
                f"{p} {c}" for p, c in zip(prefixes, columns[1:], strict=True)
            ]
        lines = [
            "| " + " | ".join(_md_cell(c) for c in columns) + " |",
            "|" + "|".join([":---"] + ["---:"] * (len(columns) - 1)) + "|",
        ]
        for i, row in enumerate(rows):
            cells = [_md_cell(v) for v in row]
            if i >= len(rows) - mean_rows:
                cells = [f"**{c}**" for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        if summary:
            self.parts.append(f"*{summary}*")
        self.parts.append("\n".join(lines))

    def image(self, png: bytes, name: str, alt: str) -> None:
        rel = Path("report_files") / name
        atomic_write_bytes(self.out_path.parent / rel, png)
        self.parts.append(f"![{alt}]({rel.as_posix()})")
        self.n_images += 1

    def finish(self, title: str) -> str:
        return f"# {title}\n\n" + "\n\n".join(self.parts) + "\n"


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------


def _fmt(value: object, metric: str) -> str:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"
    return f"{v:.{_DIGITS[metric]}f}" if np.isfinite(v) else "nan"


def _outputs(doc: Mapping) -> list[str]:
    return [k for k, v in doc.items() if isinstance(v, Mapping) and "mean" in v]


def _section_config(page: _Page, run_dir: Path) -> None:
    page.heading("Configuration")
    path = run_dir / "config.yaml"
    if not path.exists():
        page.note("config.yaml not found in the run directory; skipped.")
        return
    page.code(path.read_text(encoding="utf-8", errors="replace"), "config.yaml (resolved)")


def _metrics_tables(page: _Page, doc: Mapping, outputs: list[str]) -> None:
    first = doc[outputs[0]]["mean"]
    names = [n for n in first if n != "foreground"]
    columns = ["class"] + [_HEADERS[m] for _ in outputs for m in METRIC_NAMES]
    rows = []
    for name in [*names, "foreground"]:
        row = [name if name != "foreground" else "mean (foreground)"]
        for out in outputs:
            m = doc[out]["mean"].get(name, {})
            row += [_fmt(m.get(k), k) for k in METRIC_NAMES]
        rows.append(row)
    n_cases = ", ".join(f"{o}: {doc[o].get('n_cases', '?')} cases" for o in outputs)
    page.para(f"Mean over cases ({n_cases}); HD95 and ASD in mm.")
    page.table(columns, rows, groups=[(o, len(METRIC_NAMES)) for o in outputs], mean_rows=1)


def _per_case_table(page: _Page, doc: Mapping, outputs: list[str]) -> None:
    per_case = {o: doc[o].get("per_case", {}) for o in outputs}
    cases = list(dict.fromkeys(c for o in outputs for c in per_case[o]))
    if not cases:
        return
    names = [n for n in doc[outputs[0]]["mean"] if n != "foreground"]
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


def _policy_table(page: _Page, doc: Mapping, outputs: list[str]) -> None:
    rows = []
    for o in outputs:
        counts = doc[o].get("empty_policy", {})
        total = sum(len(v) for v in doc[o].get("per_case", {}).values())
        rows.append(
            [o, str(counts.get("both_empty", 0)), str(counts.get("one_empty", 0)), str(total)]
        )
    page.para("Empty-mask policy: " + str(doc.get("policy", "(not recorded)")))
    page.table(["output", "both_empty", "one_empty", "case x class pairs"], rows)


def _section_metrics(page: _Page, run_dir: Path) -> list[str] | None:
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
    _metrics_tables(page, doc, outputs)
    _policy_table(page, doc, outputs)
    _per_case_table(page, doc, outputs)
    names = doc.get("class_names")
    if isinstance(names, list):
        return [str(n) for n in names]
    return [n for n in doc[outputs[0]]["mean"] if n != "foreground"]


def _section_curves(page: _Page, run_dir: Path) -> None:
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
    page: _Page, run_dir: Path, class_names: list[str] | None, max_examples: int
) -> None:
    page.heading("Examples")
    path = run_dir / "examples.npz"
    if not path.exists():
        page.note("examples.npz not found in the run directory; skipped.")
        return
    with np.load(path, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    if "image" not in data:
        page.note(f"examples.npz has no 'image' array (found {sorted(data)}); skipped.")
        return
    images = data["image"] if data["image"].ndim == 3 else data["image"][None]
    keys = [k for k in ("truth", "coarse", "rendered", "points") if k in data]
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
        page.image(figure_png_bytes(fig), f"example_{i:03d}.png", title)


def _guarded(page: _Page, name: str, fn: Callable[[], object]) -> object:
    """Run one section; an error becomes a note in the page instead of a crash."""
    try:
        return fn()
    except Exception as err:  # a report must never fail on one bad file
        page.note(f"could not render {name}: {type(err).__name__}: {err}")
        return None


def write_report(run_dir: str | os.PathLike, fmt: str = "html", max_examples: int = 8) -> Path:
    """Write ``report.html`` (one self-contained file) or ``report.md`` (+ ``report_files/``)
    into ``run_dir`` from its ``config.yaml``, ``metrics.json``, ``curves.csv`` and
    ``examples.npz``; absent or unreadable files are skipped with a note in the page.

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
    page: _Page = _HtmlPage(out_path) if fmt == "html" else _MdPage(out_path)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    page.para(f"Run directory: {run.resolve()} (report generated {stamp}).")
    _guarded(page, "config.yaml", lambda: _section_config(page, run))
    names = cast(
        "list[str] | None", _guarded(page, "metrics.json", lambda: _section_metrics(page, run))
    )
    _guarded(page, "curves.csv", lambda: _section_curves(page, run))
    _guarded(page, "examples.npz", lambda: _section_examples(page, run, names, max_examples))
    return atomic_write_text(out_path, page.finish(f"MORSE run report: {run.name}"))
