"""Box format conversion, area, clipping and (G)IoU.

Conventions (see README "Conventions"):
- The internal format is ``xyxy``: ``(x_min, y_min, x_max, y_max)`` in absolute
  pixels, float32, with ``x_min <= x_max`` and ``y_min <= y_max`` for a valid box.
- COCO's ``xywh`` is ``(x_min, y_min, width, height)``; ``cxcywh`` is
  ``(centre_x, centre_y, width, height)``. Both appear only at the I/O edge and
  inside the box coder.
- All functions accept any leading batch dimensions: ``[..., 4]``.

IoU functions never return NaN: a degenerate box (zero or negative width or
height), a padded box, or a box with a non-finite coordinate has IoU 0 with
everything, including itself.
"""

from __future__ import annotations

import tensorflow as tf


def _split(boxes: tf.Tensor):
    return tf.unstack(boxes, num=4, axis=-1)


def xyxy_to_xywh(boxes: tf.Tensor) -> tf.Tensor:
    """``[..., 4]`` xyxy -> COCO ``[..., 4]`` xywh (same units)."""
    x0, y0, x1, y1 = _split(boxes)
    return tf.stack([x0, y0, x1 - x0, y1 - y0], axis=-1)


def xywh_to_xyxy(boxes: tf.Tensor) -> tf.Tensor:
    """COCO ``[..., 4]`` xywh -> ``[..., 4]`` xyxy (same units)."""
    x, y, w, h = _split(boxes)
    return tf.stack([x, y, x + w, y + h], axis=-1)


def xyxy_to_cxcywh(boxes: tf.Tensor) -> tf.Tensor:
    """``[..., 4]`` xyxy -> ``[..., 4]`` (centre x, centre y, width, height)."""
    x0, y0, x1, y1 = _split(boxes)
    return tf.stack([(x0 + x1) * 0.5, (y0 + y1) * 0.5, x1 - x0, y1 - y0], axis=-1)


def cxcywh_to_xyxy(boxes: tf.Tensor) -> tf.Tensor:
    """``[..., 4]`` (centre x, centre y, width, height) -> ``[..., 4]`` xyxy."""
    cx, cy, w, h = _split(boxes)
    return tf.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def area(boxes: tf.Tensor) -> tf.Tensor:
    """Area of ``[..., 4]`` xyxy boxes -> ``[...]``, in squared pixels.

    Degenerate boxes (negative extent) have area 0; non-finite boxes have area 0.
    """
    x0, y0, x1, y1 = _split(boxes)
    a = tf.maximum(x1 - x0, 0.0) * tf.maximum(y1 - y0, 0.0)
    return tf.where(tf.math.is_finite(a), a, tf.zeros_like(a))


def clip_boxes(boxes: tf.Tensor, image_size) -> tf.Tensor:
    """Clip ``[..., 4]`` xyxy boxes to an image of ``image_size = (height, width)``.

    ``image_size`` may be a pair of Python numbers or a tensor ``[..., 2]`` that
    broadcasts against the boxes' leading dimensions.
    """
    image_size = tf.cast(image_size, boxes.dtype)
    # [..., 1] so that a per-image size [B, 2] broadcasts against [B, N].
    h = image_size[..., 0][..., None]
    w = image_size[..., 1][..., None]
    x0, y0, x1, y1 = _split(boxes)
    x0, x1 = (tf.minimum(tf.maximum(v, 0.0), w) for v in (x0, x1))
    y0, y1 = (tf.minimum(tf.maximum(v, 0.0), h) for v in (y0, y1))
    return tf.stack([x0, y0, x1, y1], axis=-1)


def _intersection_union(a: tf.Tensor, b: tf.Tensor):
    """Intersection and union of broadcast-compatible ``[..., 4]`` xyxy boxes."""
    ax0, ay0, ax1, ay1 = _split(a)
    bx0, by0, bx1, by1 = _split(b)
    iw = tf.maximum(tf.minimum(ax1, bx1) - tf.maximum(ax0, bx0), 0.0)
    ih = tf.maximum(tf.minimum(ay1, by1) - tf.maximum(ay0, by0), 0.0)
    inter = iw * ih
    union = area(a) + area(b) - inter
    return inter, union


def _safe_ratio(num: tf.Tensor, den: tf.Tensor) -> tf.Tensor:
    """num / den with 0 wherever den <= 0 or either side is not finite."""
    ok = (den > 0.0) & tf.math.is_finite(num) & tf.math.is_finite(den)
    return tf.where(ok, num / tf.where(ok, den, tf.ones_like(den)), tf.zeros_like(num))


def iou(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Element-wise IoU of ``[..., 4]`` xyxy boxes (broadcasting) -> ``[...]``."""
    inter, union = _intersection_union(a, b)
    return _safe_ratio(inter, union)


def pairwise_iou(
    a: tf.Tensor,
    b: tf.Tensor,
    a_valid: tf.Tensor | None = None,
    b_valid: tf.Tensor | None = None,
) -> tf.Tensor:
    """IoU of every box in ``a`` with every box in ``b``.

    Args:
      a: ``[..., N, 4]`` xyxy boxes.
      b: ``[..., M, 4]`` xyxy boxes with the same leading dimensions as ``a``
        (or broadcastable: ``[N, 4]`` anchors against ``[B, M, 4]`` works).
      a_valid, b_valid: optional boolean masks ``[..., N]`` / ``[..., M]``;
        pairs involving an invalid (padding) box get IoU 0.

    Returns:
      ``[..., N, M]`` float IoU in [0, 1], never NaN.
    """
    out = iou(a[..., :, None, :], b[..., None, :, :])
    if a_valid is not None:
        out = tf.where(a_valid[..., :, None], out, tf.zeros_like(out))
    if b_valid is not None:
        out = tf.where(b_valid[..., None, :], out, tf.zeros_like(out))
    return out


def pairwise_ioa(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Intersection over the area of ``a``: ``[..., N, 4]`` x ``[..., M, 4]`` -> ``[..., N, M]``.

    Used to mark anchors that lie inside crowd / ignore regions (like
    pycocotools' crowd matching). 0 for degenerate or non-finite boxes.
    """
    inter, _ = _intersection_union(a[..., :, None, :], b[..., None, :, :])
    return _safe_ratio(inter, area(a)[..., :, None])


def giou(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Element-wise generalised IoU of ``[..., 4]`` xyxy boxes -> ``[...]`` in [-1, 1].

    GIoU = IoU - (|C| - |A u B|) / |C|, where C is the smallest box enclosing
    both. Degenerate or non-finite pairs give 0 for the IoU part and the
    enclosing-box penalty is 0 when |C| is 0, so the result is never NaN.
    """
    inter, union = _intersection_union(a, b)
    ax0, ay0, ax1, ay1 = _split(a)
    bx0, by0, bx1, by1 = _split(b)
    cw = tf.maximum(tf.maximum(ax1, bx1) - tf.minimum(ax0, bx0), 0.0)
    ch = tf.maximum(tf.maximum(ay1, by1) - tf.minimum(ay0, by0), 0.0)
    enclosing = cw * ch
    return _safe_ratio(inter, union) - _safe_ratio(enclosing - union, enclosing)
