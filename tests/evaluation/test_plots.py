"""Evaluation plots at any class count, and the confusion matrix against a hand count."""

import numpy as np

from detect.evaluation.coco_eval import evaluate
from detect.evaluation.confusion import confusion_matrix
from detect.evaluation.operating_point import operating_points
from detect.evaluation.plots import TOP, top_classes, write_pr_curves


def test_confusion_matrix_golden():
    cats = [{"id": 1, "name": "car"}, {"id": 2, "name": "pool"}]
    gt = {"images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
          "categories": cats, "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
              {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 10, 10], "area": 100, "iscrowd": 0},
              {"id": 3, "image_id": 1, "category_id": 1, "bbox": [80, 0, 10, 10], "area": 100, "iscrowd": 0},
              {"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 2500, "iscrowd": 1}]}
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},     # car on the car: 1,1
        {"image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10], "score": 0.8},   # car on the pool: 2,1
        {"image_id": 1, "category_id": 2, "bbox": [1, 0, 10, 10], "score": 0.7},     # pool on the taken car: bg,2
        {"image_id": 1, "category_id": 2, "bbox": [30, 30, 5, 5], "score": 0.6},     # pool on nothing: bg,2
        {"image_id": 2, "category_id": 1, "bbox": [10, 10, 10, 10], "score": 0.9},   # on a crowd region: left out
        {"image_id": 1, "category_id": 1, "bbox": [80, 0, 10, 10], "score": 0.2},    # below the threshold
    ]
    m = confusion_matrix(gt, dets, [1, 2], 0.5)
    # rows true car, pool, background; columns detected car, pool, background
    # the second car (80, 0) is found only below 0.5: missed -> (car, background)
    assert m.tolist() == [[1, 0, 1], [1, 0, 0], [0, 2, 0]]
    assert confusion_matrix(gt, dets, [1, 2], 0.0).tolist() == [[2, 0, 0], [1, 0, 0], [0, 2, 0]]


def many_class_set(k=80):
    rng = np.random.default_rng(0)
    cats = [{"id": i + 1, "name": f"class {i}"} for i in range(k)]
    gt = {"images": [{"id": 1, "width": 4000, "height": 4000}], "categories": cats, "annotations": []}
    dets = []
    for i in range(k - 1):  # the last class has no ground truth
        for j in range(i % 7 + 1):  # supports 1..7
            box = [40.0 * i, 40.0 * j + 2000 * (i % 2), 30, 30]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": 1, "category_id": i + 1,
                                      "bbox": box, "area": 900, "iscrowd": 0})
            if rng.random() < 0.7:
                dets.append({"image_id": 1, "category_id": i + 1, "bbox": box, "score": float(rng.random())})
    dets.append({"image_id": 1, "category_id": k, "bbox": [5, 5, 10, 10], "score": 0.5})
    return gt, dets


def test_plots_at_80_classes(tmp_path):
    gt, dets = many_class_set()
    result = evaluate(gt, dets, max_dets=(1, 10, 1000))
    top, rest = top_classes(result)
    supports = [result.per_class[k]["num_gt"] for k in top]
    assert len(top) == TOP and supports == sorted(supports, reverse=True) and min(supports) == 7
    assert len(rest) == 79 - TOP  # the class without ground truth is in neither
    points = operating_points(gt, dets, result.category_ids)
    files = write_pr_curves(result, tmp_path, gt=gt, detections=dets, points=points)
    names = {p.name for p in files}
    assert {"all_classes.png", "f1_vs_threshold.png", "confusion_matrix.png", "confusion_matrix.csv"} <= names
    assert len([n for n in names if n.startswith("pr_")]) == 80
    rows = (tmp_path / "confusion_matrix.csv").read_text().splitlines()
    assert len(rows) == 82 and rows[-1].startswith("background")  # header, 80 classes, background


def test_a_class_without_ground_truth_says_so(tmp_path, monkeypatch):
    import matplotlib.axes

    gt, dets = many_class_set(k=3)
    result = evaluate(gt, dets)
    titles = []
    real = matplotlib.axes.Axes.set

    def spy(self, **kw):
        if "title" in kw:
            titles.append(kw["title"])
        return real(self, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "set", spy)
    write_pr_curves(result, tmp_path)
    assert "class 2: no ground truth" in titles and not any("-1.000" in t for t in titles)
