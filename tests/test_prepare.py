"""2D training data without data.slice_size: slices of any size padded to a common multiple
of 32, image and label alike, the affine kept."""

from __future__ import annotations

import numpy as np

from morse.config import DataConfig
from morse.data.prepare import _training_dataset, pad_slices
from morse.data.volume import Volume


def _volume(shape: tuple[int, ...], case_id: str) -> Volume:
    rng = np.random.default_rng(0)
    label = (rng.random(shape) > 0.5).astype(np.int64)
    affine = np.diag([0.7, 0.9, 3.0, 1.0])
    return Volume(rng.random((2, *shape)).astype(np.float32), label, affine, case_id)


def test_slices_are_padded_at_the_far_ends_by_repeating_the_edge():
    small, large = _volume((20, 28, 3), "small"), _volume((40, 30, 2), "large")
    padded = pad_slices([small, large])
    assert [p.image.shape for p in padded] == [(2, 64, 32, 3), (2, 64, 32, 2)]
    assert [p.label.shape for p in padded] == [(64, 32, 3), (64, 32, 2)]
    first = padded[0]
    np.testing.assert_array_equal(first.image[:, :20, :28], small.image)
    np.testing.assert_array_equal(first.image[:, 20:, :28], np.repeat(small.image[:, 19:20, :],
                                                                      44, axis=1))
    np.testing.assert_array_equal(first.label[:20, 28:], np.repeat(small.label[:, 27:28], 4, 1))
    np.testing.assert_array_equal(first.affine, small.affine)


def test_a_2d_dataset_of_odd_slices_gives_batches_the_backbones_accept():
    cfg = DataConfig(format="nnunet", spatial_dims=2)
    dataset = _training_dataset(cfg, [_volume((20, 28, 3), "a"), _volume((33, 28, 2), "b")])
    sizes = {tuple(dataset[i]["image"].shape) for i in range(len(dataset))}
    assert sizes == {(2, 64, 32)}
    assert {tuple(dataset[i]["label"].shape) for i in range(len(dataset))} == {(1, 64, 32)}


def test_a_set_slice_size_still_resizes_instead():
    cfg = DataConfig(format="nnunet", spatial_dims=2, slice_size=[32, 32])
    dataset = _training_dataset(cfg, [_volume((20, 28, 3), "a")])
    assert tuple(dataset[0]["image"].shape) == (2, 32, 32)


def _dataset_of_mixed_grids(root):
    """An nnU-Net folder of 3 cases: RAS 1 x 1 x 3 mm, LPS 0.5 x 0.5 x 3 mm, and one stored
    with its axes in another order (S, R, A) at 2 x 1 x 1 mm."""
    import json

    import nibabel as nib

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    grids = {"ras": (np.diag([1.0, 1.0, 3.0, 1.0]), (24, 24, 6)),
             "lps": (np.diag([-0.5, -0.5, 3.0, 1.0]), (48, 48, 6)),
             "sra": (np.array([[0, 1.0, 0, 0], [0, 0, 1.0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]]),
                     (6, 24, 24))}
    for case, (affine, shape) in grids.items():
        image = np.random.default_rng(0).random(shape).astype(np.float32)
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image((image > 0.5).astype(np.uint8), affine),
                 root / "labelsTr" / f"{case}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1},
        "numTraining": 3, "file_ending": ".nii.gz"}))
    return root


def test_training_cases_come_in_ras_at_the_median_spacing_and_the_record_keeps_it(tmp_path):
    from morse.data.prepare import prepare_data

    root = _dataset_of_mixed_grids(tmp_path / "Dataset009_Mixed")
    cfg = DataConfig(format="nnunet", root=str(root), spatial_dims=3, split_fractions=[1, 0, 0],
                     patch_size=[8, 8, 4])
    prepared = prepare_data(cfg)
    assert prepared.preprocessing["geometry"] == {
        "orientation": "RAS", "spacing": [1.0, 1.0, 3.0], "slice_axis": None}
    volumes = prepared.train.volumes
    assert sorted(v.spatial_shape for v in volumes) == [(24, 24, 6)] * 3
    for volume in volumes:
        assert np.allclose(volume.affine[:3, :3], np.diag([1.0, 1.0, 3.0]))
    kept = prepare_data(DataConfig(**{**cfg.__dict__, "target_spacing": None}))
    assert "geometry" not in kept.preprocessing
    assert sorted(v.spatial_shape for v in kept.train.volumes) == [
        (6, 24, 24), (24, 24, 6), (48, 48, 6)]
