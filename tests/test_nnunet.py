"""MORSE inside nnU-Net v2, end to end on a toy raw dataset: nnU-Net's planning, the tiny MORSE
trainer through nnU-Net's own ``nnUNetv2_train`` (after ``morse nnunet install``), its
``nnUNetv2_predict``, ``morse score``, for the 2d, 3d_fullres (anisotropic strides) and ResEnc
plans; then what the checkpoint holds, what eval returns, the cascade's extra input channels, the
warm start from a plain checkpoint and the errors.

Skipped without nnunetv2 (``pip install -e ".[nnunet]" "torch==<yours>"``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

from nnunetv2.run.run_training import maybe_load_checkpoint  # noqa: E402
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402

from morse.cli.main import main  # noqa: E402
from morse.errors import CheckpointError, ConfigError  # noqa: E402
from morse.nnunet import launch  # noqa: E402
from morse.nnunet.network import MorseUNet, check_unrollable  # noqa: E402
from morse.nnunet.trainer import nnUNetTrainerMORSE, nnUNetTrainerMORSE_tiny  # noqa: E402
from morse.nnunet.weights import load_plain_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
"""Where this environment's console scripts live (nnU-Net's stock commands)."""
DATASET = "Dataset901_Toy"
TRAINER = "nnUNetTrainerMORSE_tiny"
pytestmark = pytest.mark.slow


def write_toy_dataset(raw: Path, cases: int = 8, test_cases: int = 2) -> Path:
    """An nnU-Net raw dataset: two discs (labels 1, 2) on noise, 40 x 40 x 4 at 1 x 1 x 3 mm;
    the last ``test_cases`` go to imagesTs / labelsTs."""
    root = raw / DATASET
    rng = np.random.default_rng(0)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True)
    yy, xx = np.mgrid[:40, :40]
    for index in range(cases):
        label = np.zeros((40, 40, 4), np.uint8)
        for cls in (1, 2):
            cy, cx = rng.uniform(10, 30, 2)
            label[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(5, 9) ** 2] = cls
        image = (label * 40.0 + rng.normal(0, 15, label.shape)).astype(np.float32)
        part = "Tr" if index < cases - test_cases else "Ts"
        affine = np.diag([1.0, 1.0, 3.0, 1.0])
        case = f"toy_{index}"
        nib.save(nib.Nifti1Image(image, affine), root / f"images{part}" / f"{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / f"labels{part}" / f"{case}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2},
        "numTraining": cases - test_cases, "file_ending": ".nii.gz",
    }))
    return root


@pytest.fixture(scope="module")
def nnunet(tmp_path_factory):
    """nnU-Net's folders (environment set for this module), the toy dataset planned and
    preprocessed by nnU-Net's own command for 2d and 3d_fullres (default and ResEnc M plans),
    and MORSE's trainers installed where nnU-Net's stock commands find them."""
    base = tmp_path_factory.mktemp("nnunet")
    env = {
        "nnUNet_raw": str(base / "raw"), "nnUNet_preprocessed": str(base / "preprocessed"),
        "nnUNet_results": str(base / "results"), "nnUNet_def_n_proc": "1",
        "nnUNet_n_proc_DA": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    write_toy_dataset(base / "raw")
    _run(str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", "901", "-c", "2d", "3d_fullres",
         "-np", "1", "1")
    _run(str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", "901", "-c", "2d", "-np", "1",
         "-pl", "nnUNetPlannerResEncM")
    shim_was_there = launch.shim_path().exists()
    launch.install_shim()
    os.environ["nnUNet_n_proc_DA"] = "0"  # training: augment in the main process
    yield base
    if not shim_was_there:
        launch.uninstall_shim()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _train(nnunet: Path, configuration: str, *extra: str) -> Path:
    """The tiny MORSE trainer through nnU-Net's stock ``nnUNetv2_train`` (3 iterations, then
    nnU-Net's final validation of fold 0 on MORSE's output); the fold folder."""
    _run(str(BIN / "nnUNetv2_train"), "901", configuration, "0", "-tr", TRAINER, "-device",
         "cpu", *extra)
    plans = extra[extra.index("-p") + 1] if "-p" in extra else "nnUNetPlans"
    return nnunet / "results" / DATASET / f"{TRAINER}__{plans}__{configuration}" / "fold_0"


@pytest.fixture(scope="module")
def trained(nnunet) -> Path:
    return _train(nnunet, "2d")


def _run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _plans(nnunet: Path) -> tuple[dict, dict]:
    folder = nnunet / "preprocessed" / DATASET
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False  # nnU-Net's train command adds it
    return plans, json.loads((folder / "dataset.json").read_text())


def _trainer(nnunet: Path, cls=nnUNetTrainerMORSE_tiny, dataset_json: dict | None = None):
    plans, spec = _plans(nnunet)
    return cls(plans, "2d", 0, dataset_json or spec, torch.device("cpu"))


def test_training_validates_and_checkpoints_the_renderer(trained):
    final = torch.load(trained / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["trainer_name"] == TRAINER
    keys = final["network_weights"].keys()
    assert any(k.startswith("renderer.") for k in keys)
    assert {k.split(".")[0] for k in keys} == {"encoder", "decoder", "renderer"}
    summary = json.loads((trained / "validation" / "summary.json").read_text())
    assert len(summary["metric_per_case"]) == 2
    log = next(trained.glob("training_log_*.txt")).read_text()
    assert "MORSE point loss" in log


def test_predict_writes_label_maps_and_probabilities_that_morse_scores(trained, nnunet, tmp_path):
    out = tmp_path / "predictions"
    _run(str(BIN / "nnUNetv2_predict"), "-i",
         str(nnunet / "raw" / DATASET / "imagesTs"), "-o", str(out), "-d", "901", "-c", "2d",
         "-f", "0", "-tr", TRAINER, "-device", "cpu", "-npp", "1", "-nps", "1",
         "--save_probabilities")
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["toy_6.nii.gz", "toy_7.nii.gz"]
    assert len(list(out.glob("*.npz"))) == 2
    assert main(["score", str(out), str(nnunet / "raw" / DATASET / "labelsTs"),
                 "-o", str(tmp_path / "scores")]) == 0
    scores = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    assert sorted(scores["prediction"]["per_case"]) == ["toy_6", "toy_7"]


def test_3d_fullres_with_anisotropic_strides_trains_and_predicts_through_stock_commands(
        nnunet, tmp_path):
    plans, _ = _plans(nnunet)
    strides = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["strides"]
    assert any(len(set(s)) > 1 for s in strides)  # the toy's 3 mm axis is pooled less
    fold = _train(nnunet, "3d_fullres")
    assert (fold / "checkpoint_final.pth").is_file()
    out = tmp_path / "predictions"
    _run(str(BIN / "nnUNetv2_predict"), "-i", str(nnunet / "raw" / DATASET / "imagesTs"),
         "-o", str(out), "-d", "901", "-c", "3d_fullres", "-f", "0", "-tr", TRAINER,
         "-device", "cpu", "-npp", "1", "-nps", "1")
    label = nib.load(out / "toy_6.nii.gz")
    assert label.shape == (40, 40, 4) and set(np.unique(label.get_fdata())) <= {0, 1, 2}


def test_resenc_plans_train_with_the_renderer(nnunet):
    fold = _train(nnunet, "2d", "-p", "nnUNetResEncUNetMPlans")
    weights = torch.load(fold / "checkpoint_final.pth", map_location="cpu",
                         weights_only=False)["network_weights"]
    assert any(k.startswith("renderer.") for k in weights)
    assert any("encoder.stages.0.blocks" in k for k in weights)  # residual encoder blocks


def test_cascade_stage_takes_the_previous_stage_as_extra_channels(nnunet):
    plans, spec = _plans(nnunet)
    configurations = plans["configurations"]
    configurations["3d_lowres"] = dict(configurations["3d_fullres"],
                                       data_identifier="nnUNetPlans_3d_fullres",
                                       next_stage="3d_cascade_fullres")
    configurations["3d_cascade_fullres"] = {"inherits_from": "3d_fullres",
                                            "previous_stage": "3d_lowres"}
    trainer = nnUNetTrainerMORSE_tiny(plans, "3d_cascade_fullres", 0, spec, torch.device("cpu"))
    trainer.initialize()
    patch = configurations["3d_fullres"]["patch_size"]
    image = torch.randn(2, 3, *patch)  # the scan and one channel per foreground class
    target = torch.randint(0, 3, (2, 1, *patch))
    trainer.network.train()
    output = trainer.network(image)
    targets = [torch.nn.functional.interpolate(target.float(), size=o.shape[2:]).long()
               for o in output]  # nnU-Net's deep-supervision targets: nearest, per scale
    loss = trainer.loss(output, targets)
    loss.backward()
    first = next(trainer.network.parameters())
    assert first.shape[1] == 3 and first.grad is not None and torch.isfinite(loss)


def test_eval_output_differs_from_the_backbone_only_at_rendered_cells(trained, nnunet):
    trainer = _trainer(nnunet)
    trainer.initialize()
    network = trainer.network
    assert isinstance(network, MorseUNet)
    weights = torch.load(trained / "checkpoint_final.pth", map_location="cpu",
                         weights_only=False)["network_weights"]
    network.load_state_dict(weights)
    trainer.set_deep_supervision_enabled(False)
    network.eval()
    image = torch.randn(2, 1, 40, 40)
    with torch.no_grad():
        output = network(image)
        coarse, rendering = network.render(image)
    assert torch.equal(output, rendering.logits)
    changed = (output != coarse).any(1, keepdim=True)
    assert changed.any() and not (changed & ~rendering.rendered).any()


def test_warm_start_loads_a_plain_checkpoint_and_starts_the_renderer_fresh(nnunet, tmp_path):
    plain = _trainer(nnunet, nnUNetTrainer)
    plain.initialize()
    path = tmp_path / "plain.pth"
    torch.save({"network_weights": plain.network.state_dict()}, path)
    morse = _trainer(nnunet)
    maybe_load_checkpoint(morse, False, False, str(path))  # nnU-Net's -pretrained_weights path
    state = morse.network.state_dict()
    for key, value in plain.network.state_dict().items():
        assert torch.equal(state[key], value), key  # segmentation layers included: same classes
    assert any(key.startswith("renderer.") for key in state)


def test_warm_start_refuses_a_checkpoint_of_another_plan(nnunet, tmp_path):
    morse = _trainer(nnunet)
    morse.initialize()
    weights = {k: v for k, v in morse.network.state_dict().items() if "encoder.stages.0" not in k}
    torch.save({"network_weights": weights}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="does not fit this network's plan"):
        load_plain_weights(morse.network, str(tmp_path / "other.pth"))


def test_regions_and_ignore_label_are_refused_in_one_line(nnunet):
    _, spec = _plans(nnunet)
    ignore = dict(spec, labels={**spec["labels"], "ignore": 3})
    with pytest.raises(ConfigError, match="ignore label is not supported"):
        _trainer(nnunet, dataset_json=ignore)
    regions = dict(spec, labels={"background": 0, "a": [1, 2], "b": 2}, regions_class_order=[1, 2])
    with pytest.raises(ConfigError, match="region-based training"):
        _trainer(nnunet, dataset_json=regions)


def test_networks_without_unet_decoder_are_refused():
    class Primus(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Linear(2, 2)

    with pytest.raises(ConfigError, match="Primus"):
        check_unrollable(Primus())


def test_nnunet_finds_the_trainers_in_the_folder_morse_prints():
    # what nnU-Net's own lookup does with each nnUNet_extTrainer folder
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from morse.nnunet.launch import trainer_dir

    folder = str(trainer_dir())
    found = recursive_find_python_class(folder, TRAINER, None, base_folder=folder,
                                        cleanup_imports_from_base_folder=True)
    assert found is nnUNetTrainerMORSE_tiny


def test_lookup_of_nnunet_trainers_skips_modules_that_cannot_import():
    code = ("from morse.nnunet.launch import _install_trainer_lookup; _install_trainer_lookup(); "
            "from nnunetv2.run import run_training as r; "
            "print(r.recursive_find_trainer_class_by_name('nnUNetTrainer_5epochs').__name__, "
            "r.recursive_find_trainer_class_by_name('nnUNetTrainerMORSE_5epochs').__module__)")
    out = _run(sys.executable, "-c", code)
    assert out.split()[-2:] == ["nnUNetTrainer_5epochs", "morse.nnunet.trainer"]


def test_budget_variants_follow_nnunet_names(nnunet):
    from morse.nnunet import trainer

    assert trainer.nnUNetTrainerMORSE_5epochs.epochs == 5
    assert trainer.nnUNetTrainerMORSE_1epoch.epochs == 1
    assert _trainer(nnunet, trainer.nnUNetTrainerMORSE_50epochs).num_epochs == 50
    assert not _trainer(nnunet, nnUNetTrainerMORSE)._do_i_compile()
