import pytest

from detect.evaluation.operating_point import operating_points
from tests.evaluation.conftest import make_case
from tests.evaluation.test_coco_eval import reference


def _gt(extra=()):
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10], "area": 100, "iscrowd": 0},
            *extra]
    return {"images": [{"id": 1, "width": 100, "height": 100}],
            "categories": [{"id": 1, "name": "car"}], "annotations": anns}


def det(score, box):
    return {"image_id": 1, "category_id": 1, "score": score, "bbox": box}


DETS = [det(0.9, [0, 0, 10, 10]),     # TP (object 1)
        det(0.8, [0, 0, 10, 10.5]),   # duplicate of object 1 -> FP
        det(0.7, [51, 50, 10, 10]),   # TP (object 2), IoU 0.82
        det(0.6, [80, 80, 5, 5])]     # FP


def test_golden_best_f1():
    # thresholds: .9 -> P 1, R .5, F1 .667; .8 -> P .5, R .5, F1 .5;
    #             .7 -> P 2/3, R 1, F1 .8;  .6 -> P .5, R 1, F1 .667  => best .7
    p = operating_points(_gt(), DETS, [1])["per_class"][1]
    assert p["score_threshold"] == 0.7
    assert p["precision"] == pytest.approx(2 / 3) and p["recall"] == 1.0
    assert p["f1"] == pytest.approx(0.8)
    assert (p["predicted_count"], p["true_count"], p["count_error"]) == (3, 2, 1)


def test_fixed_threshold():
    p = operating_points(_gt(), DETS, [1], score_threshold=0.75)["overall"]
    assert (p["precision"], p["recall"], p["predicted_count"]) == (0.5, 0.5, 2)


def test_detection_on_crowd_region_is_ignored_not_false_positive():
    crowd = {"id": 3, "image_id": 1, "category_id": 1, "bbox": [20, 20, 20, 20], "area": 400, "iscrowd": 1}
    p = operating_points(_gt([crowd]), [*DETS, det(0.95, [22, 22, 10, 10])], [1])["per_class"][1]
    assert p["score_threshold"] == 0.7 and p["f1"] == pytest.approx(0.8) and p["true_count"] == 2


def test_no_detections():
    p = operating_points(_gt(), [], [1])["overall"]
    assert p["score_threshold"] is None and p["f1"] == 0.0 and p["count_error"] == -2


@pytest.mark.parametrize("seed", [0, 2])
def test_recall_at_lowest_threshold_matches_pycocotools(seed):
    gt, res = make_case(seed)
    ev, _ = reference(gt, res)
    cats = ev.params.catIds
    points = operating_points(gt, res, cats, score_threshold=0.0)
    for k, c in enumerate(cats):
        want = ev.eval["recall"][0, k, 0, -1]  # IoU 0.5, area all, maxDets 100
        got = points["per_class"][c]["recall"] if points["per_class"][c]["true_count"] else -1
        assert got == pytest.approx(max(want, -1), abs=1e-12)


def test_malformed_results_are_refused_by_name():
    with pytest.raises(ValueError, match="category ids not in the ground truth: \\[9\\]"):
        operating_points(_gt(), [*DETS, {**det(0.5, [0, 0, 1, 1]), "category_id": 9}], [1])


def test_detections_without_any_ground_truth_are_false_positives():
    gt = {**_gt(), "annotations": []}
    p = operating_points(gt, DETS, [1])["overall"]
    assert p["true_positives"] == 0 and p["true_count"] == 0 and p["predicted_count"] >= 1


def test_match_iou_and_per_image_rows():
    # a second image: one object, one detection shifted to IoU 6*10 / (2*100 - 60) = 0.4286
    gt = _gt()
    gt["images"].append({"id": 2, "width": 100, "height": 100, "file_name": "b.png"})
    gt["images"][0]["file_name"] = "a.png"
    gt["annotations"].append({"id": 9, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100,
                              "iscrowd": 0})
    loose = {"image_id": 2, "category_id": 1, "score": 0.95, "bbox": [4, 0, 10, 10]}
    strict = operating_points(gt, [*DETS, loose], [1])  # IoU 0.5: the shifted box misses
    deepforest = operating_points(gt, [*DETS, loose], [1], iou=0.4)  # IoU 0.4: it finds its object
    assert strict["iou"] == 0.5 and deepforest["iou"] == 0.4
    # at 0.4 the best F1 keeps .95, .9, .8, .7 -> TP 3 of 3 objects, 4 kept: P .75, R 1
    d = deepforest["overall"]
    assert d["score_threshold"] == 0.7 and d["recall"] == 1.0 and d["precision"] == pytest.approx(0.75)
    assert strict["overall"]["recall"] < 1.0
    rows = {r["file_name"]: r for r in deepforest["per_image"]}
    assert (rows["a.png"]["predicted_count"], rows["a.png"]["true_count"], rows["a.png"]["true_positives"]) == (3, 2, 2)
    assert (rows["b.png"]["predicted_count"], rows["b.png"]["true_count"], rows["b.png"]["count_error"]) == (1, 1, 0)
    assert rows["b.png"]["f1"] == 1.0 and rows["a.png"]["precision"] == pytest.approx(2 / 3)
