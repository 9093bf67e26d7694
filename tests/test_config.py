"""Configs: every enumerated or bounded key is checked when the config loads."""

from __future__ import annotations

import pytest

from morse.cli.main import main
from morse.config import available_presets, load_config
from morse.errors import ConfigError


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("data.normalize=bogus", "data.normalize must be one of"),
        ("train.device=bogus", "train.device must be auto, cpu, cuda"),
        ("train.device=mps", "train.device must be auto, cpu, cuda"),
        ("model.backbone=bogus", "model.backbone must be one of"),
        ("data.spatial_dims=5", "data.spatial_dims must be one of 2, 3"),
        ("data.format=bogus", "data.format must be one of"),
        ("train.iterations=-3", "train.iterations must be >= 1"),
        ("train.batch_size=0", "train.batch_size must be >= 1"),
        ("model.importance_ratio=1.5", r"model.importance_ratio must be in \[0, 1\]"),
        ("model.render_steps=-1", "model.render_steps must be >= 0"),
        ("loss.schedule=linear", "loss.schedule must be one of"),
        ("train.precision=fp8", "train.precision must be one of"),
        ("data.split_fractions=[0.5,0.4]", "data.split_fractions must be three"),
        ("data.patch_size=[96,96]", "data.patch_size must be 3 positive integers"),
        ("data.target_spacing=mean", "data.target_spacing must be auto, median, null or three"),
        ("data.target_spacing=[1,1]",
         r"data.target_spacing must be auto, median, null or three positive sizes in mm"),
        ("data.slice_axis=3", "data.slice_axis must be one of 0, 1, 2 or null"),
    ],
)
def test_bad_values_are_refused_at_load_with_the_allowed_ones(override, named):
    with pytest.raises(ConfigError, match=named):
        load_config("demo", [override])


@pytest.mark.parametrize("preset", available_presets())
def test_every_preset_loads(preset):
    load_config(preset)


def test_good_device_names_pass():
    for name in ("auto", "cpu", "cuda", "cuda:1"):
        assert load_config("demo", [f"train.device={name}"]).train.device == name


def test_bad_value_through_the_command_line_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["train", "demo", "train.iterations=-3", "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "train.iterations must be >= 1" in err[0]
    assert not (tmp_path / "run").exists()


def test_report_of_a_missing_run_folder_is_one_line(tmp_path, capsys):
    code = main(["report", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no such run folder" in err[0]


def test_config_command_documents_every_key_with_its_allowed_values(capsys):
    from morse.config import Config, config_to_dict

    assert main(["config", "demo", "train.iterations=7"]) == 0
    out = capsys.readouterr().out
    assert "train.iterations: 7" in out and "loss.schedule: delayed-ramp" in out
    assert "one of constant, delayed-ramp" in out and "must be >= 1" in out
    for section, values in config_to_dict(Config()).items():
        if isinstance(values, dict):
            for key in values:
                assert f"{section}.{key}:" in out, f"{section}.{key} is not shown"


def test_config_command_refuses_a_bad_override_in_one_line(capsys):
    assert main(["config", "demo", "train.optimizer=adam"]) == 2
    assert "train.optimizer must be one of sgd, adamw" in capsys.readouterr().err
