"""Which render budget a trained model predicts with, and how results name it."""

from __future__ import annotations

import pytest

from morse.cli.main import main
from morse.config import RendererConfig
from morse.errors import ConfigError
from morse.model.budget import budget_config, describe_budget, parse_budget

RUN = RendererConfig(render_margin=3.0)
CALIBRATED = {"render_margin": 1.25, "keep": 0.995, "kept": 1.0, "flips": 10, "cases": 2,
              "step": 7, "reference_margin": 8.0}
FIRST_VERSION = {key: value for key, value in CALIBRATED.items() if key != "reference_margin"}


@pytest.mark.parametrize(("budget", "calibration", "margin", "name"), [
    (None, CALIBRATED, 1.25, "calibrated"),
    ("calibrated", None, 3.0, "default"),
    ("default", CALIBRATED, 3.0, "default"),
    ("fixed", CALIBRATED, None, "fixed"),
    (2.5, CALIBRATED, 2.5, "margin"),
])
def test_each_budget_sets_the_margin_and_is_named_by_what_it_renders(
        budget, calibration, margin, name):
    config = budget_config(RUN, budget, calibration)
    assert config.render_margin == margin
    assert (config.render_points, config.render_share) == (RUN.render_points, RUN.render_share)
    record = describe_budget(config, RUN.render_margin, calibration)
    assert record["budget"] == name and record["render_margin"] == margin
    assert ("note" in record) == (name == "default" and calibration is None)


def test_a_margin_from_the_first_calibration_is_not_used_and_the_note_says_to_measure_again():
    # the first version took the margin from the capped fixed budget's flips: on 3D runs it
    # cut rendering below the fixed budget's
    config = budget_config(RUN, None, FIRST_VERSION)
    assert config.render_margin == RUN.render_margin
    record = describe_budget(config, RUN.render_margin, FIRST_VERSION)
    assert record["budget"] == "default" and "morse calibrate RUN" in record["note"]


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "calibrate"])
def test_a_budget_that_is_no_name_and_no_positive_margin_is_refused_in_one_line(text, capsys):
    with pytest.raises(ConfigError, match="give calibrated, default, fixed or a margin > 0"):
        parse_budget(text)
    with pytest.raises(SystemExit):
        main(["predict", "run", "scan.nii.gz", "-o", "out", "--budget", text])
    assert "argument --budget: give calibrated, default, fixed" in capsys.readouterr().err
