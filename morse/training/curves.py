"""Training curves: an append-only CSV log that survives resume, and its plot.

CSV layout
----------
``curves.csv`` has a header row and one row per logged step. ``step`` is always the first
column; the other columns are the keys seen so far, in order of first appearance (e.g.
``loss, loss_coarse, loss_point, lr, val_dice``). Policy for columns that appear later:
**the header is rewritten** (the whole file is rewritten atomically with the wider header, and
earlier rows get empty cells for the new column). A value missing from a row is an empty cell
and reads back as ``None`` (``NaN`` in :func:`read_curve_columns`); so ``val_dice`` logged
every 500 steps next to ``loss`` logged every step is fine. Non-finite values are kept
(``nan``, ``inf``).

Rows are appended with a plain ``open(..., "a")`` and a flush; a crash during that write can
leave a final line without its newline, which :class:`CurveLog` and :func:`read_curves` drop.
Resume: ``CurveLog(path)`` reloads the rows already in the file, and
``truncate_after(step)`` drops the rows logged after the checkpoint being resumed, so the
re-run steps are not logged twice.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "curves.csv"
>>> log = CurveLog(path)
>>> log.append({"step": 1, "loss": 0.9})
>>> log.append({"step": 2, "loss": 0.7, "val_dice": 0.5})
>>> print(path.read_text(), end="")
step,loss,val_dice
1,0.9,
2,0.7,0.5
>>> CurveLog(path).truncate_after(1)
1
>>> read_curves(path)
(['step', 'loss', 'val_dice'], [{'step': 1, 'loss': 0.9, 'val_dice': None}])
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from morse.io import atomic_write_bytes, atomic_write_text

__all__ = [
    "CurveLog",
    "curves_figure",
    "figure_png_bytes",
    "plot_curves",
    "read_curve_columns",
    "read_curves",
]

Row = dict[str, "float | int | None"]


# --------------------------------------------------------------------------------------------
# reading and writing
# --------------------------------------------------------------------------------------------


def _parse_cell(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    return float(text)


def _parse_row(columns: list[str], cells: list[str]) -> Row | None:
    """One CSV row as a dict, or ``None`` when it is malformed (wrong width, bad number)."""
    if len(cells) != len(columns):
        return None
    try:
        row = {c: _parse_cell(v) for c, v in zip(columns, cells, strict=True)}
    except ValueError:
        return None
    step = row.get("step")
    if step is None or not math.isfinite(step):
        return None
    row["step"] = int(step)
    return row


def read_curves(csv_path: str | os.PathLike) -> tuple[list[str], list[Row]]:
    """Read a curves CSV: ``(columns, rows)``; missing cells are ``None``, ``step`` an int.

    A last line without its newline (a write cut short) and malformed rows are dropped.
    A missing or empty file gives ``([], [])``.
    """
    path = Path(csv_path)
    if not path.exists():
        return [], []
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # drop a torn final line
    records = list(csv.reader(io.StringIO(text)))
    if not records:
        return [], []
    columns = records[0]
    rows = [r for r in (_parse_row(columns, cells) for cells in records[1:] if cells) if r]
    return columns, rows


def read_curve_columns(csv_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a curves CSV as ``{column: float array of shape (n_rows,)}``, NaN where missing."""
    columns, rows = read_curves(csv_path)
    nan = float("nan")
    return {
        c: np.array([nan if r.get(c) is None else float(r[c]) for r in rows], dtype=float)
        for c in columns
    }


def _format_cell(value: float | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _as_value(key: str, value: object) -> float | None:
    if value is None:
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise ValueError(f"curve value {key}={value!r} is not a number") from err


class CurveLog:
    """Append rows of training curves to a CSV file (layout and resume: module docstring).

    Args:
        csv_path: the CSV file; an existing one is loaded, so a resumed run keeps its rows.

    Attributes:
        columns: ``["step", ...]`` header, in order of first appearance.
        rows: the rows in file order, ``{column: value or None}``.
    """

    def __init__(self, csv_path: str | os.PathLike):
        self.path = Path(csv_path)
        try:
            self.columns, self.rows = read_curves(self.path)
        except (UnicodeDecodeError, csv.Error):
            self.columns, self.rows = [], []
        if self.columns[:1] != ["step"] and self.path.exists() and self.path.stat().st_size:
            self._set_aside()
        if self.path.exists() and self.columns:
            raw = self.path.read_text(encoding="utf-8")
            if not raw.endswith("\n"):  # a torn last line: rewrite so appends start clean
                self._rewrite()

    def __len__(self) -> int:
        return len(self.rows)

    def _set_aside(self) -> None:
        """Keep a damaged log (it is not ours to delete) and start a new one beside it."""
        aside = self.path.with_name(f"{self.path.name}.damaged")
        self.path.replace(aside)
        self.columns, self.rows = [], []
        warnings.warn(f"{self.path} could not be read as curves; kept it as {aside.name} and "
                      "started a new log", stacklevel=3)

    @property
    def last_step(self) -> int | None:
        """The step of the last row, or ``None`` for an empty log."""
        return int(self.rows[-1]["step"]) if self.rows else None

    def _line(self, row: Mapping[str, float | int | None]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(
            [_format_cell(row.get(c)) for c in self.columns]
        )
        return buf.getvalue()

    def _rewrite(self) -> None:
        text = ",".join(self.columns) + "\n" + "".join(self._line(r) for r in self.rows)
        atomic_write_text(self.path, text)

    def append(self, row: Mapping[str, object]) -> None:
        """Append one row: ``{"step": int, name: float | None, ...}``.

        A key not seen before widens the header (the file is rewritten); keys of earlier
        columns that are absent from ``row`` are written as empty cells.
        """
        if "step" not in row or row["step"] is None:
            raise ValueError(f"a curve row needs a 'step', got keys {sorted(row)}")
        step = int(row["step"])  # type: ignore[call-overload]
        values: Row = {"step": step}
        for key, value in row.items():
            if key != "step":
                values[str(key)] = _as_value(str(key), value)
        new = [k for k in values if k not in self.columns]  # "step" comes first in values
        self.columns += new
        self.rows.append(values)
        if new or not self.path.exists():
            self._rewrite()
        else:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(self._line(values))
                f.flush()

    def log(self, step: int, **values: float | None) -> None:
        """``log(step, loss=0.3, lr=1e-4)`` is ``append({"step": step, "loss": 0.3, ...})``."""
        self.append({"step": step, **values})

    def truncate_after(self, step: int) -> int:
        """Drop the rows whose step is greater than ``step`` (resuming from a checkpoint taken
        at ``step``); the file is rewritten atomically. Returns how many rows were dropped."""
        keep = [r for r in self.rows if int(r["step"]) <= step]
        dropped = len(self.rows) - len(keep)
        if dropped:
            self.rows = keep
            self._rewrite()
        return dropped


# --------------------------------------------------------------------------------------------
# plotting
# --------------------------------------------------------------------------------------------


def _panel_of(column: str) -> str:
    name = column.lower()
    if "loss" in name:
        return "loss"
    if name.startswith("val") or "dice" in name:
        return "validation"
    if name == "lr" or name.startswith("lr"):
        return "learning rate"
    return "other"


def _moving_average(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` points of a 1D array (shorter at the start)."""
    csum = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


def _draw_series(ax, x: np.ndarray, y: np.ndarray, label: str, smooth: bool) -> bool:
    """Plot the finite points of one series (with a moving average over long noisy series
    when ``smooth``); returns whether anything was drawn."""
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return False
    x, y = x[ok], y[ok]
    if smooth and len(y) > 100:  # noisy per-step values: faint raw line plus a moving average
        (line,) = ax.plot(x, y, alpha=0.25, linewidth=0.8)
        ax.plot(x, _moving_average(y, max(len(y) // 50, 2)), color=line.get_color(), label=label)
    else:
        ax.plot(x, y, marker="o" if len(y) <= 30 else None, markersize=3, label=label)
    return True


def _fill_panel(ax, title: str, steps: np.ndarray, series: dict[str, np.ndarray]) -> None:
    smooth = title in ("loss", "other")
    drawn = [name for name, y in series.items() if _draw_series(ax, steps, y, name, smooth)]
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    if not drawn:
        ax.text(
            0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="grey"
        )
        return
    values = np.concatenate([series[n][np.isfinite(series[n])] for n in drawn])
    if title in ("loss", "learning rate") and (values > 0).all():
        ax.set_yscale("log")
    if title == "validation" and values.min() >= 0 and values.max() <= 1:
        ax.set_ylim(0, 1)
    ax.legend(fontsize=8)


def curves_figure(csv_path: str | os.PathLike):
    """A matplotlib Figure of a curves CSV: losses (log scale when positive), validation
    metrics (``val_*`` and ``*dice*`` columns), and, when logged, learning rate and any other
    columns in further panels. All-missing columns and an empty file are drawn as
    "no data yet", never an error."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    cols = read_curve_columns(csv_path)
    steps = cols.pop("step", np.zeros(0))
    panels: dict[str, dict[str, np.ndarray]] = {"loss": {}, "validation": {}}
    for name, y in cols.items():
        panels.setdefault(_panel_of(name), {})[name] = y
    panels = {
        t: s
        for t, s in panels.items()
        if t in ("loss", "validation") or any(np.isfinite(y).any() for y in s.values())
    }
    width = 4.8 * len(panels)
    fig = Figure(figsize=(width, 3.6))
    # fixed margins (in inches) rather than constrained layout: half the drawing time
    fig.subplots_adjust(left=0.8 / width, right=1 - 0.15 / width, bottom=0.14, top=0.9, wspace=0.28)
    axes = fig.subplots(1, len(panels), squeeze=False, sharex=True)[0]
    for ax, (title, series) in zip(axes, panels.items(), strict=True):
        _fill_panel(ax, title, steps, series)
    return fig


def figure_png_bytes(fig, dpi: int = 100) -> bytes:
    """Render a matplotlib Figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def plot_curves(csv_path: str | os.PathLike, png_path: str | os.PathLike) -> Path:
    """Write the training-curve plot of ``csv_path`` (see :func:`curves_figure`) to
    ``png_path`` (e.g. ``progress.png``), atomically. Returns ``png_path``."""
    return atomic_write_bytes(png_path, figure_png_bytes(curves_figure(csv_path)))
