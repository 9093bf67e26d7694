"""Faults a long run meets: a second writer, an earlier run in the folder, a diverging loss,
Ctrl-C at the wrong moment, a changed or edited config on resume, a damaged log, a device the
machine lacks, a file where a folder goes. Each ends in one line and a non-zero exit, or in
the right answer; nothing finished is lost or replaced."""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import pytest
import torch
import yaml

import morse.training.loop as loop_module
from morse.cli.main import main
from morse.io.checkpoint import load_checkpoint

from helpers import TINY, make_dataset, write_config


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "tiny.yaml", make_dataset(tmp_path / "Dataset001_Disc"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-step run: its config file and its folder."""
    tmp = tmp_path_factory.mktemp("faults")
    config = write_config(tmp / "tiny.yaml", make_dataset(tmp / "Dataset001_Disc"))
    run = tmp / "run"
    assert main(["train", str(config), *TINY, "-o", str(run)]) == 0
    return config, run


def _train(config, run, *extra):
    return main(["train", str(config), *TINY, *extra, "-o", str(run)])


def test_a_second_writer_is_refused_while_a_run_holds_the_folder(tmp_path, config, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from morse.io.lock import FolderLock; "
         "FolderLock(sys.argv[1], 'morse train').acquire(); print('held', flush=True); "
         "time.sleep(60)", str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _train(config, run) == 2
    finally:
        holder.kill()
        holder.wait()
    assert f"is in use by morse train (pid {holder.pid}" in capsys.readouterr().err
    assert not (run / "last.pt").exists()


def test_a_new_run_refuses_a_folder_holding_an_earlier_runs_best_pt(tmp_path, config, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"an earlier model")
    assert _train(config, run) == 2
    assert "already holds a run (best.pt)" in capsys.readouterr().err
    assert (run / "best.pt").read_bytes() == b"an earlier model"


def _loss_becoming_nan_at(step: int):
    real = loop_module.build_loss

    def build(cfg, num_classes):
        loss_fn = real(cfg, num_classes)

        def loss(output, label, current, total):
            value, parts = loss_fn(output, label, current, total)
            return (value * math.nan, parts) if current == step else (value, parts)

        return loss

    return build


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path, config, capsys, monkeypatch
):
    run = tmp_path / "run"
    monkeypatch.setattr(loop_module, "build_loss", _loss_becoming_nan_at(2))
    assert _train(config, run, "train.iterations=4", "train.checkpoint_every=1") == 2
    assert "the loss is nan at step 3" in capsys.readouterr().err
    state = load_checkpoint(run / "last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_ctrl_c_while_best_pt_is_written_leaves_last_pt_claiming_no_new_best(
    tmp_path, config, monkeypatch
):
    run = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop_module, "keep_best", interrupted)
    assert _train(config, run) == 130
    assert load_checkpoint(run / "last.pt")["best_metric"] == -math.inf
    assert not (run / "best.pt").exists()


def test_resume_refuses_a_changed_setting_and_names_it(trained, capsys):
    config, run = trained
    before = (run / "last.pt").read_bytes()
    assert main(["train", str(config), *TINY, "model.expert_width=32", "--resume",
                 str(run)]) == 2
    assert "model.expert_width: 16 -> 32" in capsys.readouterr().err
    assert (run / "last.pt").read_bytes() == before


def test_resume_refuses_overrides_without_a_config(trained, capsys):
    _, run = trained
    assert main(["train", "train.iterations=5", "--resume", str(run)]) == 2
    assert "overrides (train.iterations=5) are not applied" in capsys.readouterr().err


def test_resume_refuses_an_edited_config_yaml_and_names_the_key(tmp_path, config, capsys):
    run = tmp_path / "run"
    assert _train(config, run) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["train"]["lr"] = 0.5
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert main(["train", "--resume", str(run)]) == 2
    assert "train.lr: 0.01 -> 0.5" in capsys.readouterr().err


def test_resume_sets_a_damaged_curves_csv_aside_and_continues(tmp_path, config):
    run = tmp_path / "run"
    assert _train(config, run, "train.iterations=4") == 0
    state = load_checkpoint(run / "last.pt")
    state["step"] = 2  # as if stopped half-way
    torch.save(state, run / "last.pt")
    (run / "curves.csv").write_bytes(b"\xff\xfe garbage \x00\x01")
    with pytest.warns(UserWarning, match="kept it as curves.csv.damaged"):
        assert main(["train", "--resume", str(run)]) == 0
    assert (run / "curves.csv.damaged").read_bytes() == b"\xff\xfe garbage \x00\x01"
    assert (run / "curves.csv").read_text().startswith("step,")


def test_train_given_a_run_folder_points_to_resume(trained, capsys):
    _, run = trained
    assert main(["train", str(run)]) == 2
    assert f"continue a run with --resume {run}" in capsys.readouterr().err


@pytest.mark.parametrize("device, says", [
    ("banana", "'banana' is not a device"),
    pytest.param("cuda", "sees no CUDA GPU", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_a_device_the_machine_lacks_is_one_line(trained, tmp_path, capsys, device, says):
    config, run = trained
    scan = next((config.parent / "Dataset001_Disc" / "imagesTr").iterdir())
    assert main(["predict", str(run), str(scan), "-o", str(tmp_path / "out"), "--device",
                 device]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1


def test_a_file_where_the_output_folder_goes_is_one_line_before_any_work(
    trained, tmp_path, capsys
):
    config, run = trained
    scan = next((config.parent / "Dataset001_Disc" / "imagesTr").iterdir())
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    assert main(["predict", str(run), str(scan), "-o", str(blocker / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("morse predict: error:") and len(err.splitlines()) == 1
    assert str(blocker) in err


def test_an_export_size_beyond_memory_is_refused_with_the_estimate(trained, tmp_path, capsys):
    _, run = trained
    assert main(["export", str(run), str(tmp_path / "model.pt"), "--size", "100000",
                 "100000"]) == 2
    err = capsys.readouterr().err
    assert "100000 x 100000 cells" in err and "GiB" in err
    assert not (tmp_path / "model.pt").exists()


def test_a_full_disk_during_a_nifti_write_keeps_the_previous_file(tmp_path, monkeypatch):
    import errno

    import nibabel as nib
    import numpy as np

    from morse.data.nifti import write_label_like

    reference = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4)), reference)
    target = write_label_like(tmp_path / "scan_seg.nii.gz", np.ones((4, 5, 6), int), reference)
    good = target.read_bytes()
    real = nib.Nifti1Image.to_file_map

    def full_disk(self, file_map=None, **kwargs):
        file_map["image"].fileobj.write(b"half a header")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nib.Nifti1Image, "to_file_map", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_label_like(target, np.zeros((4, 5, 6), int), reference)
    monkeypatch.setattr(nib.Nifti1Image, "to_file_map", real)
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz", "scan_seg.nii.gz"]


def _scan(config):
    return sorted((config.parent / "Dataset001_Disc" / "imagesTr").iterdir())[0]


def test_predict_refuses_to_replace_an_existing_extra_map_without_overwrite(
    trained, tmp_path, capsys
):
    config, run = trained
    out = tmp_path / "out"
    out.mkdir()
    (out / "case0_coarse.nii.gz").write_bytes(b"an earlier coarse map")
    assert main(["predict", str(run), str(_scan(config)), "-o", str(out), "--coarse"]) == 2
    assert "case0_coarse.nii.gz: already exists" in capsys.readouterr().err
    assert (out / "case0_coarse.nii.gz").read_bytes() == b"an earlier coarse map"
    assert not (out / "case0.nii.gz").exists()


def _copies(config, folder, *names):
    """Copies of one training scan under ``names`` in ``folder``."""
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(_scan(config).read_bytes())
    return folder


def test_predict_refuses_two_inputs_whose_maps_share_a_file(trained, tmp_path, capsys):
    config, run = trained
    scans = _copies(config, tmp_path / "scans", "a.nii.gz", "a_coarse.nii.gz")
    assert main(["predict", str(run), str(scans / "a.nii.gz"), str(scans / "a_coarse.nii.gz"),
                 "-o", str(tmp_path / "out"), "--coarse"]) == 2
    assert "a_coarse.nii.gz: both the" in capsys.readouterr().err


def test_predict_into_the_input_folder_never_replaces_an_input(trained, tmp_path, capsys):
    config, run = trained
    scans = _copies(config, tmp_path / "scans", "a.nii.gz", "b.nii.gz")
    before = (scans / "a.nii.gz").read_bytes()
    assert main(["predict", str(run), str(scans / "a.nii.gz"), str(scans / "b.nii.gz"), "-o",
                 str(scans), "--overwrite"]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert (scans / "a.nii.gz").read_bytes() == before


def test_a_second_predict_into_a_held_folder_is_refused(trained, tmp_path, capsys):
    config, run = trained
    out = tmp_path / "out"
    from morse.io.lock import FolderLock

    with FolderLock(out, "morse predict"):
        assert main(["predict", str(run), str(_scan(config)), "-o", str(out)]) == 2
    assert "is in use by morse predict" in capsys.readouterr().err
    assert not (out / "case0.nii.gz").exists()


def test_evaluate_refuses_a_dataset_whose_changed_case_list_would_move_cases(
    trained, tmp_path, capsys
):
    import shutil

    config, run = trained
    data = shutil.copytree(config.parent / "Dataset001_Disc", tmp_path / "Dataset001_Disc")
    for folder, suffix in (("imagesTr", "_0000"), ("labelsTr", "")):
        source = data / folder / f"case0{suffix}.nii.gz"
        shutil.copy(source, data / folder / f"added{suffix}.nii.gz")
    assert main(["evaluate", str(run), "--data", str(data), "-o", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert "split.json: the dataset's cases changed" in err and "added: new ->" in err
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_score_without_classes_takes_them_from_the_references_not_a_stray_prediction(
    tmp_path, capsys
):
    import nibabel as nib
    import numpy as np

    preds, refs = tmp_path / "preds", tmp_path / "refs"
    preds.mkdir()
    refs.mkdir()
    truth = np.zeros((8, 8, 3), np.uint8)
    truth[2:6, 2:6] = 1
    stray = truth.copy()
    stray[0, 0, 0] = 3  # one voxel of a label no reference has
    nib.save(nib.Nifti1Image(truth, np.eye(4)), refs / "a.nii.gz")
    nib.save(nib.Nifti1Image(stray, np.eye(4)), preds / "a.nii.gz")
    assert main(["score", str(preds), str(refs)]) == 2
    err = capsys.readouterr().err
    assert "a.nii.gz" in err and "outside 0..1 (2 classes)" in err
    nib.save(nib.Nifti1Image(truth, np.eye(4)), preds / "a.nii.gz")
    assert main(["score", str(preds), str(refs)]) == 0
    assert "2 classes (0..largest reference label)" in capsys.readouterr().err


@pytest.mark.parametrize("optimizer_class", [torch.optim.SGD, torch.optim.AdamW])
def test_an_optimizer_state_saved_with_conv1d_point_layers_resumes_as_linear(optimizer_class):
    from morse.training.resume import fit_optimizer_state

    def step(layer, optimizer):
        optimizer.zero_grad()
        layer(torch.ones(2, 3)).sum().backward()
        optimizer.step()

    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 4)
    optimizer = optimizer_class(layer.parameters(), lr=0.1, **(
        {"momentum": 0.9} if optimizer_class is torch.optim.SGD else {}))
    step(layer, optimizer)
    saved = copy.deepcopy(optimizer.state_dict())  # state_dict shares its buffers
    for buffers in saved["state"].values():  # as a Conv1d weight's buffers were shaped
        for name, value in buffers.items():
            if value.dim() == 2:
                buffers[name] = value.unsqueeze(-1)
    twin = torch.nn.Linear(3, 4)
    twin.load_state_dict(layer.state_dict())
    twin_optimizer = optimizer_class(twin.parameters(), lr=0.1, **(
        {"momentum": 0.9} if optimizer_class is torch.optim.SGD else {}))
    twin_optimizer.load_state_dict(saved)
    fit_optimizer_state(twin_optimizer)
    step(layer, optimizer)
    step(twin, twin_optimizer)
    assert torch.equal(layer.weight, twin.weight)


def test_a_section_written_twice_in_yaml_is_refused_naming_both_lines(tmp_path):
    from morse.config import load_config
    from morse.errors import ConfigError

    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  iterations: 5\nmodel:\n  experts: true\ntrain:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"key 'train' written twice \(lines 1 and 5\)"):
        load_config(path)


@pytest.mark.parametrize("name", ["../../..", "a/b", ".."])
def test_a_run_name_that_is_not_a_plain_folder_name_is_refused(name):
    from morse.config import load_config
    from morse.errors import ConfigError

    with pytest.raises(ConfigError, match="name must be a plain folder name"):
        load_config("demo", [f"name={name}"])


def test_a_voxel_size_a_hundred_times_off_is_refused_before_resampling(trained, tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    config, run = trained
    scan = nib.load(_scan(config))
    wrong = np.diag([100.0, 100.0, 100.0, 1.0]) @ scan.affine  # pixdim 70-300 mm, not 0.7-3
    path = tmp_path / "wrong_0000.nii.gz"
    nib.save(nib.Nifti1Image(scan.get_fdata().astype(np.float32), wrong), path)
    assert main(["predict", str(run), str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "would resample network axis" in err and "pixdim" in err


def test_an_h_by_w_scan_is_one_slice_and_its_labels_keep_its_shape(trained, tmp_path):
    import nibabel as nib
    import numpy as np

    config, run = trained
    scan = nib.load(_scan(config))
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(scan.get_fdata()[:, :, 2].astype(np.float32), scan.affine), flat)
    assert main(["predict", str(run), str(flat), "-o", str(tmp_path / "out")]) == 0
    assert nib.load(tmp_path / "out" / "flat.nii.gz").shape == (32, 32)


def test_a_single_channel_scan_named_like_a_channel_file_is_its_own_case(trained, tmp_path):
    config, run = trained
    visit = tmp_path / "visit_2021.nii.gz"
    visit.write_bytes(_scan(config).read_bytes())
    assert main(["predict", str(run), str(visit), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "visit_2021.nii.gz").is_file()


@pytest.mark.parametrize("name, content, says", [
    ("notes.txt", b"hello", "not a NIfTI file"),
    ("empty.nii.gz", b"", "cannot be read as NIfTI"),
    ("._scan.nii.gz", b"\x00\x05\x16\x07" * 64, "cannot be read as NIfTI"),
])
def test_an_input_that_is_not_a_scan_is_one_line_before_the_model_loads(
    trained, tmp_path, capsys, monkeypatch, name, content, says
):
    import morse.inference.files as files_module

    _, run = trained
    monkeypatch.setattr(files_module, "load_run", None)  # any use would fail loudly
    bad = tmp_path / name
    bad.write_bytes(content)
    assert main(["predict", str(run), str(bad), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("override, says", [
    ("model.backbone_options={widht: 0.25}", "unexpected keyword argument 'widht'"),
    ("data.slice_size=[100,100]",
     "data.slice_size [100, 100]: UNet needs every spatial size to be a multiple of 16"),
])
def test_a_model_the_settings_cannot_build_is_refused_before_the_data_is_prepared(
    tmp_path, config, capsys, monkeypatch, override, says
):
    def never(*args, **kwargs):
        raise AssertionError("the data was prepared before the settings were checked")

    monkeypatch.setattr(loop_module, "prepare_data", never)
    assert _train(config, tmp_path / "run", override) == 2
    assert says in capsys.readouterr().err


def test_a_checkpoint_with_nan_weights_is_refused_instead_of_predicting_background(
    trained, tmp_path, capsys
):
    config, run = trained
    state = load_checkpoint(run / "last.pt")
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], math.nan)
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    assert main(["predict", str(broken), str(_scan(config)), "-o", str(tmp_path / "out")]) == 2
    assert "hold NaN or infinity" in capsys.readouterr().err
    assert not (tmp_path / "out" / "case0.nii.gz").exists()


def test_evaluate_into_a_run_folder_that_is_training_is_refused(trained, capsys):
    from morse.io.lock import FolderLock

    _, run = trained
    with FolderLock(run, "morse train"):
        assert main(["evaluate", str(run)]) == 2
    assert "is in use by morse train" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 1.5, 3.0])
def test_kill_9_during_predict_overwrite_leaves_a_whole_file_never_a_truncated_one(
    trained, tmp_path, delay
):
    import os
    import signal
    import time

    import nibabel as nib

    config, run = trained
    out = tmp_path / "out"
    command = [sys.executable, "-m", "morse", "predict", str(run), str(_scan(config)), "-o",
               str(out), "--probabilities", "--overwrite"]
    assert subprocess.run(command, capture_output=True).returncode == 0
    good = {p.name: p.read_bytes() for p in out.glob("*.nii.gz")}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    for name, before in good.items():
        after = (out / name).read_bytes()
        assert after == before or nib.load(out / name).get_fdata().size > 0, name
    assert subprocess.run(command, capture_output=True).returncode == 0  # no lock left behind
    assert not list(out.glob(".*.tmp"))


def test_score_takes_an_h_by_w_map_against_its_h_by_w_by_1_reference(tmp_path):
    import nibabel as nib
    import numpy as np

    from morse.evaluation.score import score_folders

    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    truth = np.zeros((8, 8), np.uint8)
    truth[2:5, 2:5] = 1
    nib.save(nib.Nifti1Image(truth, np.eye(4)), tmp_path / "p" / "a.nii.gz")
    nib.save(nib.Nifti1Image(truth[..., None], np.eye(4)), tmp_path / "r" / "a.nii.gz")
    result = score_folders(tmp_path / "p", tmp_path / "r", classes=2, verbose=False)
    assert result.per_case["a"][1].values["dice"] == 1.0


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_during_predict_is_one_line_and_leaves_no_partial_file(
    trained, small_disk, capsys
):
    config, run = trained
    (small_disk / "filler").write_bytes(b"\0" * (256 * 1024 - 8 * 1024))  # 8 KiB left
    out = small_disk / "out"
    assert main(["predict", str(run), str(_scan(config)), "-o", str(out),
                 "--probabilities"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("morse predict: error:") and "No space left on device" in err
    import nibabel as nib

    for written in out.glob("*.nii.gz"):  # whatever stands under a final name is whole
        assert nib.load(written).get_fdata().size > 0
    assert "case0_probabilities.nii.gz" not in {p.name for p in out.iterdir()}
    assert not list(out.glob(".*.tmp"))


def test_a_read_only_output_folder_is_one_line_before_any_work(trained, small_disk, capsys):
    config, run = trained
    (small_disk / "out").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert main(["predict", str(run), str(_scan(config)), "-o", str(small_disk / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("morse predict: error:") and "Read-only file system" in err
    assert len(err.splitlines()) == 1
