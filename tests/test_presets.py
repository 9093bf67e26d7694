"""The presets of the authors' four settings: their protocol, and a two-step smoke run each.

Each smoke run goes through the command users type (``morse train PRESET ...`` then
``morse evaluate RUN``) on tiny generated data, with size overrides that keep it small on a CPU.
"""

from __future__ import annotations

import json

import pytest

from morse.backbone.transunet import TRANSUNET_SMALL
from morse.cli.main import main
from morse.config import load_config

from helpers import make_dataset

AUTHORS = {  # preset: (input size, batch, loss schedule)
    "synapse_unet2d": ([256, 256], 4, "delayed-ramp"),
    "synapse_transunet": ([224, 224], 4, "constant"),
    "la_unet3d": ([112, 112, 80], 2, "constant"),
    "unetr3d": ([96, 96, 96], 2, "constant"),
}

TINY = [
    "train.iterations=2", "train.batch_size=2", "train.log_every=1", "data.num_workers=0",
    "model.expert_width=8", "model.head_width=8", "model.num_frequencies=4",
    "model.train_points=32", "model.render_points=32", "eval.num_examples=1",
]
UNETR_SMALL = {"img_size": [16, 16, 16], "feature_size": 4, "hidden_size": 24, "mlp_dim": 48,
               "num_heads": 2}
SIZES = {  # preset: overrides that shrink the network and its input
    "synapse_unet2d": ["data.slice_size=[32,32]", "model.backbone_options={width: 0.25}"],
    "synapse_transunet": ["data.slice_size=[32,32]",
                          f"model.backbone_options={json.dumps(TRANSUNET_SMALL)}"],
    "la_unet3d": ["data.patch_size=[16,16,16]", "model.backbone_options={width: 0.25}"],
    "unetr3d": ["data.patch_size=[16,16,16]",
                f"model.backbone_options={json.dumps(UNETR_SMALL)}"],
}


@pytest.mark.parametrize("preset", sorted(AUTHORS))
def test_preset_follows_the_authors_protocol(preset):
    cfg = load_config(preset)
    size, batch, schedule = AUTHORS[preset]
    spatial = cfg.data.slice_size if cfg.data.spatial_dims == 2 else cfg.data.patch_size
    assert (spatial, cfg.train.batch_size, cfg.loss.schedule) == (size, batch, schedule)
    train = cfg.train
    assert (train.optimizer, train.lr, train.momentum, train.weight_decay, train.poly_power) == (
        "sgd", 0.01, 0.9, 1e-4, 0.9
    )
    assert (train.iterations, train.seed) == (30000, 1337)
    image_size = cfg.model.backbone_options.get("img_size")
    assert image_size in (None, 224, size), "the ViT's img_size must be the training size"
    if cfg.data.format == "synapse":  # TransUNet's protocol: all 18 training cases train
        assert cfg.data.split_fractions == [1.0, 0.0, 0.0]


@pytest.fixture
def nnunet_root(tmp_path):
    return make_dataset(tmp_path / "Dataset002_LA", cases=5, shape=(32, 32, 16))


@pytest.mark.parametrize("preset", sorted(AUTHORS))
def test_preset_trains_two_steps_and_evaluates(preset, tmp_path, synapse_root, nnunet_root):
    root = synapse_root if preset.startswith("synapse") else nnunet_root
    run = tmp_path / "run"
    args = ["train", preset, f"data.root={root}", *TINY, *SIZES[preset], "-o", str(run)]
    assert main(args) == 0
    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["rendered"]["per_case"], "no test case was scored"
    if preset.startswith("synapse"):  # no validation cases: evaluate fell back to last.pt
        assert not (run / "best.pt").exists() and (run / "last.pt").is_file()
