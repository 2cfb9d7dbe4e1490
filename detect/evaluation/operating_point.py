"""Operating point: the score threshold that maximises F1 at IoU 0.5.

People counting pools or cars need one threshold, not a curve. Detections
are matched to ground truth with pycocotools' rule at IoU 0.5 (area "all",
at most ``max_dets`` (default 100) detections per image and category): detections in descending
score order take the best-overlapping unmatched object; a detection that
matches a crowd region is ignored, not a false positive; crowd regions are
not objects to find. Then, per class and pooled over classes, precision,
recall and F1 are computed at every distinct score; the threshold with the
highest F1 wins (ties: the higher threshold). Reported with it: precision,
recall, F1 and the count error (detections kept minus objects present).
"""

from __future__ import annotations

import numpy as np

from detect.evaluation import arrays

IOU = 0.5
MAX_DETS = 100


#: :func:`match_image`'s mark of a detection that matched a crowd region (neither right nor wrong).
CROWD = -2


def match_image(det_xywh, gt_xywh, crowd) -> np.ndarray:
    """pycocotools' matching in one image and category at IoU :data:`IOU`.

    ``det_xywh`` ``[n, 4]`` in descending score order; ``gt_xywh`` ``[m, 4]``
    (any order: pycocotools visits real objects before crowd regions, and so
    does this); ``crowd`` ``[m]`` bool. Returns, per detection, the index of
    the object it matched, -1 for none (a false positive) or :data:`CROWD`.
    """
    matched = arrays.match_one_image(det_xywh, gt_xywh, crowd, IOU)
    return np.where(_took_crowd(matched, np.asarray(crowd, bool)), CROWD, matched)


def _took_crowd(matched: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """Per detection: it matched a crowd region (``matched``: object row or -1)."""
    out = np.zeros(len(matched), bool)
    hit = np.flatnonzero(matched >= 0)
    out[hit] = crowd[matched[hit]]
    return out


def match_detections(gt: dict, results: list[dict], max_dets: int = MAX_DETS):
    """Per category id: (scores [n], is_true_positive [n]) of counted detections, and object
    counts (crowd regions are not objects; a detection matching one is not counted)."""
    from detect.evaluation.coco_eval import _checked_results

    ground = arrays.ground_arrays(gt)
    _, cols = _checked_results(results, gt)  # a clear error for malformed results
    dets = arrays.detection_arrays(cols.image_id, cols.category_id, cols.boxes, cols.score,
                                   ground, max_dets)
    _, matched = arrays.match(ground, dets, [IOU], [(-np.inf, np.inf)])
    crowd = _took_crowd(matched, ground.crowd)
    n_images = max(len(ground.image_ids), 1)
    d_cat, g_cat = dets.key // n_images, ground.key // n_images
    scores, hits, num_gt = {}, {}, {}
    for k, cid in enumerate(ground.category_ids.tolist()):
        counted = (d_cat == k) & ~crowd
        scores[cid] = dets.score[counted]
        hits[cid] = matched[counted] >= 0
        num_gt[cid] = int(((g_cat == k) & ~ground.crowd).sum())
    return scores, hits, num_gt


def f1_by_threshold(scores, hits, num_gt: int):
    """Keeping the detections scoring >= each distinct score (descending): ``(thresholds, f1,
    true positives, kept)`` arrays (a threshold keeps all tied scores)."""
    s = np.asarray(scores, np.float64)
    order = np.argsort(-s, kind="stable")
    s = s[order]
    tp = np.cumsum(np.asarray(hits, bool)[order])
    kept = np.arange(1, len(s) + 1)
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, bool)
    prec, rec = tp / kept, tp / max(num_gt, 1)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
    return s[last], f1[last], tp[last], kept[last]


def _point(scores, hits, num_gt: int, threshold: float | None) -> dict:
    if threshold is None:
        t, f1, tp, kept = f1_by_threshold(scores, hits, num_gt)
        if len(t) == 0:
            return _row(None, 0, 0, num_gt)
        i = int(np.argmax(f1))  # first maximum = highest threshold
        return _row(float(t[i]), int(tp[i]), int(kept[i]), num_gt)
    s = np.sort(np.asarray(scores, np.float64))[::-1]
    tp = np.cumsum(np.asarray(hits, bool)[np.argsort(-np.asarray(scores, np.float64), kind="stable")])
    n = int((s >= threshold).sum())
    return _row(float(threshold), int(tp[n - 1]) if n else 0, n, num_gt)


def _row(threshold, tp: int, kept: int, num_gt: int) -> dict:
    precision = tp / kept if kept else 0.0
    recall = tp / num_gt if num_gt else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"score_threshold": threshold, "precision": precision, "recall": recall, "f1": f1,
            "true_positives": tp, "predicted_count": kept, "true_count": num_gt,
            "count_error": kept - num_gt}


def operating_points(gt: dict, results: list[dict], category_ids, *,
                     score_threshold: float | None = None, max_dets: int = MAX_DETS) -> dict:
    """``{"overall": row, "per_class": {category_id: row}}`` (see module doc).

    ``max_dets``: detections counted per image and category (pycocotools'
    largest ``maxDets``).
    """
    scores, hits, num_gt = match_detections(gt, results, max_dets)
    none = np.zeros(0)
    per_class = {c: _point(scores.get(c, none), hits.get(c, none), num_gt.get(c, 0), score_threshold)
                 for c in category_ids}
    all_scores = np.concatenate([none, *(scores.get(c, none) for c in category_ids)])
    all_hits = np.concatenate([none.astype(bool), *(hits.get(c, none) for c in category_ids)])
    overall = _point(all_scores, all_hits, sum(num_gt.get(c, 0) for c in category_ids),
                     score_threshold)
    return {"overall": overall, "per_class": per_class}
