"""Confusion matrix of a detector at one score threshold, with a background row and column.

Rows are what is there (each class, then "background": nothing), columns
what was detected (each class, then "background": no detection). Per
image, the detections scoring at least the threshold, by descending score,
each take the unmatched object of *any* class with the highest IoU >= 0.5
(pycocotools' IoU; a detection whose best match is a crowd region is left
out), so a detection with the wrong class lands off the diagonal instead
of counting twice. Then an object nobody took counts in its row's
background column, and a detection that took nothing in the background row.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pycocotools import mask as mask_utils

IOU = 0.5


def confusion_matrix(gt: dict, results: list[dict], category_ids, score_threshold: float) -> np.ndarray:
    """``[K + 1, K + 1]`` int counts (see module doc); index K is background."""
    k = len(category_ids)
    index = {c: i for i, c in enumerate(category_ids)}
    out = np.zeros((k + 1, k + 1), np.int64)
    gts, dts = defaultdict(list), defaultdict(list)
    for a in gt["annotations"]:
        if a["category_id"] in index:
            gts[a["image_id"]].append(a)
    for r in results:
        if r["category_id"] in index and r["score"] >= score_threshold:
            dts[r["image_id"]].append(r)
    for image in set(gts) | set(dts):
        g = gts.get(image, [])
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in g], bool)
        d = sorted(dts.get(image, []), key=lambda r: -r["score"])
        taken = np.zeros(len(g), bool)
        ious = (np.asarray(mask_utils.iou([r["bbox"] for r in d], [a["bbox"] for a in g],
                                          crowd.astype(np.uint8).tolist())) if d and g else None)
        for i, r in enumerate(d):
            col = index[r["category_id"]]
            if ious is None:
                out[k, col] += 1
                continue
            free = np.where(~taken & ~crowd, ious[i], -1.0)
            j = int(np.argmax(free))
            if free[j] >= IOU:
                taken[j] = True
                out[index[g[j]["category_id"]], col] += 1
            elif crowd.any() and ious[i][crowd].max() >= IOU:
                continue  # on a crowd region: neither right nor wrong
            else:
                out[k, col] += 1
        for j in np.flatnonzero(~taken & ~crowd):
            out[index[g[j]["category_id"]], k] += 1
    return out
