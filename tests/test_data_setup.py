"""From configs to data: the demo's hemisphere split and the 2D slice-size check."""

from pathlib import Path

import numpy as np
import pytest

from morse.config import load_config
from morse.data import Volume, load_atlas_demo
from morse.data.atlas_demo import DEFAULT_TEMPLATE_DIR, atlas_demo_split
from morse.data.prepare import load_eval_volumes, prepare_data

from helpers import make_dataset


def _world_x(volume: Volume) -> np.ndarray:
    """World x (mm) of each index along the first axis."""
    index = np.zeros((4, volume.image.shape[1]))
    index[0], index[3] = np.arange(volume.image.shape[1]), 1
    return (volume.affine @ index)[0]


def test_demo_split_keeps_every_test_voxel_out_of_training_on_a_synthetic_brain():
    label = np.zeros((20, 6, 30), np.int64)
    label[2:18, :, 3:27] = np.arange(16)[:, None, None] % 3 + 1
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[0, 3] = -20.0  # world x = 0 at index 10
    split = atlas_demo_split(Volume(label[None].astype(np.float32), label, affine))
    test_x = _world_x(split["test"][0])
    for volume in split["train"] + split["val"]:
        assert _world_x(volume).max() < test_x.min() - 2
    assert test_x.min() > 0
    train_z = [v.affine[2, 3] + 2 * np.arange(v.image.shape[-1]) for v in split["train"]]
    val_z = split["val"][0].affine[2, 3] + 2 * np.arange(split["val"][0].image.shape[-1])
    assert not set(np.concatenate(train_z)) & set(val_z)


@pytest.mark.skipif(not (Path(DEFAULT_TEMPLATE_DIR) / "aal.nii.gz").exists(),
                    reason="Debian's mricron-data is not installed")
def test_demo_split_of_the_real_brain_has_every_class_in_test():
    split = atlas_demo_split(load_atlas_demo(downsample=2, normalize=False))
    assert np.unique(split["test"][0].label).size == 11
    assert np.unique(np.concatenate([v.label.ravel() for v in split["train"]])).size == 11


def test_2d_slices_that_backbones_cannot_take_are_padded_for_training(tmp_path):
    root = make_dataset(tmp_path / "Dataset002", shape=(30, 33, 4))
    cfg = load_config("demo", ["data.format=nnunet", f"data.root={root}", "data.slice_size=null"])
    sample = prepare_data(cfg.data).train[0]
    assert tuple(sample["image"].shape[1:]) == (32, 64)


@pytest.mark.skipif(not (Path(DEFAULT_TEMPLATE_DIR) / "aal.nii.gz").exists(),
                    reason="Debian's mricron-data is not installed")
def test_demo_normalises_every_subset_with_the_training_statistics():
    cfg = load_config("demo", ["data.downsample=4", "data.slice_size=[32,64]"]).data
    data = prepare_data(cfg)
    (step,) = data.preprocessing["intensity"]
    raw = atlas_demo_split(load_atlas_demo(downsample=4, normalize=False))
    head = np.concatenate([v.image[v.image != 0] for v in raw["train"]])
    assert step == {"scheme": "zscore", "mean": pytest.approx(head.mean(), rel=1e-5),
                    "std": pytest.approx(head.std(), rel=1e-5)}
    (test,) = load_eval_volumes(cfg, "test", data.preprocessing)
    image = raw["test"][0].image
    expected = np.where(image != 0, (image - step["mean"]) / step["std"], 0)
    np.testing.assert_allclose(test.image, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not (Path(DEFAULT_TEMPLATE_DIR) / "aal.nii.gz").exists(),
                    reason="Debian's mricron-data is not installed")
def test_demo3d_trains_on_3d_patches_of_the_left_hemisphere_and_scores_whole_slabs(tmp_path):
    import json

    from morse.cli.main import main

    small = ["data.downsample=4", "data.patch_size=[16,16,16]"]
    cfg = load_config("demo3d", small).data
    data = prepare_data(cfg)
    sample = data.train[0]
    assert tuple(sample["image"].shape) == (1, 16, 16, 16)
    assert tuple(sample["label"].shape) == (1, 16, 16, 16) and int(sample["label"].max()) > 0
    (val,) = data.val
    assert val.spatial_dims == 3 and val.spatial_shape[-1] < 16  # a thin slab: padded windows
    run = tmp_path / "run"
    tiny = ["train.iterations=2", "train.val_every=2", "train.batch_size=2",
            "model.backbone_options={width: 0.25}", "model.expert_width=8", "model.head_width=8",
            "model.num_frequencies=4", "model.train_points=32", "model.render_points=32"]
    assert main(["train", "demo3d", *small, *tiny, "-o", str(run)]) == 0
    assert main(["evaluate", str(run), "--subset", "val"]) == 0
    scored = json.loads((run / "eval_val" / "metrics.json").read_text())
    assert scored["distance_unit"] == "mm" and len(scored["rendered"]["per_case"]) == 1
