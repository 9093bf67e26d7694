"""Metrics against hand-computed values, the empty-mask policy, and the metrics.json layout."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from morse.evaluation import metrics as M
from morse.evaluation.metrics import (
    ClassMetrics,
    case_metrics,
    format_table,
    summarise,
    write_metrics,
)


def _squares() -> tuple[np.ndarray, np.ndarray]:
    """Two 4x4 squares in an 8x8 image, the prediction shifted one column right."""
    truth = np.zeros((8, 8), dtype=np.int64)
    truth[2:6, 2:6] = 1
    pred = np.zeros((8, 8), dtype=np.int64)
    pred[2:6, 3:7] = 1
    return pred, truth


def test_squares_offset_by_one_pixel_isotropic():
    pred, truth = _squares()
    m = case_metrics(pred, truth, num_classes=2, spacing=(1.0, 1.0))[1]
    # overlap 4x3 = 12 pixels of 16 each: Dice = 24/32, IoU = 12/20
    assert m.dice == pytest.approx(0.75)
    assert m.iou == pytest.approx(0.6)
    # each 12-pixel boundary ring: 6 pixels lie on the other ring (0), 6 are 1 pixel away (1)
    assert m.hd95 == pytest.approx(1.0)
    assert m.asd == pytest.approx(0.5)
    assert m.policy == ""


def test_squares_offset_anisotropic_columns_2mm():
    pred, truth = _squares()
    m = case_metrics(pred, truth, num_classes=2, spacing=(1.0, 2.0))[1]
    assert m.dice == pytest.approx(0.75)  # counting does not care about spacing
    # per ring: 6 pixels at 0, 4 pixels one column (2 mm) away, 2 pixels one row (1 mm) away
    # 95th percentile of sorted [0]*6 + [1]*2 + [2]*4 -> 2; mean (2*1 + 4*2) / 12
    assert m.hd95 == pytest.approx(2.0)
    assert m.asd == pytest.approx(10.0 / 12.0)


def test_slab_shifted_by_one_3mm_slice():
    # (D, H, W) with 3 mm slices and 0.8 mm pixels; two-slice-thick slabs, shifted one slice
    truth = np.zeros((6, 5, 5), dtype=np.int64)
    truth[2:4] = 1
    pred = np.zeros_like(truth)
    pred[1:3] = 1
    m = case_metrics(pred, truth, num_classes=2, spacing=(3.0, 0.8, 0.8))[1]
    assert m.dice == pytest.approx(0.5)  # one of two slices shared
    assert m.iou == pytest.approx(1.0 / 3.0)
    # every voxel is surface; half the voxels of each slab lie in the other (0), half 3 mm off
    assert m.hd95 == pytest.approx(3.0)
    assert m.asd == pytest.approx(1.5)


def test_both_empty_policy():
    truth = np.zeros((5, 6, 7), dtype=np.int64)
    truth[1:3, 1:3, 1:3] = 1
    out = case_metrics(truth, truth, num_classes=3, spacing=(2.0, 1.0, 1.0))
    assert out[1] == ClassMetrics(1.0, 1.0, 0.0, 0.0, "")
    assert out[2] == ClassMetrics(1.0, 1.0, 0.0, 0.0, "both_empty")


@pytest.mark.parametrize("missing", ["pred", "truth"])
def test_one_empty_policy_scores_the_image_diagonal(missing):
    present = np.zeros((10, 10, 4), dtype=np.int64)
    present[3:6, 3:6, 1:3] = 1
    empty = np.zeros_like(present)
    pred, truth = (empty, present) if missing == "pred" else (present, empty)
    m = case_metrics(pred, truth, num_classes=2, spacing=(0.5, 0.5, 3.0))[1]
    diag = math.sqrt(5.0**2 + 5.0**2 + 12.0**2)  # (10*0.5, 10*0.5, 4*3) mm
    assert diag == pytest.approx(13.92838827718412)
    assert m == ClassMetrics(0.0, 0.0, pytest.approx(diag), pytest.approx(diag), "one_empty")
    assert m.hd95 > 0  # never the flattering HD95 = 0 for a missed class


def test_multiclass_hand_counted():
    truth = np.zeros((6, 6), dtype=np.int64)
    truth[0:2, 0:2] = 1  # 4 px
    truth[3:5, 0:4] = 2  # 8 px
    truth[5, 5] = 3  # 1 px, missed by the prediction
    pred = np.zeros_like(truth)
    pred[0:2, 0:2] = 1  # exact
    pred[3:5, 0:2] = 2  # 4 px, all inside truth
    out = case_metrics(pred, truth, num_classes=5, spacing=(1.0, 1.0))
    assert sorted(out) == [1, 2, 3, 4]
    assert (out[1].dice, out[1].iou, out[1].hd95, out[1].asd) == (1.0, 1.0, 0.0, 0.0)
    assert out[2].dice == pytest.approx(2 * 4 / 12)
    assert out[2].iou == pytest.approx(4 / 8)
    # truth 2x4 bar vs its left half: the 2 right-most truth columns are 1 and 2 px away
    assert out[2].hd95 == pytest.approx(2.0)
    # pooled: 4 pred px at 0, truth px at 0, 0, 0, 0, 1, 1, 2, 2 -> 6 mm over 12 distances
    assert out[2].asd == pytest.approx((2 * 1 + 2 * 2) / 12)
    assert out[3].policy == "one_empty" and out[3].hd95 == pytest.approx(math.sqrt(72))
    assert out[4].policy == "both_empty"


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy")
def test_agrees_with_monai_compute_functions():
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:12, :20, :20]
    truth = ((zz - 6) ** 2 / 16 + (yy - 10) ** 2 / 30 + (xx - 9) ** 2 / 40 < 1).astype(np.int64)
    pred = ((zz - 5) ** 2 / 12 + (yy - 11) ** 2 / 36 + (xx - 10) ** 2 / 30 < 1).astype(np.int64)
    pred[rng.random(pred.shape) < 0.02] = 1
    spacing = (2.5, 0.7, 0.9)
    m = case_metrics(pred, truth, num_classes=2, spacing=spacing)[1]

    def onehot(a):
        return torch.as_tensor(np.stack([a == 0, a == 1])[None].astype(np.float32))

    hd = compute_hausdorff_distance(onehot(pred), onehot(truth), percentile=95, spacing=spacing)
    asd = compute_average_surface_distance(
        onehot(pred), onehot(truth), symmetric=True, spacing=spacing
    )
    assert m.hd95 == pytest.approx(float(hd[0, 0]), rel=1e-5)
    assert m.asd == pytest.approx(float(asd[0, 0]), rel=1e-5)


def test_validation_errors():
    a = np.zeros((4, 5), dtype=np.int64)
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        case_metrics(a, np.zeros((5, 4), dtype=np.int64), 2, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(a, a, 2, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(a, a, 2, (1.0, 0.0))
    with pytest.raises(ValueError, match="labels"):
        case_metrics(a + 2, a, 2, (1.0, 1.0))
    with pytest.raises(ValueError, match="integer"):
        case_metrics(a.astype(float), a, 2, (1.0, 1.0))


def _per_case() -> dict[str, dict[int, ClassMetrics]]:
    return {
        "case1": {
            1: ClassMetrics(0.8, 0.6, 2.0, 1.0),
            2: ClassMetrics(1.0, 1.0, 0.0, 0.0, "both_empty"),
        },
        "case2": {
            1: ClassMetrics(0.6, 0.4, 4.0, 3.0),
            2: ClassMetrics(0.0, 0.0, 50.0, 50.0, "one_empty"),
        },
    }


def test_summarise_means_and_policy_counts():
    s = summarise(_per_case(), ["background", "liver", "spleen"])
    assert s["n_cases"] == 2
    assert s["mean"]["liver"] == pytest.approx({"dice": 0.7, "iou": 0.5, "hd95": 3.0, "asd": 2.0})
    spleen = {"dice": 0.5, "iou": 0.5, "hd95": 25.0, "asd": 25.0}
    assert s["mean"]["spleen"] == pytest.approx(spleen)
    assert s["mean"]["foreground"] == pytest.approx(
        {"dice": 0.6, "iou": 0.5, "hd95": 14.0, "asd": 13.5}
    )
    assert list(s["mean"]) == ["liver", "spleen", "foreground"]
    assert s["empty_policy"] == {"both_empty": 1, "one_empty": 1}
    # foreground-only names give the same result; wrong lengths are refused
    assert summarise(_per_case(), ["liver", "spleen"]) == s
    with pytest.raises(ValueError, match="class_names"):
        summarise(_per_case(), ["liver"])


def test_write_metrics_json_and_csv_layout(tmp_path):
    results = {"coarse": _per_case(), "rendered": _per_case()}
    json_path, csv_path = write_metrics(tmp_path / "out", results, ["bg", "liver", "spleen"])
    doc = json.loads(json_path.read_text())
    assert list(doc) == ["coarse", "rendered", "class_names", "policy"]
    assert doc["policy"] == M.EMPTY_MASK_POLICY and "one_empty" in doc["policy"]
    assert doc["class_names"] == ["liver", "spleen"]
    block = doc["coarse"]
    assert set(block) == {"per_case", "mean", "empty_policy", "n_cases"}
    assert block["per_case"]["case2"]["spleen"] == {
        "dice": 0.0,
        "iou": 0.0,
        "hd95": 50.0,
        "asd": 50.0,
        "policy": "one_empty",
    }
    assert block["mean"]["foreground"]["dice"] == pytest.approx(0.6)
    assert block["empty_policy"] == {"both_empty": 1, "one_empty": 1}

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["output", "case", "class", "dice", "iou", "hd95", "asd", "policy"]
    assert len(rows) == 2 * (2 * 2 + 3)  # per output: case x class rows + 2 class means + fg
    liver1 = [
        r
        for r in rows
        if r["output"] == "rendered" and r["case"] == "case1" and r["class"] == "liver"
    ]
    assert len(liver1) == 1 and float(liver1[0]["hd95"]) == 2.0
    fg = [r for r in rows if r["case"] == "mean" and r["class"] == "foreground"]
    assert [float(r["asd"]) for r in fg] == [13.5, 13.5]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.csv", "metrics.json"]


def test_format_table_side_by_side():
    coarse = summarise(_per_case(), ["bg", "liver", "spleen"])
    better = {k: ClassMetrics(0.9, 0.8, 1.5, 0.5) for k in (1, 2)}
    rendered = summarise({"case1": better, "case2": better}, ["bg", "liver", "spleen"])
    text = format_table({"coarse": coarse, "rendered": rendered}, ["bg", "liver", "spleen"])
    lines = text.splitlines()
    assert lines[0].split() == [
        "class",
        "coarse",
        "Dice",
        "coarse",
        "HD95",
        "mm",
        "rendered",
        "Dice",
        "rendered",
        "HD95",
        "mm",
    ]
    body = {ln.split()[0]: ln.split()[1:] for ln in lines[2:] if not ln.startswith("-")}
    assert list(body) == ["liver", "spleen", "foreground"]
    assert body["liver"] == ["0.7000", "3.00", "0.9000", "1.50"]
    assert body["foreground"] == ["0.6000", "14.00", "0.9000", "1.50"]
    assert "bg" not in text
