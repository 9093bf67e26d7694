"""Metrics against hand-computed values, the empty-mask policy, singleton axes and MONAI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from morse.metrics import (
    MetricSettings,
    boundary_iou,
    case_dice,
    case_metrics,
    squeeze_singleton_axes,
)

ANISOTROPIC = (0.5, 1.0, 2.5)


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
    assert m["dice"] == pytest.approx(0.75)
    assert m["iou"] == pytest.approx(0.6)
    # each 12-pixel boundary ring: 6 pixels lie on the other ring (0), 6 are 1 pixel away (1)
    assert m["hd95"] == pytest.approx(1.0)
    assert m["asd"] == pytest.approx(0.5)
    assert m["nsd_1mm"] == m["nsd_2mm"] == 1.0  # every distance <= 1 mm
    # a 2 mm band covers a whole 4x4 square (inner 2x2 lies 1 mm from the ring): bIoU = IoU
    assert m["biou"] == pytest.approx(0.6)
    assert m.policy == ""


def test_squares_offset_anisotropic_columns_2mm():
    pred, truth = _squares()
    m = case_metrics(pred, truth, num_classes=2, spacing=(1.0, 2.0))[1]
    assert m["dice"] == pytest.approx(0.75)  # counting does not care about spacing
    # per ring: 6 pixels at 0, 4 pixels one column (2 mm) away, 2 pixels one row (1 mm) away
    # 95th percentile of sorted [0]*6 + [1]*2 + [2]*4 -> 2; mean (2*1 + 4*2) / 12
    assert m["hd95"] == pytest.approx(2.0)
    assert m["asd"] == pytest.approx(10.0 / 12.0)
    assert m["nsd_1mm"] == pytest.approx(8 / 12)  # the 2 mm distances miss a 1 mm tolerance
    assert m["nsd_2mm"] == pytest.approx(1.0)


def test_boundary_iou_counts_band_pixels_by_hand():
    pred, truth = (a.astype(bool) for a in _squares())
    # width 0: the 12-pixel rings; they share rows 2 and 5 at columns 3..5 -> 6 / (24 - 6)
    assert boundary_iou(pred, truth, (1.0, 1.0), 0.0) == pytest.approx(1 / 3)
    # width 1 mm: the inner 2x2 joins the band (1 mm from the ring): the whole squares, 12 / 20
    assert boundary_iou(pred, truth, (1.0, 1.0), 1.0) == pytest.approx(0.6)
    # 3 mm columns and 3 mm rows: the inner 2x2 lies 3 mm off, outside a 2 mm band again
    assert boundary_iou(pred, truth, (3.0, 3.0), 2.0) == pytest.approx(1 / 3)


def test_slab_shifted_by_one_3mm_slice():
    # (D, H, W) with 3 mm slices and 0.8 mm pixels; two-slice-thick slabs, shifted one slice
    truth = np.zeros((6, 5, 5), dtype=np.int64)
    truth[2:4] = 1
    pred = np.zeros_like(truth)
    pred[1:3] = 1
    m = case_metrics(pred, truth, num_classes=2, spacing=(3.0, 0.8, 0.8))[1]
    assert m["dice"] == pytest.approx(0.5)  # one of two slices shared
    assert m["iou"] == pytest.approx(1.0 / 3.0)
    # every voxel is surface; half the voxels of each slab lie in the other (0), half 3 mm off
    assert m["hd95"] == pytest.approx(3.0)
    assert m["asd"] == pytest.approx(1.5)
    assert m["nsd_1mm"] == m["nsd_2mm"] == pytest.approx(0.5)


@pytest.mark.parametrize(("axis", "off_share"), [(0, 1 / 4), (1, 1 / 4), (2, 1 / 2)])
def test_box_shift_along_one_axis_measures_that_axis_spacing(axis, off_share):
    # a 4x4x2 box (every voxel surface) shifted one voxel along `axis`, spacing (0.5, 1, 2.5):
    # a share `off_share` of each box lies outside the other, exactly spacing[axis] away
    truth = np.zeros((6, 6, 6), dtype=np.int64)
    truth[1:5, 1:5, 1:3] = 1
    pred = np.roll(truth, 1, axis=axis)
    step = ANISOTROPIC[axis]
    m = case_metrics(pred, truth, num_classes=2, spacing=ANISOTROPIC)[1]
    assert m["dice"] == pytest.approx(1 - off_share)
    assert m["hd95"] == pytest.approx(step)  # off_share >= 1/4 > 5 %
    assert m["asd"] == pytest.approx(off_share * step)
    for tol in (1.0, 2.0):
        assert m[f"nsd_{tol:g}mm"] == pytest.approx(1.0 if step <= tol else 1 - off_share)
    assert m["biou"] == pytest.approx(m["iou"])  # all voxels surface: bands = boxes


def test_tiny_objects_single_voxels_at_the_image_corner():
    truth = np.zeros((5, 5, 5), dtype=np.int64)
    truth[0, 0, 0] = 1
    pred = np.zeros_like(truth)
    pred[0, 0, 2] = 1  # two voxels along the last axis: 2 x 2.5 mm
    m = case_metrics(pred, truth, num_classes=2, spacing=ANISOTROPIC)[1]
    assert (m["dice"], m["iou"], m["biou"]) == (0.0, 0.0, 0.0)
    assert m["hd95"] == pytest.approx(5.0) and m["asd"] == pytest.approx(5.0)
    assert m["nsd_1mm"] == m["nsd_2mm"] == 0.0
    same = case_metrics(truth, truth, num_classes=2, spacing=ANISOTROPIC)[1]
    assert same.values == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "asd": 0.0,
                           "nsd_1mm": 1.0, "nsd_2mm": 1.0, "biou": 1.0}


def _disc(radius: int, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - 32) ** 2 + (xx - 32) ** 2 <= radius**2).astype(np.int64)


def _ring_distances_2d(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """HD95 and ASD from first principles: boundary pixels (a face neighbour outside) and all
    pairwise distances, 1 mm pixels."""

    def ring(mask: np.ndarray) -> np.ndarray:
        m = np.pad(mask.astype(bool), 1)
        inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        return np.argwhere(m[1:-1, 1:-1] & ~inner).astype(float)

    ra, rb = ring(a), ring(b)
    d = np.sqrt(((ra[:, None] - rb[None]) ** 2).sum(-1))
    ab, ba = d.min(1), d.min(0)
    return max(np.percentile(ab, 95), np.percentile(ba, 95)), np.concatenate([ab, ba]).mean()


@pytest.mark.parametrize("axis", [0, 2])
def test_2d_discs_stored_with_a_singleton_axis_measure_2d_surfaces(axis):
    # concentric discs of radius 16 and 10 px: continuous circles are 6 mm apart everywhere;
    # digital boundary pixels lie within one pixel inside their circle, so every distance is
    # 6 +- 1 mm; the exact value is the 2D boundary computed from first principles
    pred, truth = _disc(16), _disc(10)
    hd95, asd = _ring_distances_2d(pred, truth)
    assert 5.0 <= asd <= hd95 <= 7.0
    flat = case_metrics(pred, truth, num_classes=2, spacing=(1.0, 1.0))[1]
    stored = case_metrics(
        np.expand_dims(pred, axis), np.expand_dims(truth, axis), num_classes=2,
        spacing=(1.0, 1.0, 1.0),
    )[1]
    # in 3D every foreground pixel would be surface: HD95 5.83, ASD 1.50 instead
    assert stored["hd95"] == pytest.approx(hd95, rel=1e-5)
    assert stored["asd"] == pytest.approx(asd, rel=1e-5)
    assert stored.values == pytest.approx(flat.values)


def test_singleton_axis_leaves_the_image_diagonal_2d():
    empty = np.zeros((30, 40, 1), dtype=np.int64)
    present = empty.copy()
    present[5:9, 5:9] = 1
    m = case_metrics(empty, present, num_classes=2, spacing=(1.0, 1.0, 5.0))[1]
    assert m["hd95"] == pytest.approx(50.0)  # the 30 x 40 mm image, not sqrt(50^2 + 5^2)


def test_squeeze_keeps_two_axes_and_their_spacing():
    a = np.zeros((1, 7, 1))
    p, _, spacing = squeeze_singleton_axes(a, a, (0.5, 1.0, 2.5))
    assert p.shape == (7, 1) and spacing == (1.0, 2.5)


def test_both_empty_policy():
    truth = np.zeros((5, 6, 7), dtype=np.int64)
    truth[1:3, 1:3, 1:3] = 1
    out = case_metrics(truth, truth, num_classes=3, spacing=ANISOTROPIC)
    perfect = {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "asd": 0.0,
               "nsd_1mm": 1.0, "nsd_2mm": 1.0, "biou": 1.0}
    assert out[1].values == perfect and out[1].policy == ""
    assert out[2].values == perfect and out[2].policy == "both_empty"


@pytest.mark.parametrize("missing", ["pred", "truth"])
def test_one_empty_policy_scores_the_image_diagonal(missing):
    present = np.zeros((10, 10, 4), dtype=np.int64)
    present[3:6, 3:6, 1:3] = 1
    empty = np.zeros_like(present)
    pred, truth = (empty, present) if missing == "pred" else (present, empty)
    m = case_metrics(pred, truth, num_classes=2, spacing=(0.5, 0.5, 3.0))[1]
    diag = math.sqrt(5.0**2 + 5.0**2 + 12.0**2)  # (10*0.5, 10*0.5, 4*3) mm
    assert m.policy == "one_empty"
    assert m.values == {"dice": 0.0, "iou": 0.0, "hd95": pytest.approx(diag),
                        "asd": pytest.approx(diag), "nsd_1mm": 0.0, "nsd_2mm": 0.0, "biou": 0.0}
    assert m["hd95"] > 0  # never the flattering HD95 = 0 for a missed class


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
    assert [out[1][k] for k in ("dice", "iou", "hd95", "asd")] == [1.0, 1.0, 0.0, 0.0]
    assert out[2]["dice"] == pytest.approx(2 * 4 / 12)
    assert out[2]["iou"] == pytest.approx(4 / 8)
    # truth 2x4 bar vs its left half: the 2 right-most truth columns are 1 and 2 px away
    assert out[2]["hd95"] == pytest.approx(2.0)
    # pooled: 4 pred px at 0, truth px at 0, 0, 0, 0, 1, 1, 2, 2 -> 6 mm over 12 distances
    assert out[2]["asd"] == pytest.approx((2 * 1 + 2 * 2) / 12)
    assert out[2]["nsd_1mm"] == pytest.approx(10 / 12)
    assert out[3].policy == "one_empty" and out[3]["hd95"] == pytest.approx(math.sqrt(72))
    assert out[4].policy == "both_empty"


def test_nsd_names_and_values_follow_the_configured_tolerances():
    pred, truth = _squares()
    settings = MetricSettings(nsd_tolerances=(0.5, 3.0), biou_width=0.0)
    m = case_metrics(pred, truth, num_classes=2, spacing=(1.0, 2.0), settings=settings)[1]
    assert list(m.values) == ["dice", "iou", "hd95", "asd", "nsd_0.5mm", "nsd_3mm", "biou"]
    assert m["nsd_0.5mm"] == pytest.approx(6 / 12) and m["nsd_3mm"] == 1.0
    assert m["biou"] == pytest.approx(1 / 3)  # width 0: the rings
    with pytest.raises(ValueError, match="eval.nsd_tolerances_mm"):
        MetricSettings(nsd_tolerances=(-1.0,))
    with pytest.raises(ValueError, match="eval.biou_width_mm"):
        MetricSettings(biou_width=float("nan"))


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy")
def test_cropping_to_the_objects_changes_no_monai_value():
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:12, :20, :20]
    truth = ((zz - 6) ** 2 / 16 + (yy - 10) ** 2 / 30 + (xx - 9) ** 2 / 40 < 1).astype(np.int64)
    pred = ((zz - 5) ** 2 / 12 + (yy - 11) ** 2 / 36 + (xx - 10) ** 2 / 30 < 1).astype(np.int64)
    pred[rng.random(pred.shape) < 0.02] = 1  # specks up to the image border
    spacing = (2.5, 0.7, 0.9)
    m = case_metrics(pred, truth, num_classes=2, spacing=spacing)[1]

    def onehot(a):
        return torch.as_tensor(np.stack([a == 0, a == 1])[None].astype(np.float32))

    p, t = onehot(pred), onehot(truth)
    hd = compute_hausdorff_distance(p, t, percentile=95, spacing=spacing)
    asd = compute_average_surface_distance(p, t, symmetric=True, spacing=spacing)
    nsd = compute_surface_dice(p, t, [2.0], spacing=spacing)
    assert m["hd95"] == pytest.approx(float(hd[0, 0]), rel=1e-5)
    assert m["asd"] == pytest.approx(float(asd[0, 0]), rel=1e-5)
    assert m["nsd_2mm"] == pytest.approx(float(nsd[0, 0]), rel=1e-5)


def test_case_dice_is_case_metrics_dice_with_the_same_policy():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, (6, 7, 5))
    pred = np.where(rng.random(truth.shape) < 0.2, 1, truth)
    full = case_metrics(pred, truth, num_classes=5, spacing=(1.0, 1.0, 1.0))
    pred[pred == 2] = 3  # class 2 missed, class 3 hallucinated, class 4 absent from both
    dice = case_dice(pred, truth, num_classes=5)
    assert dice[1] == pytest.approx(full[1]["dice"])
    assert (dice[2], dice[3], dice[4]) == (0.0, 0.0, 1.0)


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
    with pytest.raises(ValueError, match="labels"):
        case_dice(a + 2, a, 2)
