"""``morse demo``: which task it picks and says, and the tissue task end to end on a tiny
nilearn-like folder (no nilearn needed)."""

from __future__ import annotations

import pytest

from morse.cli import demo
from morse.cli.main import main
from morse.errors import DataError

from helpers import make_mni_tissue

TINY = [
    "train.iterations=2", "train.batch_size=2", "train.log_every=1", "eval.num_examples=1",
    "data.slice_size=[32,32]", "model.backbone_options={width: 0.25}", "model.expert_width=8",
    "model.head_width=8", "model.num_frequencies=4", "model.train_points=32",
    "model.render_points=32",
]


def test_auto_takes_the_atlas_where_mricron_data_is_installed(monkeypatch, tmp_path):
    for name in ("ch2.nii.gz", "aal.nii.gz", "aal.nii.txt"):
        (tmp_path / name).touch()
    monkeypatch.setattr(demo, "DEFAULT_TEMPLATE_DIR", tmp_path)
    task, line = demo.choose_demo_task()
    assert task == "atlas" and line.startswith("demo task: atlas (Colin27")


def test_auto_takes_the_tissue_task_without_mricron_data_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "DEFAULT_TEMPLATE_DIR", tmp_path / "absent")
    task, line = demo.choose_demo_task()
    assert task == "tissue" and "MNI152" in line and "not in" in line and "\n" not in line
    assert demo.choose_demo_task("atlas")[0] == "atlas"
    with pytest.raises(DataError, match="choose auto, atlas or tissue"):
        demo.choose_demo_task("brain")


def test_demo_tissue_task_trains_evaluates_and_reports(tmp_path, capsys):
    root = make_mni_tissue(tmp_path / "nilearn_data")
    out = tmp_path / "run"
    code = main(["demo", "--task", "tissue", "-o", str(out), f"data.root={root}", *TINY])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("demo task: tissue (MNI152 2009 T1")
    assert "demo finished" in printed and (out / "report.html").is_file()
    assert "format: mni-tissue" in (out / "config.yaml").read_text()
