"""A calibrated operating point: each class's best-F1 score threshold, to store in a model.

``detect evaluate`` prints the operating point (the threshold where F1 peaks, at IoU
0.5); calibration keeps it, per class, in the model's post-processing
(``postprocess.class_thresholds``) so maps, CSV and pictures are written at it
without the user carrying a number from one command to the next. A class with no
matched objects or no detections in the labelled data takes the pooled threshold
(and failing that, ``fallback``).
"""

from __future__ import annotations

import math


def class_thresholds(points: dict, gt: dict, class_names, fallback: float) -> tuple[list[float], list[str]]:
    """``(thresholds, notes)``: one threshold per name of ``class_names`` from ``points``
    (:func:`detect.evaluation.operating_point.operating_points` on ground truth ``gt``),
    matched to the ground truth's categories by name.

    Thresholds are rounded *down* to 1e-4, so the detection whose score set the
    threshold is still kept. ``notes``: one line per class that took the pooled or the
    fallback threshold, and why."""
    names = {c["id"]: c["name"] for c in gt["categories"]}
    by_name = {names.get(cid): row for cid, row in points["per_class"].items()}
    pooled = points["overall"]["score_threshold"]
    out, notes = [], []
    for name in class_names:
        row = by_name.get(name)
        t = row["score_threshold"] if row else None
        if t is None or (row and row["true_count"] == 0):
            t = pooled if pooled is not None else fallback
            why = "not in the labelled data" if row is None else "no objects or no detections of it there"
            notes.append(f"{name}: {why}; the pooled threshold {t:.4f}")
        out.append(math.floor(float(t) * 1e4) / 1e4)
    return out, notes


def calibrate(model, points: dict, gt: dict, ann, *, source: str = "") -> tuple[list[float], list[str]]:
    """Store ``points``' per-class thresholds (see :func:`class_thresholds`) in ``model``'s
    post-processing, with where they came from (``source`` + :func:`provenance`); returns the
    thresholds and the notes on classes that took the pooled one."""
    thresholds, notes = class_thresholds(points, gt, model.class_names,
                                         model.model_config.postprocess.score_threshold)
    model.set_postprocess(class_thresholds=tuple(thresholds),
                          calibration=source + provenance(ann, gt, points.get("iou", 0.5)))
    return thresholds, notes


def provenance(ann, gt: dict, iou: float = 0.5) -> str:
    """``"val.json (12 images, 180 objects), best F1 per class at IoU 0.5"``."""
    from pathlib import Path

    objects = sum(1 for a in gt["annotations"] if not a.get("iscrowd", 0))
    return f"{Path(str(ann)).name} ({len(gt['images'])} images, {objects} objects), best F1 per class at IoU {iou:g}"
