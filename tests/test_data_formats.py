"""Data formats: one contract test that every registered format passes on a tiny dataset, and
the Synapse (TransUNet) and ACDC (SSL4MIS) loaders on small fake files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from morse.config import load_config
from morse.data import Volume, formats
from morse.data.acdc import (
    ACDC_CLASSES,
    acdc_patient_of,
    load_acdc_slices,
    load_acdc_volume,
    load_acdc_volumes,
    read_acdc_list,
)
from morse.data.atlas_demo import AAL_GROUPS, downsample_volume
from morse.data.formats import DataFormat, Loaded, available_formats, register_format
from morse.data.intensity import check_record, make_record, normalize_volume
from morse.data.prepare import load_eval_volumes, prepare_data
from morse.data.split import Split
from morse.data.synapse import (
    SYNAPSE_CLASSES,
    load_synapse_slices,
    load_synapse_volume,
    load_synapse_volumes,
    remap_btcv_labels,
    stack_slices,
    synapse_case_of,
)
from morse.errors import DataError

from helpers import make_mni_tissue, make_synapse, ramp, write_h5


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


def make_acdc(root: Path) -> Path:
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


@pytest.fixture()
def acdc_root(tmp_path: Path) -> Path:
    return make_acdc(tmp_path / "ACDC")


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


# ----------------------------------------------------------------------------- the contract


def _save_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))


def _organ(shape: tuple[int, ...], value: int = 1) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[2:5, 2:5, 1:3] = value
    return label


def make_nnunet(root: Path) -> Path:
    """Four cases of two channels, nnU-Net v2 naming."""
    spec = {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "organ": 1},
            "file_ending": ".nii.gz", "numTraining": 4}
    for case in ("a", "b", "c", "d"):
        for channel in range(2):
            _save_nifti(root / "imagesTr" / f"{case}_{channel:04d}.nii.gz", ramp((8, 8, 4)))
        _save_nifti(root / "labelsTr" / f"{case}.nii.gz", _organ((8, 8, 4)))
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def make_msd(root: Path) -> Path:
    """Four single-file cases, Decathlon layout."""
    names = ("la_1", "la_2", "la_3", "la_4")
    spec = {"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "left atrium"},
            "numTraining": 4, "test": [],
            "training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"}
                         for n in names]}
    for name in names:
        _save_nifti(root / "imagesTr" / f"{name}.nii.gz", ramp((8, 8, 4)))
        _save_nifti(root / "labelsTr" / f"{name}.nii.gz", _organ((8, 8, 4)))
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def make_atlas_demo(root: Path) -> Path:
    """A 20 x 6 x 30 head whose every AAL region lies in both hemispheres (x = 0 at index 10)."""
    regions = [name for members in AAL_GROUPS.values() for name in members]
    root.mkdir(parents=True)
    (root / "aal.nii.txt").write_text(
        "".join(f"{value} {name} {value}\n" for value, name in enumerate(regions, start=1)))
    aal = np.zeros((20, 6, 30), np.int16)
    aal[2:18, :, 3:27] = np.arange(24)[None, None, :] % len(regions) + 1
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[0, 3] = -20.0
    _save_nifti(root / "aal.nii.gz", aal, affine)
    _save_nifti(root / "ch2.nii.gz", (aal > 0).astype(np.uint8) * 100 + 1, affine)
    return root


TINY_DATASETS = {
    "nnunet": make_nnunet,
    "msd": make_msd,
    "synapse": make_synapse,
    "acdc": make_acdc,
    "atlas-demo": make_atlas_demo,
    "mni-tissue": make_mni_tissue,
}
"""A builder of a tiny dataset per registered format: a new format adds its own here."""


def test_every_registered_format_has_a_tiny_dataset():
    assert sorted(TINY_DATASETS) == available_formats()


class TestFormatContract:
    """What every registered format gives: subsets of Volumes (image (C, *S) float32, label
    (*S) int64 in 0..K-1, affine (4, 4) float64), K class names and a usable record."""

    @pytest.fixture(params=available_formats())
    def data_config(self, request, tmp_path):
        root = TINY_DATASETS[request.param](tmp_path / request.param)
        return load_config("demo", [f"data.format={request.param}", f"data.root={root}",
                                    "data.split_fractions=[0.5,0.25,0.25]",
                                    "data.slice_size=null"]).data

    @pytest.fixture()
    def loaded(self, data_config):
        return formats.data_format(data_config).load(data_config, ("train", "val", "test"), True)

    def test_loads_every_subset_asked_for(self, loaded):
        assert set(loaded.volumes) == {"train", "val", "test"}
        assert loaded.volumes["train"] and loaded.split.train

    def test_volumes_have_the_contract_shapes_and_dtypes(self, data_config, loaded):
        num_classes = len(formats.data_format(data_config).class_names(data_config))
        channels = {v.num_channels for vols in loaded.volumes.values() for v in vols}
        assert len(channels) == 1
        for volume in (v for vols in loaded.volumes.values() for v in vols):
            assert isinstance(volume, Volume) and volume.spatial_dims == 3
            assert volume.image.dtype == np.float32 and volume.affine.shape == (4, 4)
            assert volume.affine.dtype == np.float64
            assert volume.label.dtype == np.int64
            assert volume.label.shape == volume.image.shape[1:]
            assert 0 <= volume.label.min() and volume.label.max() < num_classes

    def test_class_names_start_with_background(self, data_config):
        names = formats.data_format(data_config).class_names(data_config)
        assert len(names) >= 2 and names[0] == "background"

    def test_preprocessing_record_is_one_predict_can_apply(self, data_config, loaded):
        spec = formats.data_format(data_config)
        record = spec.preprocessing(data_config, lambda: loaded.volumes["train"])
        assert check_record(record, data_config.format) is record
        assert len(record["intensity"]) == loaded.volumes["train"][0].num_channels
