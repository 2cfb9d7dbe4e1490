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

from collections import defaultdict

import numpy as np
from pycocotools import mask as mask_utils

IOU = 0.5
MAX_DETS = 100


#: :func:`match_image`'s mark of a detection that matched a crowd region (neither right nor wrong).
CROWD = -2


def match_image(det_xywh, gt_xywh, crowd) -> np.ndarray:
    """pycocotools' matching in one image and category at IoU :data:`IOU`.

    ``det_xywh`` ``[n, 4]`` in descending score order; ``gt_xywh`` ``[m, 4]``
    with real objects before crowd regions (``crowd`` ``[m]`` bool). Returns,
    per detection, the index of the object it matched, -1 for none (a false
    positive) or :data:`CROWD`.
    """
    out = -np.ones(len(det_xywh), np.int64)
    if not len(det_xywh) or not len(gt_xywh):
        return out
    crowd = np.asarray(crowd, bool)
    ious = np.asarray(mask_utils.iou([list(map(float, b)) for b in det_xywh],
                                     [list(map(float, b)) for b in gt_xywh], crowd.astype(np.uint8).tolist()))
    taken = np.zeros(len(gt_xywh), bool)
    for i in range(len(det_xywh)):
        best, m = IOU, -1  # pycocotools: IoU >= threshold matches
        for j in range(len(gt_xywh)):
            if taken[j] and not crowd[j]:
                continue
            if m > -1 and not crowd[m] and crowd[j]:
                break  # a real object already matched; crowd regions come last
            if ious[i, j] < best:
                continue
            best, m = ious[i, j], j
        if m > -1 and crowd[m]:
            out[i] = CROWD
            continue
        if m > -1:
            taken[m] = True
        out[i] = m
    return out


def match_detections(gt: dict, results: list[dict], max_dets: int = MAX_DETS):
    """Per category: (scores [n], is_true_positive [n]) of counted detections, and object counts."""
    gts = defaultdict(list)
    for a in gt["annotations"]:
        gts[(a["image_id"], a["category_id"])].append(a)
    dts = defaultdict(list)
    for r in results:
        dts[(r["image_id"], r["category_id"])].append(r)
    scores = defaultdict(list)
    hits = defaultdict(list)
    num_gt = defaultdict(int)
    for key in set(gts) | set(dts):
        cat = key[1]
        g = sorted(gts.get(key, []), key=lambda a: bool(a.get("iscrowd", 0)))  # objects first
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in g], bool)
        num_gt[cat] += int((~crowd).sum())
        d = sorted(dts.get(key, []), key=lambda r: -r["score"])[:max_dets]
        if not d:
            continue
        if not g:
            scores[cat] += [r["score"] for r in d]
            hits[cat] += [False] * len(d)
            continue
        matched = match_image([r["bbox"] for r in d], [a["bbox"] for a in g], crowd)
        for r, m in zip(d, matched):
            if m == CROWD:
                continue  # matched a crowd region: ignored
            scores[cat].append(r["score"])
            hits[cat].append(m > -1)
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
    per_class = {c: _point(scores[c], hits[c], num_gt[c], score_threshold) for c in category_ids}
    all_scores = [s for c in category_ids for s in scores[c]]
    all_hits = [h for c in category_ids for h in hits[c]]
    overall = _point(all_scores, all_hits, sum(num_gt[c] for c in category_ids), score_threshold)
    return {"overall": overall, "per_class": per_class}
