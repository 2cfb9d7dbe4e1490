"""Calibration: per-class best-F1 thresholds by class name, pooled fallback, rounding down."""

from detect.evaluation.calibration import class_thresholds, provenance


def row(t, true_count=5):
    return {"score_threshold": t, "true_count": true_count}


def test_thresholds_by_name_with_the_pooled_one_for_classes_without_evidence():
    gt = {"categories": [{"id": 7, "name": "car"}, {"id": 3, "name": "tree"}, {"id": 9, "name": "boat"}],
          "images": [{"id": 1}, {"id": 2}], "annotations": [{"iscrowd": 0}] * 4 + [{"iscrowd": 1}]}
    points = {"overall": row(0.41), "per_class": {7: row(0.356789), 3: row(None, 0), 9: row(0.8, 0)}}
    got, notes = class_thresholds(points, gt, ("tree", "car", "boat", "pool"), fallback=0.05)
    # car rounded down (the detection that set it stays kept); tree / boat: no evidence -> pooled;
    # pool: not in the ground truth -> pooled
    assert got == [0.41, 0.3567, 0.41, 0.41]
    assert [n.split(":")[0] for n in notes] == ["tree", "boat", "pool"]
    assert "not in the labelled data" in notes[2]
    got, _ = class_thresholds({"overall": row(None), "per_class": {}}, gt, ("car",), fallback=0.05)
    assert got == [0.05]
    assert provenance("/x/val.json", gt) == "val.json (2 images, 4 objects), best F1 per class at IoU 0.5"
