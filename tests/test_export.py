"""`morse export`: the exported graph gives the checkpoint's coarse and rendered labels on a
volume from its description alone, at every size it accepts (torch.export's program always,
TorchScript at one size, ONNX when its packages are there), and bad input is one line with
exit code 2."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from morse.cli.main import main
from morse.data.intensity import raw_to_network
from morse.inference.export import RenderedLogits, Sizes
from morse.inference.graphs import export_program
from morse.inference.trained import load_run
from morse.model.settings import InferenceConfig
from morse.model.volumes import predict_volume

from helpers import TINY, make_dataset, small_morse, train_padded_2d_run

SIZE = ("--size", "32", "32")

# TorchScript is deprecated in torch 2.13 (still loads and runs); the README says so
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny 2D run on padded slices (no slice_size) and 32 x 32 x 6 scans."""
    return train_padded_2d_run(tmp_path_factory.mktemp("export"), "Dataset006_Disc")


@pytest.fixture(scope="module")
def run3d(tmp_path_factory) -> Path:
    """A tiny 3D run on 32^3 windows of 48 x 40 x 36 scans."""
    tmp = tmp_path_factory.mktemp("export3d")
    data = make_dataset(tmp / "Dataset007_Disc", cases=3, shape=(48, 40, 36))
    assert main(["train", "unet3d", f"data.root={data}", *TINY, "train.iterations=2",
                 "data.patch_size=[32,32,32]", "data.split_fractions=[0.34,0.33,0.33]",
                 "-o", str(tmp / "run")]) == 0
    return tmp / "run"


def _network_image(run: Path, description: dict, crop=None) -> np.ndarray:
    """A raw scan of the run's dataset as the description says: the network input (C, *S),
    cropped to ``crop`` voxels per axis when given."""
    data = Path(load_run(run).config.data.root)
    raw = nib.load(data / "imagesTr" / "case0_0000.nii.gz").get_fdata(dtype=np.float32)
    image = raw_to_network(raw[None], description["preprocessing"])
    return image if crop is None else np.ascontiguousarray(
        image[(slice(None), *(slice(0, n) for n in crop))])


def _slices(image: np.ndarray) -> torch.Tensor:
    """(C, H, W, Z) -> its slices (Z, C, H, W)."""
    return torch.from_numpy(image).permute(3, 0, 1, 2).contiguous()


def _network_slices(run: Path, description: dict) -> tuple[np.ndarray, torch.Tensor]:
    image = _network_image(run, description)
    return image, _slices(image)


def _labels(logits) -> np.ndarray:
    """(Z, K, H, W) logits -> (H, W, Z) labels, the volume's layout."""
    return np.moveaxis(np.asarray(logits).argmax(1), 0, -1)


def _checkpoint_prediction(run: Path, image: np.ndarray, patch_size=None, model=None):
    """The checkpoint's own prediction, its renderer in fp32 as the exported graph's (3D: in
    windows of ``patch_size``)."""
    model = model or load_run(run).model
    model.renderer.config = dataclasses.replace(model.renderer.config, render_precision="fp32")
    return predict_volume(model, image, InferenceConfig(patch_size=patch_size),
                          probabilities=True)


def _load_program(path: Path):
    return torch.export.load(str(path)).module()


def test_the_program_of_a_padded_2d_run_gives_the_checkpoints_labels_on_slices_of_two_sizes(
    run, tmp_path,
):
    out = tmp_path / "model.pt2"
    assert main(["export", str(run), str(out)]) == 0  # no --size: every slice size
    description = json.loads((tmp_path / "model.pt2.json").read_text())
    trained = load_run(run)
    assert description["format"] == "pt2" and description["input"]["shape"] == ["B", 1, "H", "W"]
    assert description["input"]["sizes"]["rule"] == "any size, each axis at least 2"
    assert description["preprocessing"] == trained.preprocessing
    assert description["class_names"] == ["background", "disc"]
    check = description["check"]
    assert check["rendered_labels_agree"] == 1.0 and check["max_abs_difference"] < 1e-4
    assert [shape[2:] for shape in check["inputs"]] == [[64, 64], [64, 65]]
    program = _load_program(out)
    for crop in (None, (27, 30, 6)):  # 32 x 32 as trained, and slices padded by the graph
        image = _network_image(run, description, crop)
        with torch.no_grad():
            coarse, logits = program(_slices(image))  # 6 slices: exported with 2, batch free
        reference = _checkpoint_prediction(run, image)
        assert (reference.rendered != reference.coarse).any()  # the renderer changed labels
        np.testing.assert_array_equal(_labels(coarse), reference.coarse)
        np.testing.assert_array_equal(_labels(logits), reference.rendered)
        probabilities = np.moveaxis(logits.softmax(1).numpy(), 0, -1)
        np.testing.assert_allclose(probabilities, reference.probabilities, atol=1e-5)


@pytest.mark.slow
def test_the_program_of_a_3d_run_gives_the_checkpoints_labels_on_windows_of_two_sizes(
    run3d, tmp_path,
):
    out = tmp_path / "model.pt2"
    assert main(["export", str(run3d), str(out)]) == 0
    description = json.loads((tmp_path / "model.pt2.json").read_text())
    assert description["input"]["sizes"]["rule"] == "each axis a multiple of 16, at least 32"
    assert description["check"]["rendered_labels_agree"] == 1.0
    program = _load_program(out)
    model = load_run(run3d).model
    for window in ((32, 32, 32), (48, 32, 32)):
        image = _network_image(run3d, description, window)
        with torch.no_grad():
            coarse, logits = program(torch.from_numpy(image)[None])
        reference = _checkpoint_prediction(run3d, image, patch_size=window, model=model)
        np.testing.assert_array_equal(coarse.argmax(1)[0].numpy(), reference.coarse)
        np.testing.assert_array_equal(logits.argmax(1)[0].numpy(), reference.rendered)
    with pytest.raises(Exception, match="Guard failed"):  # not a multiple of 16
        program(torch.zeros(1, 1, 40, 32, 32))


def test_torchscript_gives_the_checkpoints_coarse_and_rendered_labels_on_a_volume(run, tmp_path):
    out = tmp_path / "model.pt"
    assert main(["export", str(run), str(out), "--format", "torchscript", *SIZE]) == 0
    description = json.loads((tmp_path / "model.pt.json").read_text())
    assert description["input"]["shape"] == ["B", 1, 32, 32]
    assert description["input"]["sizes"]["rule"] == "exactly 32 x 32"
    assert description["check"]["rendered_labels_agree"] == 1.0
    image, slices = _network_slices(run, description)
    exported = torch.jit.load(str(out))
    with torch.no_grad():
        coarse, logits = exported(slices)  # 6 slices: traced with 2, the batch is free
    reference = _checkpoint_prediction(run, image)
    np.testing.assert_array_equal(_labels(coarse), reference.coarse)
    np.testing.assert_array_equal(_labels(logits), reference.rendered)


def test_torchscript_refuses_another_input_size_naming_the_one_it_takes(run, tmp_path):
    out = tmp_path / "model.pt"
    assert main(["export", str(run), str(out), "--format", "torchscript", *SIZE]) == 0
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
    model, size = _toy(spatial_dims), (16,) * spatial_dims
    graph = torch.jit.trace(RenderedLogits(model, size[:2]), _few_uncertain(size),
                            check_trace=False)
    _renders_as_the_model(graph, model, [size])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_a_program_exported_at_one_size_renders_as_the_model_at_others(spatial_dims):
    """torch.export keeps the sizes symbolic (the grid, N points, the batch): nothing the
    export saw, its size or how many cells were uncertain, may stick. 2D slices are resized
    to the run's 16 x 16 and rendered on their own grid."""
    model, size = _toy(spatial_dims), (16,) * spatial_dims
    module = RenderedLogits(model, size if spatial_dims == 2 else None)
    sizes = Sizes((4,) * spatial_dims, (8,) * spatial_dims)  # the toy's stride 4
    program = export_program(module, _few_uncertain(size), sizes, "toy").module()
    _renders_as_the_model(program, model, [size, (8, 12, 20)[:spatial_dims], (20,) * spatial_dims])


def _toy(spatial_dims: int):
    torch.manual_seed(0)
    model = small_morse(spatial_dims, render_points=100, render_precision="fp32").eval()
    model.backbone = _ImageLogits(model.backbone)
    return model


def _few_uncertain(size) -> torch.Tensor:
    """2 images of certain cells but 5 uncertain ones each, fewer than N."""
    example = torch.ones(2, 1, *size)
    example.view(2, -1)[:, :5] = 0.0
    return example


def _renders_as_the_model(graph, model, sizes) -> None:
    """On images of each size where every cell is uncertain, batches of 1 and 3, the graph's
    coarse and rendered logits are the checkpoint's own path (``static_shapes`` off)."""
    for batch, size in itertools.product((1, 3), sizes):
        image = 0.01 * torch.randn(batch, 1, *size)
        reference = RenderedLogits(model, (16, 16), static_shapes=False)
        with torch.no_grad():
            coarse, logits = graph(image)
            expected = reference(image)
            assert model(image).rendered.flatten(1).sum(1).min() > 5  # every cell uncertain
        torch.testing.assert_close(coarse, expected[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(logits, expected[1], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_onnx_gives_the_checkpoints_labels_on_slices_of_two_sizes(run, tmp_path):
    for package in ("onnx", "onnxscript"):
        pytest.importorskip(package)
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert main(["export", str(run), str(out), "--format", "onnx"]) == 0
    description = json.loads((tmp_path / "model.onnx.json").read_text())
    assert description["format"] == "onnx" and description["input"]["name"] == "image"
    assert description["check"]["rendered_labels_agree"] == 1.0
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for crop in (None, (27, 30, 6)):
        image = _network_image(run, description, crop)
        coarse, logits = session.run(None, {"image": _slices(image).numpy()})
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
        (["{missing}", "{tmp}/m.pt2"], "no such checkpoint or run folder"),
        (["{run}", "{tmp}/m.pt2", "--format", "pickle"],
         "--format pickle: unknown; choose one of pt2, onnx, torchscript, bundle"),
        (["{run}", "{tmp}/m.pt", "--format", "torchscript"],
         "pads each slice (data.slice_size is null) and a TorchScript graph takes one size; "
         "give it with --size H W, or use --format pt2"),
        (["{run}", "{tmp}/m.pt2", "--size", "0", "30"], "--size 0 30: a 2D model needs 2 "
                                                        "positive sizes"),
        (["{run}", "{tmp}/m.pt2", "--size", "32"], "--size 32: a 2D model needs 2"),
        (["{run}", "{tmp}/m.json"], "OUT names the model file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run, tmp_path, capsys, argv, named):
    values = {"missing": str(tmp_path / "nowhere"), "tmp": str(tmp_path), "run": str(run)}
    code = main(["export", *(a.format(**values) for a in argv)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and named in err[0], err


def test_existing_files_are_kept_unless_overwrite_is_given(run, tmp_path, capsys):
    out = tmp_path / "model.pt2"
    (tmp_path / "model.pt2.json").write_text("{}")
    assert main(["export", str(run), str(out), *SIZE]) == 2
    assert "model.pt2.json: already exists; pass --overwrite" in capsys.readouterr().err
    assert not out.exists()
    assert main(["export", str(run), str(out), *SIZE, "--overwrite"]) == 0
    description = json.loads((tmp_path / "model.pt2.json").read_text())
    assert description["file"] == "model.pt2"
    assert description["input"]["sizes"]["rule"] == "exactly 32 x 32"
