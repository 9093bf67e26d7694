"""write_report: a self-contained page from a run directory; missing files are notes."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from morse.evaluation.tables import write_metrics
from morse.metrics import ClassMetrics
from morse.report.figures import class_colors, gate_rgba, label_rgba, make_overlay_figure
from morse.report.page import write_report
from morse.training.curves import CurveLog

CLASSES = ["background", "aorta", "gallbladder"]


def _cm(dice, iou, hd95, asd, policy="") -> ClassMetrics:
    """Metrics with NSDs and bIoU derived from Dice, so that each value is recognisable."""
    values = {"dice": dice, "iou": iou, "hd95": hd95, "asd": asd, "nsd_1mm": dice / 2,
              "nsd_2mm": dice / 3, "biou": dice / 4}
    return ClassMetrics(values, policy)


def _write_metrics(run_dir, distance_unit: str = "mm") -> None:
    coarse = {
        "case0001": {
            1: _cm(0.8123, 0.7, 4.25, 1.5),
            2: _cm(0.0, 0.0, 123.45, 123.45, "one_empty"),
        },
        "case0002": {
            1: _cm(0.9, 0.8, 2.0, 0.5),
            2: _cm(1.0, 1.0, 0.0, 0.0, "both_empty"),
        },
    }
    rendered = {case: {c: _cm(0.95, 0.9, 1.25, 0.25) for c in (1, 2)} for case in coarse}
    results = {"coarse": coarse, "rendered": rendered}
    write_metrics(run_dir, results, CLASSES, distance_unit=distance_unit)


def _write_examples(run_dir, n: int = 2) -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((n, 24, 24), dtype=np.int64)
    truth[:, 4:12, 4:12] = 1
    truth[:, 14:20, 10:20] = 2
    coarse = np.roll(truth, 2, axis=2)
    rendered = np.roll(truth, 1, axis=2)
    points = (coarse != rendered) | (rng.random(truth.shape) < 0.02)
    np.savez(
        run_dir / "examples.npz",
        image=rng.random((n, 24, 24)).astype(np.float32),
        truth=truth,
        coarse=coarse,
        rendered=rendered,
        points=points,
        case_id=np.array([f"case{i:04d}" for i in range(n)]),
        slice=np.arange(n) + 40,
    )


def _full_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  backbone: unet\n  num_classes: 3\nlr: 0.0003\n")
    _write_metrics(run)
    log = CurveLog(run / "curves.csv")
    for step in range(20):
        log.log(step, loss=1.0 / (step + 1), loss_point=0.5 / (step + 1), lr=1e-3)
    log.log(19, val_dice=0.77)
    _write_examples(run)
    return run


def test_html_report_is_complete_and_self_contained(tmp_path):
    run = _full_run(tmp_path)
    out = write_report(run)
    assert out == run / "report.html"
    page = out.read_text()
    for text in (
        "aorta",
        "gallbladder",
        "0.8123",
        f"{123.45 / 2:.2f}",
        "0.9500",
        "1.25",
        "mean (foreground)",
        "one_empty",
        "both_empty",
        "image diagonal",
        "backbone: unet",
        "<details>",
        "case0001",
        "slice 40",
    ):
        assert text in page, text
    # coarse foreground Dice: mean over classes of (0.8123 + 0.9) / 2 and (0 + 1) / 2
    assert f"{((0.8123 + 0.9) / 2 + 0.5) / 2:.4f}" in page
    for header in ("HD95 (mm)", "ASD (mm)", "NSD@1 mm", "NSD@2 mm", "bIoU", "width 2.0 mm"):
        assert header in page, header
    assert f"{0.95 / 4:.4f}" in page  # rendered bIoU
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 1 + 2  # curves + two examples
    assert all(base64.b64decode(b).startswith(b"\x89PNG") for b in images)
    # nothing external: every src/href is a data URI, no report_files folder
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith("data:") for r in refs)
    assert "report_files" not in page and not (run / "report_files").exists()
    assert 'class="note"' not in page  # nothing was missing


def test_report_with_only_metrics_notes_the_rest(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _write_metrics(run)
    page = write_report(run).read_text()
    assert "aorta" in page and "0.8123" in page
    for name in ("config.yaml", "curves.csv", "examples.npz"):
        assert f"{name} not found" in page
    assert "data:image/png;base64" not in page


def test_report_of_metrics_in_voxels_labels_distances_in_voxels(tmp_path):
    _write_metrics(tmp_path, distance_unit="voxels")
    page = write_report(tmp_path, fmt="md").read_text()
    for text in ("HD95 (voxels)", "ASD (voxels)", "NSD@1 voxels", "image diagonal in voxels"):
        assert text in page, text
    assert "(mm)" not in page and "NSD@1 mm" not in page


def test_empty_and_broken_run_dirs_do_not_crash(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    page = write_report(run).read_text()
    assert "metrics.json not found" in page
    (run / "metrics.json").write_text("{not json")
    (run / "examples.npz").write_bytes(b"garbage")
    page = write_report(run).read_text()
    assert "could not render metrics.json" in page and "could not render examples.npz" in page
    with pytest.raises(ValueError, match="fmt"):
        write_report(run, fmt="pdf")
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "nope")


def test_markdown_report_writes_pngs_next_to_it(tmp_path):
    run = _full_run(tmp_path)
    out = write_report(run, fmt="md", max_examples=1)
    assert out == run / "report.md"
    text = out.read_text()
    assert "| aorta |" in text and "0.8123" in text and "**mean (foreground)**" in text
    assert "Showing 1 of 2 examples" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links == ["report_files/curves.png", "report_files/example_000.png"]
    for link in links:
        assert (run / link).read_bytes().startswith(b"\x89PNG")
    assert "data:image" not in text


def test_examples_limited_and_partial_arrays(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    np.savez(
        run / "examples.npz", image=np.zeros((5, 8, 8)), rendered=np.ones((5, 8, 8), dtype=np.int64)
    )
    page = write_report(run, max_examples=2).read_text()
    assert page.count("data:image/png;base64") == 2
    assert "Showing 2 of 5 examples" in page
    assert "lacks coarse, points, truth" in page


def test_overlay_colours_and_figure():
    colors = class_colors(4)
    assert colors[0, 3] == 0 and (colors[1:, 3] == 1).all()
    assert len({tuple(c) for c in colors[1:, :3]}) == 3  # distinct class colours
    assert len({tuple(c) for c in class_colors(40)[1:, :3]}) == 39
    labels = np.array([[0, 1], [2, 7]])
    rgba = label_rgba(labels, 3, alpha=0.4)
    assert rgba.shape == (2, 2, 4)
    np.testing.assert_allclose(rgba[..., 3], [[0, 0.4], [0.4, 0]])  # bg and out of range clear
    image = np.linspace(0, 1, 64).reshape(8, 8)
    fig = make_overlay_figure(
        image,
        truth=labels.repeat(4, 0).repeat(4, 1),
        points=np.eye(8, dtype=bool),
        class_names=["bg", "a", "b"],
    )
    assert len(fig.axes) == 3 and "n=8" in fig.axes[2].get_title()
    with pytest.raises(ValueError, match="shape"):
        make_overlay_figure(image, coarse=np.zeros((4, 4), dtype=int))


def test_gate_map_gets_its_own_panel_coloured_by_scale():
    image = np.linspace(0, 1, 64).reshape(8, 8)
    gate = np.zeros((8, 8), np.uint8)
    gate[2, :4], gate[5, :4] = 1, 3
    fig = make_overlay_figure(image, points=gate > 0, gate=gate)
    assert len(fig.axes) == 3 and "expert" in fig.axes[2].get_title()
    rgba = gate_rgba(gate)
    assert rgba[0, 0, 3] == 0 and rgba[2, 0, 3] > 0
    assert not np.allclose(rgba[2, 0, :3], rgba[5, 0, :3])


def test_held_out_sets_get_their_own_heading_scores_and_examples(tmp_path):
    run = _full_run(tmp_path)
    heldout = run / "eval_imagesTs"
    heldout.mkdir()
    results = {"rendered": {"t1": {1: _cm(0.6543, 0.5, 3.0, 1.0), 2: _cm(0.5, 0.4, 3.0, 1.0)}}}
    write_metrics(heldout, results, CLASSES, extra={"images": "/data/D/imagesTs",
                                                     "labels": "/data/D/labelsTs"})
    _write_examples(heldout, n=3)
    (run / "eval_val").mkdir()  # the validation subset's scores are not a held-out set
    _write_metrics(run / "eval_val")
    page = write_report(run).read_text()
    heading = page.index("<h2>Held-out set: imagesTs</h2>")
    assert page.index("<h2>Examples</h2>") < heading and page.count("Held-out set") == 1
    assert "0.6543" in page[heading:] and "/data/D/labelsTs" in page[heading:]
    assert len(re.findall(r"data:image/png;base64", page[heading:])) == 3
