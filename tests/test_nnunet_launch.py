"""``morse nnunet`` without nnU-Net's heavy parts: the trainer folder, the environment variable,
and the one-line errors when nnunetv2 is missing or too old."""

from __future__ import annotations

import os
from importlib import metadata

import pytest

from morse.cli.main import main
from morse.errors import ConfigError
from morse.nnunet import launch


def test_trainer_dir_holds_one_module_of_trainers():
    modules = sorted(p.name for p in launch.trainer_dir().glob("*.py"))
    assert modules == ["__init__.py", "morse_trainers.py"]


def test_trainer_dir_goes_first_and_keeps_the_users_folders():
    here = str(launch.trainer_dir())
    value = launch.with_trainer_dir({"nnUNet_extTrainer": os.pathsep.join(["/a", here, "/b"])})
    assert value.split(os.pathsep) == [here, "/a", "/b"]
    assert launch.with_trainer_dir({}) == here


def _version(found: str | None):
    def version(name: str) -> str:
        if name != "nnunetv2":
            return "2.13.0+cpu"
        if found is None:
            raise metadata.PackageNotFoundError(name)
        return found
    return version


def test_missing_nnunet_is_one_line_with_the_install_command(monkeypatch, capsys):
    monkeypatch.setattr(launch.metadata, "version", _version(None))
    with pytest.raises(ConfigError, match=r'pip install "morse-seg\[nnunet\]" "torch==2.13.0"'):
        launch.check_nnunet()
    assert main(["nnunet", "train", "1", "2d", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nnU-Net v2 is not installed" in err


def test_old_nnunet_is_refused_and_a_newer_one_noted(monkeypatch, capsys):
    monkeypatch.setattr(launch.metadata, "version", _version("2.6.2"))
    with pytest.raises(ConfigError, match="too old"):
        launch.check_nnunet()
    monkeypatch.setattr(launch.metadata, "version", _version("2.9.0"))
    assert launch.check_nnunet() == "2.9.0"
    assert "newer than the versions tested" in capsys.readouterr().err


def test_install_writes_the_trainer_module_once_and_never_replaces_a_foreign_one(
        monkeypatch, tmp_path):
    target = tmp_path / "nnUNetTrainer" / launch.SHIM_NAME
    target.parent.mkdir()
    monkeypatch.setattr(launch, "shim_path", lambda: target)
    assert launch.install_shim() == target and "morse.nnunet.trainer" in target.read_text()
    assert launch.install_shim() == target  # again: same content, no error
    assert launch.uninstall_shim() == target and not target.exists()
    assert launch.uninstall_shim() is None
    target.write_text("class nnUNetTrainerMORSE: ...  # a user's own\n")
    with pytest.raises(ConfigError, match="not written by morse"):
        launch.install_shim()
    with pytest.raises(ConfigError, match="not written by morse"):
        launch.uninstall_shim()
    assert "a user's own" in target.read_text()
