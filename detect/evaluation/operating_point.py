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


def match_detections(gt: dict, results: list[dict], max_dets: int = MAX_DETS, iou: float = IOU, *,
                     per_image: bool = False):
    """Per category id: (scores [n], is_true_positive [n]) of counted detections matched at ``iou``,
    and object counts (crowd regions are not objects; a detection matching one is not counted).
    ``per_image``: also, per category id, each counted detection's image index and the objects
    per image ``[images]`` (image index: position in ``gt["images"]`` order of ids)."""
    from detect.evaluation.coco_eval import _checked_results

    ground = arrays.ground_arrays(gt)
    _, cols = _checked_results(results, gt)  # a clear error for malformed results
    dets = arrays.detection_arrays(cols.image_id, cols.category_id, cols.boxes, cols.score,
                                   ground, max_dets)
    _, matched = arrays.match(ground, dets, [iou], [(-np.inf, np.inf)])
    crowd = _took_crowd(matched, ground.crowd)
    n_images = max(len(ground.image_ids), 1)
    d_cat, g_cat = dets.key // n_images, ground.key // n_images
    scores, hits, num_gt, images, gt_images = {}, {}, {}, {}, {}
    for k, cid in enumerate(ground.category_ids.tolist()):
        counted = (d_cat == k) & ~crowd
        scores[cid] = dets.score[counted]
        hits[cid] = matched[counted] >= 0
        objects = (g_cat == k) & ~ground.crowd
        num_gt[cid] = int(objects.sum())
        images[cid] = dets.key[counted] % n_images
        gt_images[cid] = np.bincount(ground.key[objects] % n_images, minlength=n_images)
    if per_image:
        return scores, hits, num_gt, images, gt_images
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
                     score_threshold: float | None = None, max_dets: int = MAX_DETS, iou: float = IOU) -> dict:
    """``{"iou", "overall": row, "per_class": {category_id: row}, "per_image": [row, ...]}`` (see
    module doc); ``per_image``: each image's row (with its ``image_id`` and ``file_name``) at
    the overall threshold, every class pooled.

    ``max_dets``: detections counted per image and category (pycocotools'
    largest ``maxDets``); ``iou``: the matching IoU (0.5, COCO's; aerial tree-crown work
    often uses 0.4).
    """
    scores, hits, num_gt, images, gt_images = match_detections(gt, results, max_dets, iou, per_image=True)
    none = np.zeros(0)
    per_class = {c: _point(scores.get(c, none), hits.get(c, none), num_gt.get(c, 0), score_threshold)
                 for c in category_ids}
    all_scores = np.concatenate([none, *(scores.get(c, none) for c in category_ids)])
    all_hits = np.concatenate([none.astype(bool), *(hits.get(c, none) for c in category_ids)])
    overall = _point(all_scores, all_hits, sum(num_gt.get(c, 0) for c in category_ids),
                     score_threshold)
    return {"iou": float(iou), "overall": overall, "per_class": per_class,
            "per_image": _per_image(gt, overall["score_threshold"], scores, hits, images, gt_images, category_ids)}


def _per_image(gt, threshold, scores, hits, images, gt_images, category_ids) -> list[dict]:
    """Each image's precision, recall, F1 and count error at ``threshold``, classes pooled."""
    order = sorted(im["id"] for im in gt["images"])  # the image index of arrays.ground_arrays
    names = {im["id"]: im.get("file_name", "") for im in gt["images"]}
    n = len(order)
    tp, kept, true = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    cut = -np.inf if threshold is None else threshold
    for c in category_ids:
        if c not in scores:
            continue
        keep = scores[c] >= cut
        np.add.at(kept, images[c][keep], 1)
        np.add.at(tp, images[c][keep & hits[c]], 1)
        true += gt_images[c][:n]
    return [{"image_id": iid, "file_name": names[iid], **_row(threshold, int(tp[i]), int(kept[i]), int(true[i]))}
            for i, iid in enumerate(order)]
