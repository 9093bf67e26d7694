"""`morse export --format bundle`: MONAI's own bundle API runs the bundle on a raw scan and
writes the labels `morse predict` writes; bad input is one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from morse.cli.main import main

from helpers import train_padded_2d_run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny 2D run on padded slices (no slice_size) and 32 x 32 x 6 scans."""
    return train_padded_2d_run(tmp_path_factory.mktemp("bundle"), "Dataset009_Disc")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")
def test_monais_bundle_api_runs_the_bundle_and_writes_morse_predicts_labels(run, tmp_path):
    from monai.bundle import run as run_bundle  # runs only what a trusted config says

    bundle = tmp_path / "bundle"
    assert main(["export", str(run), str(bundle), "--format", "bundle"]) == 0
    for name in ("configs/metadata.json", "configs/inference.json", "models/model.pt2",
                 "docs/README.md", "LICENSE"):
        assert (bundle / name).is_file(), name
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        "0": "background", "1": "disc"}
    assert metadata["morse"]["input"]["sizes"]["rule"] == "any size, each axis at least 2"
    scans = tmp_path / "scans"
    scans.mkdir()
    data = next(Path(p) for p in (run.parent / "Dataset009_Disc" / "imagesTr").iterdir())
    (scans / data.name).write_bytes(data.read_bytes())
    run_bundle(config_file=str(bundle / "configs" / "inference.json"),
               meta_file=str(bundle / "configs" / "metadata.json"), bundle_root=str(bundle),
               dataset_dir=str(scans), output_dir=str(tmp_path / "labels"))
    assert main(["predict", str(run), str(scans / data.name), "-o", str(tmp_path / "morse")]) == 0
    case = data.name.replace("_0000.nii.gz", "")
    ours = nib.load(tmp_path / "morse" / f"{case}.nii.gz")
    monai = nib.load(tmp_path / "labels" / f"{case}_0000_seg.nii.gz")
    expected = np.asarray(ours.dataobj)
    assert 0 < expected.sum() < expected.size  # both classes: a real comparison
    np.testing.assert_array_equal(np.asarray(monai.dataobj), expected)
    np.testing.assert_allclose(monai.affine, ours.affine, atol=1e-5)


def test_an_existing_folder_is_kept_unless_overwrite_is_given(run, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "notes.txt").write_text("mine")
    assert main(["export", str(run), str(bundle), "--format", "bundle"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bundle: already exists; pass --overwrite or another DIR" in err[0]
    assert (bundle / "notes.txt").read_text() == "mine"


def test_a_checkpoint_without_a_preprocessing_record_is_refused_in_one_line(run, tmp_path,
                                                                            capsys):
    state = torch.load(run / "best.pt", weights_only=False)
    del state["preprocessing"]
    torch.save(state, tmp_path / "old.pt")
    assert main(["export", str(tmp_path / "old.pt"), str(tmp_path / "bundle"), "--format",
                 "bundle"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no preprocessing record" in err[0] and "retrain" in err[0]
    assert not (tmp_path / "bundle").exists()


def test_a_format_typo_names_the_formats(run, tmp_path, capsys):
    assert main(["export", str(run), str(tmp_path / "bundle"), "--format", "bundel"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["morse export: error: --format bundel: unknown; choose one of pt2, onnx, "
                   "torchscript, bundle"]
