"""Box overlap in NumPy, for code that runs outside TensorFlow (tile merging, anchor fitting).

The one NumPy IoU of the package (the TF ops are in :mod:`detect.ops.boxes`;
COCO evaluation keeps pycocotools' own per-pair arithmetic in
:mod:`detect.evaluation.arrays` so its numbers stay bit-equal). Boxes are
xyxy in pixels, ``[..., 4]``; ``a`` and ``b`` broadcast against each other,
so ``iou(a[:, None], b[None, :])`` is the ``[N, M]`` matrix and
``iou(anchors, box)`` one box against many anchors.
"""

from __future__ import annotations

import numpy as np


def area(boxes: np.ndarray) -> np.ndarray:
    """``[...]`` width * height of ``boxes [..., 4]`` (negative sides are not clipped)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[...]`` area of the overlap of ``a`` and ``b`` (0 when they do not overlap)."""
    w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[...]`` intersection over union; 0 where the union is empty (two degenerate boxes)."""
    inter = intersection(a, b)
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def ios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[...]`` intersection over the smaller box's area; 0 where that area is 0. A box cut by
    a tile border against the same object seen whole gives an IoS near 1 where its IoU is low."""
    inter = intersection(a, b)
    smaller = np.minimum(area(a), area(b))
    return np.where(smaller > 0, inter / np.maximum(smaller, 1e-12), 0.0)
