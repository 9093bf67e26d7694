"""Summaries, metrics.json / metrics.csv layout and the printed table, in mm and in voxels."""

from __future__ import annotations

import csv
import json

import pytest

from morse.evaluation.tables import empty_mask_policy, format_table, summarise, write_metrics
from morse.metrics import ClassMetrics, MetricSettings

NAMES = ["background", "liver", "spleen"]


def _cm(dice, iou, hd95, asd, nsd1, nsd2, biou, policy="") -> ClassMetrics:
    keys = ("dice", "iou", "hd95", "asd", "nsd_1mm", "nsd_2mm", "biou")
    return ClassMetrics(dict(zip(keys, (dice, iou, hd95, asd, nsd1, nsd2, biou))), policy)


def _per_case() -> dict[str, dict[int, ClassMetrics]]:
    return {
        "case1": {
            1: _cm(0.8, 0.6, 2.0, 1.0, 0.7, 0.9, 0.5),
            2: _cm(1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, "both_empty"),
        },
        "case2": {
            1: _cm(0.6, 0.4, 4.0, 3.0, 0.5, 0.7, 0.3),
            2: _cm(0.0, 0.0, 50.0, 50.0, 0.0, 0.0, 0.0, "one_empty"),
        },
    }


def test_summarise_means_and_policy_counts():
    s = summarise(_per_case(), NAMES)
    assert s["n_cases"] == 2
    assert s["mean"]["liver"] == pytest.approx(
        {"dice": 0.7, "iou": 0.5, "hd95": 3.0, "asd": 2.0, "nsd_1mm": 0.6, "nsd_2mm": 0.8,
         "biou": 0.4}
    )
    assert s["mean"]["spleen"]["hd95"] == pytest.approx(25.0)
    assert s["mean"]["foreground"] == pytest.approx(
        {"dice": 0.6, "iou": 0.5, "hd95": 14.0, "asd": 13.5, "nsd_1mm": 0.55, "nsd_2mm": 0.65,
         "biou": 0.45}
    )
    assert list(s["mean"]) == ["liver", "spleen", "foreground"]
    assert s["empty_policy"] == {"both_empty": 1, "one_empty": 1}
    # foreground-only names give the same result; wrong lengths are refused
    assert summarise(_per_case(), ["liver", "spleen"]) == s
    with pytest.raises(ValueError, match="class_names"):
        summarise(_per_case(), ["liver"])


def _csv_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_write_metrics_json_and_csv_layout_in_mm(tmp_path):
    results = {"coarse": _per_case(), "rendered": _per_case()}
    json_path, csv_path = write_metrics(tmp_path / "out", results, NAMES)
    doc = json.loads(json_path.read_text())
    assert list(doc) == ["coarse", "rendered", "class_names", "distance_unit", "settings",
                         "policy"]
    assert doc["distance_unit"] == "mm" and doc["policy"] == empty_mask_policy("mm")
    assert doc["settings"] == {"nsd_tolerances": [1.0, 2.0], "biou_width": 2.0}
    assert doc["class_names"] == ["liver", "spleen"]
    block = doc["coarse"]
    assert set(block) == {"distance_unit", "per_case", "mean", "empty_policy", "n_cases"}
    assert block["distance_unit"] == "mm"
    assert block["per_case"]["case2"]["spleen"] == {
        "dice": 0.0, "iou": 0.0, "hd95": 50.0, "asd": 50.0, "nsd_1mm": 0.0, "nsd_2mm": 0.0,
        "biou": 0.0, "policy": "one_empty",
    }
    assert block["mean"]["foreground"]["dice"] == pytest.approx(0.6)
    assert block["empty_policy"] == {"both_empty": 1, "one_empty": 1}

    rows = _csv_rows(csv_path)
    assert list(rows[0]) == ["output", "case", "class", "dice", "iou", "hd95_mm", "asd_mm",
                             "nsd_1mm", "nsd_2mm", "biou", "policy"]
    assert len(rows) == 2 * (2 * 2 + 3)  # per output: case x class rows + 2 class means + fg
    liver1 = [r for r in rows
              if r["output"] == "rendered" and r["case"] == "case1" and r["class"] == "liver"]
    assert len(liver1) == 1 and float(liver1[0]["hd95_mm"]) == 2.0
    assert float(liver1[0]["biou"]) == 0.5
    fg = [r for r in rows if r["case"] == "mean" and r["class"] == "foreground"]
    assert [float(r["asd_mm"]) for r in fg] == [13.5, 13.5]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.csv", "metrics.json"]


def test_write_metrics_in_voxels_labels_json_and_csv(tmp_path):
    settings = MetricSettings(nsd_tolerances=(1.0, 2.0), biou_width=3.0)
    json_path, csv_path = write_metrics(
        tmp_path, {"coarse": _per_case()}, NAMES, distance_unit="voxels", settings=settings
    )
    doc = json.loads(json_path.read_text())
    assert doc["distance_unit"] == doc["coarse"]["distance_unit"] == "voxels"
    assert doc["settings"]["biou_width"] == 3.0
    assert "image diagonal in voxels" in doc["policy"]
    header = list(_csv_rows(csv_path)[0])
    assert "hd95_voxels" in header and "asd_voxels" in header and "hd95_mm" not in header
    with pytest.raises(ValueError, match="distance_unit"):
        write_metrics(tmp_path, {"coarse": _per_case()}, NAMES, distance_unit="cm")
    with pytest.raises(ValueError, match="reserved"):
        write_metrics(tmp_path, {"distance_unit": _per_case()}, NAMES)


def _table_summaries() -> dict[str, dict]:
    better = {k: _cm(0.9, 0.8, 1.5, 0.5, 0.95, 1.0, 0.8) for k in (1, 2)}
    return {
        "coarse": summarise(_per_case(), NAMES),
        "rendered": summarise({"case1": better, "case2": better}, NAMES),
    }


def test_format_table_side_by_side():
    lines = format_table(_table_summaries(), NAMES).splitlines()
    assert lines[0].split() == ["coarse", "rendered"]
    assert lines[0].index("rendered") > lines[1].index("bIoU")  # each output over its columns
    metrics = ["Dice", "HD95", "(mm)", "NSD@1", "mm", "NSD@2", "mm", "bIoU"]
    assert lines[1].split() == ["class", *metrics, *metrics]
    body = {ln.split()[0]: ln.split()[1:] for ln in lines[3:] if not ln.startswith("-")}
    assert list(body) == ["liver", "spleen", "foreground"]
    assert body["liver"] == ["0.7000", "3.00", "0.6000", "0.8000", "0.4000",
                             "0.9000", "1.50", "0.9500", "1.0000", "0.8000"]
    assert body["foreground"][:2] == ["0.6000", "14.00"]
    assert "background" not in "\n".join(lines)


def test_format_table_in_voxels_says_so():
    text = format_table(_table_summaries(), NAMES, distance_unit="voxels")
    assert "HD95 (voxels)" in text and "NSD@1 voxels" in text and "mm" not in text
