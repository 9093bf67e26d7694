"""`morse export`: the exported graph gives the checkpoint's coarse and rendered labels on a
volume from its description alone (TorchScript always, ONNX when its packages are there), and
bad input is one line with exit code 2."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from morse.cli.main import main
from morse.data.intensity import raw_to_network
from morse.inference.export import RenderedLogits
from morse.inference.trained import load_run
from morse.model.volumes import predict_volume

from helpers import TINY, make_dataset, small_morse

SIZE = ("--size", "32", "32")

# TorchScript is deprecated in torch 2.13 (still loads and runs); the README says so
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny 2D run on padded slices (no slice_size) and 32 x 32 x 6 scans."""
    tmp = tmp_path_factory.mktemp("export")
    data = make_dataset(tmp / "Dataset006_Disc", cases=3)
    assert main(["train", "nnunet_2d", f"data.root={data}", *TINY, "train.iterations=2",
                 "data.split_fractions=[0.34,0.33,0.33]", "-o", str(tmp / "run")]) == 0
    return tmp / "run"


def _network_slices(run: Path, description: dict) -> tuple[np.ndarray, torch.Tensor]:
    """A raw scan of the run's dataset as the description says: the network input (C, H, W, Z)
    and its slices (Z, C, H, W)."""
    data = Path(load_run(run).config.data.root)
    raw = nib.load(data / "imagesTr" / "case0_0000.nii.gz").get_fdata(dtype=np.float32)
    image = raw_to_network(raw[None], description["preprocessing"])
    return image, torch.from_numpy(image).permute(3, 0, 1, 2).contiguous()


def _labels(logits) -> np.ndarray:
    """(Z, K, H, W) logits -> (H, W, Z) labels, the volume's layout."""
    return np.moveaxis(np.asarray(logits).argmax(1), 0, -1)


def _checkpoint_prediction(run: Path, image: np.ndarray):
    """The checkpoint's own prediction, its renderer in fp32 as the exported graph's."""
    model = load_run(run).model
    model.renderer.config = dataclasses.replace(model.renderer.config, render_precision="fp32")
    return predict_volume(model, image, probabilities=True)


def test_torchscript_gives_the_checkpoints_coarse_and_rendered_labels_on_a_volume(run, tmp_path):
    out = tmp_path / "model.pt"
    assert main(["export", str(run), str(out), *SIZE]) == 0
    description = json.loads((tmp_path / "model.pt.json").read_text())
    trained = load_run(run)
    assert description["input"]["shape"] == ["B", 1, 32, 32]
    assert description["preprocessing"] == trained.preprocessing
    assert description["class_names"] == ["background", "disc"]
    assert description["check"]["rendered_labels_agree"] == 1.0
    image, slices = _network_slices(run, description)
    exported = torch.jit.load(str(out))
    with torch.no_grad():
        coarse, logits = exported(slices)  # 6 slices: traced with 2, the batch is free
    reference = _checkpoint_prediction(run, image)
    assert (reference.rendered != reference.coarse).any()  # the renderer changed labels
    np.testing.assert_array_equal(_labels(coarse), reference.coarse)
    np.testing.assert_array_equal(_labels(logits), reference.rendered)
    probabilities = np.moveaxis(logits.softmax(1).numpy(), 0, -1)
    np.testing.assert_allclose(probabilities, reference.probabilities, atol=1e-5)


def test_torchscript_refuses_another_input_size_naming_the_one_it_takes(run, tmp_path):
    out = tmp_path / "model.pt"
    assert main(["export", str(run), str(out), *SIZE]) == 0
    exported = torch.jit.load(str(out))
    with pytest.raises(Exception, match=r"takes \(B, 1, \*\[32, 32\]\) network input; got shape"):
        exported(torch.zeros(1, 1, 32, 48))
    with pytest.raises(Exception, match="float32"):
        exported(torch.zeros(1, 1, 32, 32, dtype=torch.float64))


class _ImageLogits(torch.nn.Module):
    """The toy's features and logits read off the image, (10 x, 0, -10): the top-2 margin is
    min(10 |x|, 10), so a cell is uncertain (margin below 3) exactly where |x| < 0.3."""

    def __init__(self, toy: torch.nn.Module) -> None:
        super().__init__()
        self.toy = toy
        self.feature_channels = toy.feature_channels

    def forward(self, image: torch.Tensor):
        x = image[:, :1]
        logits = torch.cat([10 * x, torch.zeros_like(x), torch.full_like(x, -10.0)], 1)
        return logits, self.toy(image)[1]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_a_graph_traced_where_few_cells_are_uncertain_renders_as_the_model_where_many_are(
    spatial_dims,
):
    """Nothing the trace saw may stick: how many cells were uncertain, or the batch size."""
    torch.manual_seed(0)
    model = small_morse(spatial_dims, render_points=100, render_precision="fp32").eval()
    model.backbone = _ImageLogits(model.backbone)
    size = (16,) * spatial_dims
    example = torch.ones(2, 1, *size)
    example.view(2, -1)[:, :5] = 0.0  # 5 uncertain cells per image, fewer than N
    graph = torch.jit.trace(RenderedLogits(model, size), example, check_trace=False)
    for batch in (1, 3):
        image = 0.01 * torch.randn(batch, 1, *size)  # every cell uncertain
        with torch.no_grad():
            coarse, logits = graph(image)
            reference = model(image)
        assert reference.rendered.flatten(1).sum(1).min() > 5
        assert torch.equal(coarse, reference.coarse)
        torch.testing.assert_close(logits, reference.logits, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_onnx_gives_the_checkpoints_coarse_and_rendered_labels_on_a_volume(run, tmp_path):
    for package in ("onnx", "onnxscript"):
        pytest.importorskip(package)
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert main(["export", str(run), str(out), "--format", "onnx", *SIZE]) == 0
    description = json.loads((tmp_path / "model.onnx.json").read_text())
    assert description["format"] == "onnx" and description["input"]["name"] == "image"
    image, slices = _network_slices(run, description)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    coarse, logits = session.run(None, {"image": slices.numpy()})
    reference = _checkpoint_prediction(run, image)
    np.testing.assert_array_equal(_labels(coarse), reference.coarse)
    np.testing.assert_array_equal(_labels(logits), reference.rendered)


def test_onnx_without_its_packages_says_how_to_install_them(run, tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)
    code = main(["export", str(run), str(tmp_path / "model.onnx"), "--format", "onnx", *SIZE])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "needs the packages onnx and onnxscript" in err[0] and ".[export]" in err[0]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["{missing}", "{tmp}/m.pt"], "no such checkpoint or run folder"),
        (["{run}", "{tmp}/m.pt", "--format", "pickle", *SIZE],
         "--format pickle: unknown; choose one of torchscript, onnx"),
        (["{run}", "{tmp}/m.pt"], "pads each slice to a multiple of 32 (data.slice_size is "
                                  "null), so there is no one input size; give"),
        (["{run}", "{tmp}/m.pt", "--size", "30", "30"], "--size 30 30: "),
        (["{run}", "{tmp}/m.pt", "--size", "32"], "--size 32: a 2D model needs 2"),
        (["{run}", "{tmp}/m.json", *SIZE], "OUT names the model file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run, tmp_path, capsys, argv, named):
    values = {"missing": str(tmp_path / "nowhere"), "tmp": str(tmp_path), "run": str(run)}
    code = main(["export", *(a.format(**values) for a in argv)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and named in err[0], err


def test_existing_files_are_kept_unless_overwrite_is_given(run, tmp_path, capsys):
    out = tmp_path / "model.pt"
    (tmp_path / "model.pt.json").write_text("{}")
    assert main(["export", str(run), str(out), *SIZE]) == 2
    assert "model.pt.json: already exists; pass --overwrite" in capsys.readouterr().err
    assert not out.exists()
    assert main(["export", str(run), str(out), *SIZE, "--overwrite"]) == 0
    assert json.loads((tmp_path / "model.pt.json").read_text())["file"] == "model.pt"
