"""pycocotools' box evaluation redone over arrays, with compiled loops (the ``detect`` backend).

``COCOeval.evaluate()`` + ``accumulate()`` for ``iouType="bbox"``, step for
step, so the ``precision`` [T, R, K, A, M] and ``recall`` [T, K, A, M] arrays
are bit-identical to pycocotools' (tests compare them whole). What it
reproduces, on purpose:

- images are ``sorted`` ground-truth image ids, categories ``sorted`` ids;
  annotations of other images or categories are not counted;
- per image and category, detections in descending score order (stable:
  ties keep the results' order), cut to the largest maxDets; objects in file
  order, reordered per area range with the ignored ones last (stable);
- box IoU as pycocotools' C ``bbIou`` (float64; a crowd region's union is the
  detection's area), the greedy match at ``min(t, 1 - 1e-10)`` with its tie
  rule (a later object of equal IoU wins) and its early stop at ignored
  objects;
- a detection that matched an object whose annotation id is 0 counts as
  unmatched, as in pycocotools (it stores matched ids and tests them against 0);
- ground-truth ``area`` from the annotation, detection area ``w * h``;
  ``iscrowd`` (not ``ignore``) marks crowd regions;
- accumulation: detections of a category pooled over images in image order,
  each image's first ``maxDet``, stably sorted by score; precision envelope,
  ``searchsorted(..., side="left")`` at the 101 recall thresholds; -1 where a
  category has no counted object in an area range.

The loops run through numba (compiled once, cached on disk next to this
file when it is writable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

#: pycocotools' thresholds, built with the same calls so the float values are equal.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
#: pycocotools' default area ranges (area in px^2) and labels.
AREA_RANGES = ((0.0, 1e10), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e10))
AREA_LABELS = ("all", "small", "medium", "large")

#: Per (area range, IoU threshold, detection) outcome codes.
FALSE_POSITIVE, TRUE_POSITIVE, IGNORED = 0, 1, 2


@dataclass
class Ground:
    """Ground truth as arrays, sorted by (category, image, file order)."""

    image_ids: np.ndarray  # [I] sorted unique image ids
    category_ids: np.ndarray  # [K] sorted unique category ids
    key: np.ndarray  # [G] int64 category index * I + image index
    boxes: np.ndarray  # [G, 4] float64 xywh
    area: np.ndarray  # [G] float64 (the annotation's area)
    crowd: np.ndarray  # [G] bool
    ann_id: np.ndarray  # [G] int64 annotation ids (0 is pycocotools' "unmatched")
    index: np.ndarray  # [G] position in gt["annotations"]


@dataclass
class Ranked:
    """Results as arrays, sorted by (category, image, score descending, results order), each
    image and category cut to ``max_det``."""

    key: np.ndarray  # [N] int64, as Ground.key
    boxes: np.ndarray  # [N, 4] float64 xywh
    score: np.ndarray  # [N] float64
    rank: np.ndarray  # [N] int64 position within its image and category (0 = best)
    index: np.ndarray  # [N] position in the results list


def ground_arrays(gt: dict) -> Ground:
    """Arrays of a COCO instances dict; annotations of unknown images/categories left out
    (pycocotools does not count them either)."""
    image_ids = np.unique(np.array([im["id"] for im in gt["images"]]))
    category_ids = np.unique(np.array([c["id"] for c in gt["categories"]]))
    anns = gt["annotations"]
    n = len(anns)
    img = np.array([a["image_id"] for a in anns]) if n else np.zeros(0, image_ids.dtype)
    cat = np.array([a["category_id"] for a in anns]) if n else np.zeros(0, category_ids.dtype)
    boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(n, 4)
    area = np.array([a["area"] if "area" in a else a["bbox"][2] * a["bbox"][3] for a in anns],
                    np.float64)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
    ann_id = np.array([a.get("id", 0) for a in anns], np.int64)
    i, ok_i = _lookup(image_ids, img)
    k, ok_k = _lookup(category_ids, cat)
    keep = np.flatnonzero(ok_i & ok_k)
    key = k[keep] * len(image_ids) + i[keep]
    order = keep[np.argsort(key, kind="stable")]
    key = np.sort(key, kind="stable")
    return Ground(image_ids, category_ids, key, boxes[order], area[order], crowd[order],
                  ann_id[order], order)


def detection_arrays(image_id, category_id, boxes, score, ground: Ground,
                     max_det: int) -> Ranked:
    """Sort results (arrays in results order) the way pycocotools visits them; keep each image
    and category's best ``max_det``. Ids must be known to ``ground`` (checked before)."""
    n = len(score)
    i, _ = _lookup(ground.image_ids, np.asarray(image_id))
    k, _ = _lookup(ground.category_ids, np.asarray(category_id))
    key = k * len(ground.image_ids) + i
    score = np.asarray(score, np.float64)
    order = np.lexsort((np.arange(n), -score, key))
    key = key[order]
    starts = np.searchsorted(key, key, side="left")
    rank = np.arange(n) - starts
    keep = order[rank < max_det]
    return Ranked(key[rank < max_det], np.asarray(boxes, np.float64).reshape(n, 4)[keep],
                      score[keep], rank[rank < max_det], keep)


def _lookup(sorted_ids: np.ndarray, values: np.ndarray):
    """Index of each value in ``sorted_ids`` and whether it is there."""
    if len(values) == 0 or len(sorted_ids) == 0:
        return np.zeros(len(values), np.int64), np.zeros(len(values), bool)
    pos = np.searchsorted(sorted_ids, values).astype(np.int64)
    pos = np.minimum(pos, len(sorted_ids) - 1)
    return pos, sorted_ids[pos] == values


def match(ground: Ground, dets: Ranked, iou_thresholds=IOU_THRESHOLDS,
          area_ranges=AREA_RANGES):
    """pycocotools' ``evaluateImg`` for every image and category at once.

    Returns ``state`` [A, T, N] int8 (:data:`TRUE_POSITIVE`, :data:`FALSE_POSITIVE`
    or :data:`IGNORED` per area range, IoU threshold and detection) and
    ``matched`` [N] int64: the ground-truth row (in ``ground``'s order) each
    detection took at the first area range and threshold, -1 for none.
    """
    keys = np.union1d(dets.key, ground.key)
    d_lo, d_hi = (np.searchsorted(dets.key, keys, side=s) for s in ("left", "right"))
    g_lo, g_hi = (np.searchsorted(ground.key, keys, side=s) for s in ("left", "right"))
    ranges = np.asarray(area_ranges, np.float64).reshape(-1, 2)
    thresholds = np.asarray(iou_thresholds, np.float64)
    state = np.empty((len(ranges), len(thresholds), len(dets.score)), np.int8)
    matched = np.full(len(dets.score), -1, np.int64)
    _match_groups(d_lo, d_hi, dets.boxes, g_lo, g_hi, ground.boxes, ground.area, ground.crowd,
                  ground.ann_id, thresholds, ranges, state, matched)
    return state, matched


def match_one_image(det_xywh, gt_xywh, crowd, iou_threshold: float) -> np.ndarray:
    """:func:`match` for one image and category at one IoU threshold, no area limits.

    ``det_xywh`` [n, 4] in the order to visit (best first), ``gt_xywh`` [m, 4],
    ``crowd`` [m] bool. Returns, per detection, the row of ``gt_xywh`` it
    matched (a crowd region included), or -1.
    """
    det = np.asarray(det_xywh, np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_xywh, np.float64).reshape(-1, 4)
    n, m = len(det), len(gt_boxes)
    ground = Ground(np.zeros(1), np.zeros(1), np.zeros(m, np.int64), gt_boxes,
                    np.zeros(m), np.asarray(crowd, bool).reshape(m), np.arange(1, m + 1),
                    np.arange(m))
    dets = Ranked(np.zeros(n, np.int64), det, np.zeros(n), np.arange(n), np.arange(n))
    return match(ground, dets, [iou_threshold], [(-np.inf, np.inf)])[1]


def accumulate(ground: Ground, dets: Ranked, state: np.ndarray, max_dets,
               area_ranges=AREA_RANGES):
    """pycocotools' ``accumulate``: ``precision`` [T, R, K, A, M], ``recall`` [T, K, A, M]."""
    n_images, n_cats = len(ground.image_ids), len(ground.category_ids)
    ranges = np.asarray(area_ranges, np.float64).reshape(-1, 2)
    counted = ~ground.crowd[None] & (ground.area[None] >= ranges[:, :1]) & (
        ground.area[None] <= ranges[:, 1:])  # [A, G]
    g_cat = ground.key // max(n_images, 1)
    num_gt = np.stack([np.bincount(g_cat[c], minlength=n_cats) for c in counted], 1)  # [K, A]
    d_cat = dets.key // max(n_images, 1)
    # Each category's detections, best first; ties keep (image, rank) order like mergesort.
    order = np.lexsort((np.arange(len(d_cat)), -dets.score, d_cat))
    cat_lo = np.searchsorted(d_cat[order], np.arange(n_cats), side="left")
    cat_hi = np.searchsorted(d_cat[order], np.arange(n_cats), side="right")
    T, A, M = state.shape[1], len(ranges), len(max_dets)
    precision = -np.ones((T, len(RECALL_THRESHOLDS), n_cats, A, M))
    recall = -np.ones((T, n_cats, A, M))
    _accumulate(order, cat_lo, cat_hi, dets.rank, state, num_gt.astype(np.int64),
                np.asarray(max_dets, np.int64), RECALL_THRESHOLDS, precision, recall)
    return precision, recall


@njit(cache=True)
def _box_iou(d, g, crowd):
    """pycocotools' ``bbIou`` for one pair (xywh, float64), same operations in the same order."""
    w = min(d[2] + d[0], g[2] + g[0]) - max(d[0], g[0])
    if w <= 0:
        return 0.0
    h = min(d[3] + d[1], g[3] + g[1]) - max(d[1], g[1])
    if h <= 0:
        return 0.0
    i = w * h
    u = d[2] * d[3] if crowd else d[2] * d[3] + g[2] * g[3] - i
    return i / u


@njit(cache=True)
def _match_groups(d_lo, d_hi, d_box, g_lo, g_hi, g_box, g_area, g_crowd, g_id, thresholds,
                  ranges, state, matched):
    for q in range(len(d_lo)):
        nd = d_hi[q] - d_lo[q]
        if nd == 0:
            continue
        ng = g_hi[q] - g_lo[q]
        ious = np.zeros((nd, ng))
        for d in range(nd):
            for g in range(ng):
                ious[d, g] = _box_iou(d_box[d_lo[q] + d], g_box[g_lo[q] + g], g_crowd[g_lo[q] + g])
        order = np.empty(ng, np.int64)
        ignored = np.empty(ng, np.bool_)
        taken = np.empty(ng, np.bool_)
        for a in range(ranges.shape[0]):
            lo, hi = ranges[a, 0], ranges[a, 1]
            # Objects first, ignored ones after (a stable partition, as mergesort on the flag).
            n_first = 0
            for g in range(ng):
                j = g_lo[q] + g
                if not (g_crowd[j] or g_area[j] < lo or g_area[j] > hi):
                    order[n_first] = g
                    n_first += 1
            pos = n_first
            for g in range(ng):
                j = g_lo[q] + g
                if g_crowd[j] or g_area[j] < lo or g_area[j] > hi:
                    order[pos] = g
                    pos += 1
            for g in range(ng):
                ignored[g] = g >= n_first
            for t in range(thresholds.shape[0]):
                taken[:] = False
                for d in range(nd):
                    best = min(thresholds[t], 1 - 1e-10)
                    m = -1
                    for gg in range(ng):
                        g = order[gg]
                        if taken[gg] and not g_crowd[g_lo[q] + g]:
                            continue
                        if m > -1 and not ignored[m] and ignored[gg]:
                            break
                        if ious[d, g] < best:
                            continue
                        best = ious[d, g]
                        m = gg
                    i = d_lo[q] + d
                    box = d_box[i]
                    outside = box[2] * box[3] < lo or box[2] * box[3] > hi
                    if m == -1:
                        state[a, t, i] = IGNORED if outside else FALSE_POSITIVE
                        continue
                    taken[m] = True
                    if a == 0 and t == 0:
                        matched[i] = g_lo[q] + order[m]
                    if ignored[m]:
                        state[a, t, i] = IGNORED
                    elif g_id[g_lo[q] + order[m]] == 0:  # pycocotools reads id 0 as "unmatched"
                        state[a, t, i] = IGNORED if outside else FALSE_POSITIVE
                    else:
                        state[a, t, i] = TRUE_POSITIVE


@njit(cache=True)
def _accumulate(order, cat_lo, cat_hi, rank, state, num_gt, max_dets, rec_thrs, precision, recall):
    eps = np.spacing(1.0)
    for k in range(len(cat_lo)):
        block = order[cat_lo[k]:cat_hi[k]]
        for a in range(state.shape[0]):
            if num_gt[k, a] == 0:
                continue
            for m in range(len(max_dets)):
                sel = block[rank[block] < max_dets[m]]
                n = len(sel)
                rc = np.empty(n)
                pr = np.empty(n)
                for t in range(state.shape[1]):
                    tp = 0.0
                    fp = 0.0
                    for j in range(n):
                        s = state[a, t, sel[j]]
                        if s == TRUE_POSITIVE:
                            tp += 1.0
                        elif s == FALSE_POSITIVE:
                            fp += 1.0
                        rc[j] = tp / num_gt[k, a]
                        pr[j] = tp / (fp + tp + eps)
                    recall[t, k, a, m] = rc[n - 1] if n else 0.0
                    for j in range(n - 1, 0, -1):
                        if pr[j] > pr[j - 1]:
                            pr[j - 1] = pr[j]
                    inds = np.searchsorted(rc, rec_thrs, side="left")
                    for r in range(len(rec_thrs)):
                        precision[t, r, k, a, m] = pr[inds[r]] if inds[r] < n else 0.0
