"""The ``detect`` evaluation backend against pycocotools itself: whole arrays, per detection."""

import numpy as np
import pytest

from detect.evaluation import arrays as ev
from detect.evaluation.coco_eval import _checked_results, _run_arrays, parse_area_ranges
from detect.evaluation.operating_point import CROWD, match_image
from tests.evaluation.conftest import make_case
from tests.evaluation.test_coco_eval import reference


def awkward_case(seed: int):
    """make_case plus what breaks careless re-implementations: scores tied across images and
    within one, an annotation with id 0, zero-width boxes, an area field unlike w*h, a
    detection twice, annotations of an image / category the ground truth does not list."""
    gt, res = make_case(seed, images=15)
    rng = np.random.default_rng(seed)
    for r in res:
        r["score"] = float(rng.choice([0.25, 0.5, 0.75]))  # many exact ties
    gt["annotations"][0]["id"] = 0  # pycocotools reads a match to id 0 as "unmatched"
    first = gt["annotations"][0]
    res.append({"image_id": first["image_id"], "category_id": first["category_id"],
                "bbox": list(first["bbox"]), "score": 0.9})
    gt["annotations"][1]["bbox"][2] = 0.0  # degenerate object
    gt["annotations"][2]["area"] = 5000.0  # segmentation area: buckets follow it, not w*h
    res[3]["bbox"][3] = 0.0  # degenerate detection
    res.append(dict(res[5], bbox=list(res[5]["bbox"])))  # the same detection twice
    gt["annotations"].append({"id": 10_000, "image_id": 999, "category_id": 1,
                              "bbox": [0, 0, 9, 9], "area": 81.0, "iscrowd": 0})
    gt["annotations"].append({"id": 10_001, "image_id": 1, "category_id": 99,
                              "bbox": [0, 0, 9, 9], "area": 81.0, "iscrowd": 0})
    return gt, res


CASES = [("plain", s) for s in range(4)] + [("awkward", s) for s in range(4)]


@pytest.mark.parametrize("kind, seed", CASES)
@pytest.mark.parametrize("max_dets", [(1, 10, 100), (2, 5, 9), (100, 300, 1000)])
def test_precision_and_recall_arrays_are_pycocotools_bit_for_bit(kind, seed, max_dets):
    gt, res = (make_case if kind == "plain" else awkward_case)(seed)
    ranges = parse_area_ranges("tiny:0:16,mid:16:40,big:40:inf")
    want, _ = reference(gt, res, ranges, max_dets=max_dets)
    _, cols = _checked_results(res, gt)
    precision, recall, params = _run_arrays(gt, cols, ranges, max_dets)
    assert precision.shape == want.eval["precision"].shape
    assert np.array_equal(precision, want.eval["precision"])
    assert np.array_equal(recall, want.eval["recall"])
    assert np.array_equal(params.iouThrs, want.params.iouThrs)
    assert np.array_equal(params.recThrs, want.params.recThrs)
    assert params.areaRngLbl == want.params.areaRngLbl
    assert (precision > 0).any() and (precision == -1).any()  # informative and with n/a cells


@pytest.mark.parametrize("seed", [0, 1])
def test_every_detection_has_pycocotools_outcome(seed):
    """state[a, t, d] equals what pycocotools' evalImgs say of detection d (id = row + 1)."""
    gt, res = awkward_case(seed)
    want, _ = reference(gt, res)
    _, cols = _checked_results(res, gt)
    ground = ev.ground_arrays(gt)
    dets = ev.detection_arrays(cols.image_id, cols.category_id, cols.boxes, cols.score, ground, 100)
    state, _ = ev.match(ground, dets)
    row_of_id = {int(i) + 1: j for j, i in enumerate(dets.index)}
    checked = 0
    n_areas, n_images = len(want.params.areaRng), len(want.params.imgIds)
    for e_index, e in enumerate(want.evalImgs):
        if e is None:
            continue
        a = (e_index // n_images) % n_areas
        for col, dt_id in enumerate(e["dtIds"]):
            m, ignored = e["dtMatches"][:, col], e["dtIgnore"][:, col].astype(bool)
            expected = np.where(ignored, ev.IGNORED,
                                np.where(m != 0, ev.TRUE_POSITIVE, ev.FALSE_POSITIVE))
            assert np.array_equal(state[a, :, row_of_id[dt_id]], expected), (dt_id, a)
            checked += 1
    assert checked == len(dets.score) * n_areas
    assert set(np.unique(state)) == {ev.TRUE_POSITIVE, ev.FALSE_POSITIVE, ev.IGNORED}


def test_match_one_image_by_hand():
    # object 0 at IoU 0.81 with det 0; det 1 overlaps object 0 better (0.9) but comes second,
    # so it takes object 1 (IoU 0.64); det 2 lands in the crowd region; det 3 hits nothing.
    gt = [[0, 0, 10, 10], [2, 0, 10, 10], [100, 100, 50, 50]]
    crowd = [False, False, True]
    det = [[1, 0, 9, 9], [0, 0, 10, 9], [110, 110, 5, 5], [300, 300, 5, 5]]
    ious = [[0.81, 9 * 8 / (81 + 100 - 72)], [0.9, 8 * 9 / (90 + 100 - 72)]]
    assert ious[0][0] > ious[0][1] and ious[1][1] >= 0.5
    assert match_image(det, gt, crowd).tolist() == [0, 1, CROWD, -1]
    # equal IoU: pycocotools' loop lets the later object win
    assert match_image([[0, 0, 10, 10]] * 2, [[0, 0, 10, 10]] * 2, [False] * 2).tolist() == [1, 0]
    assert match_image(np.zeros((0, 4)), gt, crowd).tolist() == []
    assert match_image(det, np.zeros((0, 4)), []).tolist() == [-1] * 4


def test_empty_inputs():
    gt, _ = make_case(1)
    _, cols = _checked_results([], gt)
    precision, recall, _ = _run_arrays(gt, cols, [], (1, 10, 100))
    want, _ = reference(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.0}])
    # no detections at all: 0 where objects exist, -1 where a category/area has none
    assert np.array_equal(precision == -1, want.eval["precision"] == -1)
    assert set(np.unique(precision)) <= {0.0, -1.0}
    no_objects = dict(gt, annotations=[])
    _, cols = _checked_results([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5],
                                 "score": 0.5}], no_objects)
    precision, recall, _ = _run_arrays(no_objects, cols, [], (1, 10, 100))
    assert (precision == -1).all() and (recall == -1).all()
