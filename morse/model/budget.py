"""Which render budget a trained model predicts with, and how results name it.

A budget is the renderer's ``render_margin`` (cells whose coarse top-2 margin is at least this
keep their coarse value) on top of its caps (``render_points`` per step, ``render_steps``,
``render_share``). A trained run predicts with:

* ``calibrated``: the margin measured for this run (``morse calibrate``, stored in its
  checkpoint; :mod:`morse.model.calibration`); where there is none, or only one measured by
  the first version of the calibration (:func:`usable`), the run's default;
* ``default``: the run's ``model.render_margin`` (the global default unless the run set it);
* ``fixed``: no margin, the paper's fixed budget (N cells per step, however certain);
* a number: that margin.

>>> parse_budget("fixed"), parse_budget("2.5")
('fixed', 2.5)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from morse.config import RendererConfig
from morse.errors import ConfigError

__all__ = ["BUDGETS", "Budget", "RenderedShare", "budget_config", "budget_text", "describe_budget",
           "parse_budget", "usable"]

BUDGETS = ("calibrated", "default", "fixed")
"""The named budgets (a positive number is a margin of one's own)."""

Budget = str | float
"""One of :data:`BUDGETS`, or a ``render_margin``."""


def parse_budget(text: str) -> Budget:
    """A budget from the command line: a name of :data:`BUDGETS` or a margin > 0."""
    if text in BUDGETS:
        return text
    try:
        margin = float(text)
    except ValueError:
        margin = math.nan
    if not math.isfinite(margin) or margin <= 0:
        raise ConfigError(f"--budget {text}: give calibrated, default, fixed or a margin > 0 "
                          "(e.g. --budget 2.5)")
    return margin


def usable(calibration: Mapping | None) -> Mapping | None:
    """The checkpoint's calibration, unless the first version of the calibration measured it.

    That version took the margin from the flips of the capped fixed budget, which stop where
    the cap does; on 3D runs it cut rendering below the fixed budget's and lost Dice. Its
    records lack ``reference_margin`` (the uncapped reference's).

    >>> usable({"render_margin": 0.1}), usable({"render_margin": 3.3, "reference_margin": 8.0})
    (None, {'render_margin': 3.3, 'reference_margin': 8.0})
    """
    return calibration if calibration and "reference_margin" in calibration else None


def budget_config(run_config: RendererConfig, budget: Budget | None,
                  calibration: Mapping | None) -> RendererConfig:
    """The renderer settings of ``budget`` (None: calibrated) for a run whose own settings
    are ``run_config`` and whose checkpoint holds ``calibration`` (or None)."""
    budget = "calibrated" if budget is None else budget
    calibration = usable(calibration)
    if budget == "calibrated":
        if not calibration:
            return run_config
        margin = float(calibration["render_margin"])
    elif budget == "default":
        return run_config
    elif budget == "fixed":
        margin = None
    else:
        margin = float(budget)
    return dataclasses.replace(run_config, render_margin=margin)


def describe_budget(config: RendererConfig, run_margin: float | None,
                    calibration: Mapping | None) -> dict:
    """What a renderer set to ``config`` renders, named from its values: ``calibrated`` (the
    checkpoint's margin), ``default`` (the run's ``run_margin``), ``fixed`` or ``margin``,
    with its values, for metrics.json and the report.

    >>> describe_budget(RendererConfig(render_margin=1.5), 3.0,
    ...                 {"render_margin": 1.5, "reference_margin": 8.0})["budget"]
    'calibrated'
    """
    stored, calibration = calibration, usable(calibration)
    margin = config.render_margin
    if margin is None:
        name = "fixed"
    elif calibration and margin == calibration.get("render_margin"):
        name = "calibrated"
    elif margin == run_margin:
        name = "default"
    else:
        name = "margin"
    record = {"budget": name, "render_margin": margin, "render_points": config.render_points,
              "render_steps": config.render_steps, "render_share": config.render_share}
    if name == "default" and stored and not calibration:
        record["note"] = ("calibrated by an earlier morse, whose margins could under-render 3D "
                          "runs: not used; measure it again with morse calibrate RUN")
    elif name == "default" and not calibration:
        record["note"] = "not calibrated: the run's model.render_margin (morse calibrate RUN)"
    if calibration and name == "calibrated":
        record["calibration"] = {key: calibration.get(key) for key in (
            "keep", "kept", "flips", "cases", "step")}
    return record


def budget_text(record: Mapping, rendered_share: float | None = None) -> str:
    """One line for people: ``"render budget calibrated: margin 1.23, ... ; 2.1% rendered"``.

    >>> budget_text({"budget": "fixed", "render_margin": None, "render_points": 8192,
    ...              "render_steps": 2, "render_share": 0.125}, 0.031)
    'render budget fixed: no margin, 8192 points x 2 steps, share cap 0.125; 3.1% of cells rendered'
    """
    margin = record["render_margin"]
    text = (f"render budget {record['budget']}: "
            + ("no margin" if margin is None else f"margin {margin:g}")
            + f", {record['render_points']} points x {record['render_steps']} steps, share cap "
            f"{record['render_share']}")
    if rendered_share is not None:
        text += f"; {100 * rendered_share:.1f}% of cells rendered"
    if record.get("note"):
        text += f" ({record['note']})"
    return text


class RenderedShare:
    """The share of voxels the renderer re-predicted, summed over cases."""

    def __init__(self) -> None:
        self.rendered = self.cells = 0

    def add(self, points: np.ndarray) -> None:
        """One case's (*S) bool map of rendered voxels."""
        self.rendered += int(np.count_nonzero(points))
        self.cells += points.size

    @property
    def share(self) -> float:
        return self.rendered / max(self.cells, 1)

    def record(self, budget: dict | None) -> dict:
        """metrics.json's ``{"budget": {...the budget, "rendered_share": share}}``, or {}
        without a renderer."""
        return {} if budget is None else {"budget": {**budget, "rendered_share": self.share}}
