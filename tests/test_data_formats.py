"""Synapse (TransUNet) and ACDC (SSL4MIS) loaders on small fake files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from morse.config import load_config
from morse.data import (
    ACDC_CLASSES,
    SYNAPSE_CLASSES,
    Volume,
    acdc_patient_of,
    downsample_volume,
    formats,
    load_acdc_slices,
    load_acdc_volume,
    load_acdc_volumes,
    load_synapse_slices,
    load_synapse_volume,
    load_synapse_volumes,
    normalize_volume,
    read_acdc_list,
    remap_btcv_labels,
    synapse_case_of,
)
from morse.data.formats import DataFormat, Loaded, available_formats, register_format, stack_slices
from morse.data.intensity import make_record
from morse.data.prepare import load_eval_volumes, prepare_data
from morse.data.split import Split
from morse.errors import DataError

from helpers import ramp, write_h5


def test_synapse_class_order_is_transunets():
    assert SYNAPSE_CLASSES == (
        "background",
        "aorta",
        "gallbladder",
        "kidney_left",
        "kidney_right",
        "liver",
        "pancreas",
        "spleen",
        "stomach",
    )


def test_synapse_slices(synapse_root):
    slices = load_synapse_slices(synapse_root, spacing=(0.8, 0.8, 5.0))
    assert [v.case_id for v in slices] == [
        "case0005_slice000",
        "case0005_slice001",
        "case0006_slice000",
    ]
    vol = slices[1]
    assert vol.image.shape == (1, 8, 6, 1) and vol.label.shape == (8, 6, 1)
    np.testing.assert_array_equal(vol.image[0, :, :, 0], ramp((8, 6)) + 1)
    assert vol.label.dtype == np.int64 and set(np.unique(vol.label)) == {0, 2}
    assert vol.spacing == (0.8, 0.8, 5.0)
    assert [synapse_case_of(v.case_id) for v in slices] == ["case0005", "case0005", "case0006"]


def test_synapse_volume_moves_depth_last(synapse_root):
    (vol,) = load_synapse_volumes(synapse_root)
    assert vol.case_id == "case0001"
    assert vol.image.shape == (1, 8, 6, 3) and vol.label.shape == (8, 6, 3)
    source = ramp((3, 8, 6))
    for k in range(3):
        np.testing.assert_array_equal(vol.image[0, ..., k], source[k])
    assert vol.label[..., 1].max() == 8 and vol.label[..., 0].max() == 0
    assert vol.spacing == (1.0, 1.0, 1.0)


def test_synapse_bad_files_are_named(synapse_root, tmp_path):
    bad = write_h5(tmp_path / "case0002.npy.h5", image=ramp((3, 8, 6)))
    with pytest.raises(DataError, match=r"case0002.npy.h5: missing dataset\(s\) \['label'\]"):
        load_synapse_volume(bad)
    btcv = write_h5(
        tmp_path / "case0003.npy.h5", image=ramp((2, 4, 4)), label=np.full((2, 4, 4), 11)
    )
    with pytest.raises(DataError, match=r"label values \[11\] .*remap_btcv=True"):
        load_synapse_volume(btcv)
    assert np.all(load_synapse_volume(btcv, remap_btcv=True).label == 6)  # pancreas
    with pytest.raises(DataError, match="case9999_slice000.npz: file not found"):
        load_synapse_slices(synapse_root, names=["case9999_slice000"])
    with pytest.raises(DataError, match="train.txt: list file not found"):
        load_synapse_slices(synapse_root / "missing_root")


def test_btcv_remap_follows_transunet_order():
    btcv = np.arange(14)
    mapped = remap_btcv_labels(btcv)
    # BTCV: 1 spleen 2 right kidney 3 left kidney 4 gallbladder 6 liver 7 stomach 8 aorta
    # 11 pancreas
    names = {int(b): SYNAPSE_CLASSES[m] for b, m in zip(btcv, mapped, strict=True)}
    assert names[1] == "spleen" and names[2] == "kidney_right" and names[3] == "kidney_left"
    assert names[4] == "gallbladder" and names[6] == "liver" and names[7] == "stomach"
    assert names[8] == "aorta" and names[11] == "pancreas"
    assert all(names[b] == "background" for b in (0, 5, 9, 10, 12, 13))


@pytest.fixture()
def acdc_root(tmp_path: Path) -> Path:
    root = tmp_path / "ACDC"
    slices = ["patient001_frame01_slice_1", "patient001_frame01_slice_2"]
    for i, name in enumerate(slices):
        label = np.zeros((8, 6), np.uint8)
        label[1:3, 1:3] = i + 1
        write_h5(root / "data" / "slices" / f"{name}.h5", image=ramp((8, 6)) * i, label=label)
    for name in ("patient001_frame01", "patient002_frame12"):
        label = np.zeros((4, 8, 6), np.uint8)
        label[2, 3:5, 3:5] = 3
        write_h5(root / "data" / f"{name}.h5", image=ramp((4, 8, 6)), label=label)
    (root / "train_slices.list").write_text("\n".join(slices) + "\n")
    (root / "train.list").write_text("patient001_frame01\n")
    (root / "val.list").write_text("patient002_frame12\n\n")
    (root / "test.list").write_text("patient002_frame12\n")
    return root


def test_acdc_slices_and_volumes(acdc_root):
    assert ACDC_CLASSES == ("background", "RV", "Myo", "LV")
    slices = load_acdc_slices(acdc_root)
    assert [v.image.shape for v in slices] == [(1, 8, 6, 1)] * 2
    assert slices[1].label.max() == 2
    np.testing.assert_array_equal(slices[1].image[0, ..., 0], ramp((8, 6)))
    (vol,) = load_acdc_volumes(acdc_root, "val", spacing=(1.5, 1.5, 10.0))
    assert vol.case_id == "patient002_frame12" and vol.image.shape == (1, 8, 6, 4)
    np.testing.assert_array_equal(vol.image[0, ..., 2], ramp((4, 8, 6))[2])
    assert vol.label[..., 2].max() == 3 and vol.spacing == (1.5, 1.5, 10.0)
    assert read_acdc_list(acdc_root, "test") == ["patient002_frame12"]
    assert acdc_patient_of("patient001_frame01_slice_2") == "patient001"


def test_acdc_bad_label_and_list(acdc_root, tmp_path):
    bad = write_h5(tmp_path / "p.h5", image=ramp((2, 4, 4)), label=np.full((2, 4, 4), 4))
    with pytest.raises(DataError, match=r"p.h5: label values \[4\] are outside 0..3"):
        load_acdc_volume(bad)
    (acdc_root / "val.list").unlink()
    with pytest.raises(DataError, match="val.list: list file not found"):
        load_acdc_volumes(acdc_root, "val")
    with pytest.raises(ValueError, match="split must be one of"):
        read_acdc_list(acdc_root, "holdout")


# ----------------------------------------------------------------------------- spacing


def synapse_config(root: Path, *overrides: str):
    return load_config("synapse_unet2d", [f"data.root={root}", "data.split_fractions=[0.5,0.5,0]",
                                          *overrides]).data


def test_synapse_without_spacing_says_distances_are_in_voxels(synapse_root):
    (vol,) = load_eval_volumes(synapse_config(synapse_root), "test")
    assert not vol.spacing_known and vol.spacing == (1.0, 1.0, 1.0)


def test_user_spacing_builds_the_affine_for_every_subset(synapse_root):
    cfg = synapse_config(synapse_root, "data.spacing=[0.7,0.7,3.0]", "data.slice_size=[32,32]")
    data = prepare_data(cfg)
    for vol in [*data.train.volumes, *data.val]:
        assert vol.spacing_known and vol.spacing == (0.7, 0.7, 3.0)
    (test,) = load_eval_volumes(cfg, "test")
    assert test.spacing_known and test.spacing == (0.7, 0.7, 3.0)


def test_spacing_file_gives_each_case_its_own_and_names_a_missing_case(synapse_root, tmp_path):
    table = tmp_path / "spacing.json"
    table.write_text(json.dumps({"case0001": [0.8, 0.8, 2.5]}))
    cfg = synapse_config(synapse_root, f"data.spacing_file={table}")
    (test,) = load_eval_volumes(cfg, "test")
    assert test.spacing_known and test.spacing == (0.8, 0.8, 2.5)
    with pytest.raises(DataError, match=r'spacing.json: no entry for case (case000\d); add "\1"'):
        load_eval_volumes(cfg, "val")


def test_spacing_settings_are_refused_for_formats_with_their_own(tmp_path):
    cfg = load_config("unet3d", [f"data.root={tmp_path}", "data.spacing=[1,1,1]"])
    with pytest.raises(DataError, match="nnunet files carry their own spacing"):
        prepare_data(cfg.data)


def test_spacing_known_survives_every_volume_transformation():
    vol = Volume(np.random.rand(1, 4, 4, 4), np.zeros((4, 4, 4)), spacing_known=False)
    derived = [vol.slab(0, 2), downsample_volume(vol, 2), normalize_volume(vol, "zscore"),
               stack_slices([vol.slab(0, 1), vol.slab(1, 2)], "c")]
    assert [v.spacing_known for v in derived] == [False] * 4


# ----------------------------------------------------------------------------- registry


def test_a_new_format_is_one_registration(monkeypatch):
    monkeypatch.setattr(formats, "_REGISTRY", dict(formats._REGISTRY))  # undone after the test

    def load(cfg, wanted, check):
        vols = {"train": [Volume(np.ones((1, 32, 32, 2)), np.ones((32, 32, 2)), case_id="t")],
                "val": [], "test": []}
        return Loaded({name: vols[name] for name in wanted}, Split(["t"], [], []))

    register_format("toy", DataFormat(load, lambda cfg: ["background", "thing"],
                                      lambda cfg, train: make_record([{"scheme": "none"}])))
    assert "toy" in available_formats()
    data = prepare_data(load_config("demo", ["data.format=toy", "data.slice_size=null"]).data)
    assert data.class_names == ["background", "thing"] and data.in_channels == 1
    assert data.preprocessing["intensity"] == [{"scheme": "none"}]
