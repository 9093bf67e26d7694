"""``morse nnunet dataset``: a config's data as an nnU-Net v2 raw dataset, its split as fold 0."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from morse.cli.main import main
from morse.config import load_config
from morse.data.nnunet_raw import dataset_folder_name, write_raw_dataset
from morse.errors import DataError

from helpers import make_dataset, write_config


def test_raw_dataset_keeps_the_configs_split_as_fold_0_and_the_voxels(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", make_dataset(tmp_path / "d")))
    folder = write_raw_dataset(cfg, tmp_path / "raw", 7)
    assert folder.name == "Dataset007_tiny"
    (fold,) = json.loads((folder / "splits_final.json").read_text())
    assert len(fold["train"]) == 3 and len(fold["val"]) == 1
    spec = json.loads((folder / "dataset.json").read_text())
    assert spec["labels"] == {"background": 0, "disc": 1} and spec["numTraining"] == 4
    training = sorted(p.name[:-7] for p in (folder / "labelsTr").glob("*.nii.gz"))
    assert training == sorted(fold["train"] + fold["val"])
    (test,) = (folder / "labelsTs").glob("*.nii.gz")
    image = nib.load(folder / "imagesTs" / test.name.replace(".nii.gz", "_0000.nii.gz"))
    case = test.name.split("_", 2)[2][:-7]  # test_0_<case id>
    source = nib.load(tmp_path / "d" / "imagesTr" / f"{case}_0000.nii.gz")
    assert np.allclose(image.get_fdata(), source.get_fdata(), atol=1e-6)
    assert np.allclose(image.affine, source.affine)


def test_raw_dataset_never_replaces_an_existing_folder(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", make_dataset(tmp_path / "d")))
    write_raw_dataset(cfg, tmp_path / "raw", 7)
    with pytest.raises(DataError, match="already exists"):
        write_raw_dataset(cfg, tmp_path / "raw", 7)


@pytest.mark.parametrize("dataset_id", [0, 1000])
def test_dataset_ids_outside_nnunets_range_are_refused(dataset_id):
    with pytest.raises(DataError, match="run from 1 to 999"):
        dataset_folder_name(dataset_id, "x")


def test_command_writes_splits_where_nnunet_reads_them(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", make_dataset(tmp_path / "d"))
    assert main(["nnunet", "dataset", str(config), "--id", "12", "--raw", str(tmp_path / "raw"),
                 "--preprocessed", str(tmp_path / "pre")]) == 0
    written = tmp_path / "pre" / "Dataset012_tiny" / "splits_final.json"
    assert json.loads(written.read_text()) == json.loads(
        (tmp_path / "raw" / "Dataset012_tiny" / "splits_final.json").read_text())
    assert "fold 0" in capsys.readouterr().out
