"""Encode boxes as regression deltas relative to anchors, and back.

Deltas are ``(dx, dy, dw, dh)``:

    dx = (cx_box - cx_anchor) / w_anchor / variances[0]
    dy = (cy_box - cy_anchor) / h_anchor / variances[1]
    dw = log(w_box / w_anchor) / variances[2]
    dh = log(h_box / h_anchor) / variances[3]

The variances scale the targets to roughly unit spread, which keeps the box
loss on the same footing as the focal loss.
"""

from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf

from detect.ops.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh

#: Default delta variances ``(x, y, w, h)``.

#: Upper bound on the decoded log size ratio (``dw * var``, ``dh * var``): a box
#: at most 1000/16 = 62.5 times its anchor, so huge deltas cannot overflow exp().
MAX_LOG_SIZE_RATIO = math.log(1000.0 / 16.0)

#: Floor on widths and heights in encode(), so degenerate boxes give finite deltas.
_MIN_SIZE = 1e-3


def encode(
    anchors: tf.Tensor,
    boxes: tf.Tensor,
    variances: Sequence[float],
) -> tf.Tensor:
    """Deltas that move ``anchors`` onto ``boxes``.

    Args:
      anchors: ``[..., N, 4]`` xyxy pixels (broadcasts against ``boxes``).
      boxes: ``[..., N, 4]`` xyxy pixels.
      variances: the four named variances ``(x, y, w, h)``.

    Returns:
      ``[..., N, 4]`` float32 deltas ``(dx, dy, dw, dh)``, always finite for
      finite inputs (degenerate sizes are floored at 1e-3 px).
    """
    var = tf.constant(variances, tf.float32)
    a = xyxy_to_cxcywh(anchors)
    b = xyxy_to_cxcywh(boxes)
    a_wh = tf.maximum(a[..., 2:], _MIN_SIZE)
    b_wh = tf.maximum(b[..., 2:], _MIN_SIZE)
    d_xy = (b[..., :2] - a[..., :2]) / a_wh
    d_wh = tf.math.log(b_wh / a_wh)
    return tf.concat([d_xy, d_wh], axis=-1) / var


def decode(
    anchors: tf.Tensor,
    deltas: tf.Tensor,
    variances: Sequence[float],
) -> tf.Tensor:
    """Boxes from ``deltas`` applied to ``anchors`` (the inverse of :func:`encode`).

    Args:
      anchors: ``[..., N, 4]`` xyxy pixels (broadcasts against ``deltas``).
      deltas: ``[..., N, 4]`` ``(dx, dy, dw, dh)``.

    Returns:
      ``[..., N, 4]`` xyxy pixels; ``dw``/``dh`` are clamped at
      ``MAX_LOG_SIZE_RATIO`` after scaling so the result is finite.
    """
    deltas = tf.cast(deltas, tf.float32)
    var = tf.constant(variances, tf.float32)
    d = deltas * var
    a = xyxy_to_cxcywh(anchors)
    cxy = a[..., :2] + d[..., :2] * a[..., 2:]
    wh = a[..., 2:] * tf.exp(tf.minimum(d[..., 2:], MAX_LOG_SIZE_RATIO))
    return cxcywh_to_xyxy(tf.concat([cxy, wh], axis=-1))
