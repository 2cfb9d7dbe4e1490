"""RetinaNet losses: sigmoid focal loss and smooth-L1 / GIoU box losses.

Both are summed over anchors and divided by the number of positive anchors in
the batch (at least 1), as in the RetinaNet paper. Ignored anchors
(``cls_targets == IGNORE``) contribute to neither loss; only positives
contribute to the box loss. All arithmetic is float32, whatever the model's
compute dtype.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from detect.ops import box_coder
from detect.ops.boxes import giou
from detect.ops.matcher import AnchorTargets


def sigmoid_focal_loss(
    targets: tf.Tensor, logits: tf.Tensor, *, alpha: float, gamma: float
) -> tf.Tensor:
    """Element-wise focal loss ``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)``.

    Args:
      targets: ``[...]`` 0/1 float (one-hot over classes; background = all 0).
      logits: ``[...]`` raw classification logits.

    Returns:
      ``[...]`` float32 loss, computed from logits in a numerically stable way.
    """
    targets = tf.cast(targets, tf.float32)
    logits = tf.cast(logits, tf.float32)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    p = tf.sigmoid(logits)
    p_t = targets * p + (1.0 - targets) * (1.0 - p)
    alpha_t = targets * alpha + (1.0 - targets) * (1.0 - alpha)
    return alpha_t * tf.pow(1.0 - p_t, gamma) * ce


def smooth_l1(targets: tf.Tensor, preds: tf.Tensor, *, beta: float) -> tf.Tensor:
    """Smooth L1 summed over the last axis: ``[..., 4]`` -> ``[...]``.

    Quadratic ``0.5 x^2 / beta`` for ``|x| < beta``, linear ``|x| - 0.5 beta`` beyond.
    """
    x = tf.abs(tf.cast(preds, tf.float32) - tf.cast(targets, tf.float32))
    per = tf.where(x < beta, 0.5 * x * x / beta, x - 0.5 * beta)
    return tf.reduce_sum(per, axis=-1)


def giou_loss(boxes_true: tf.Tensor, boxes_pred: tf.Tensor) -> tf.Tensor:
    """``1 - GIoU`` of ``[..., 4]`` xyxy boxes -> ``[...]`` in [0, 2]."""
    return 1.0 - giou(tf.cast(boxes_true, tf.float32), tf.cast(boxes_pred, tf.float32))


def detection_losses(
    targets: AnchorTargets,
    cls_logits: tf.Tensor,
    box_deltas: tf.Tensor,
    anchors: tf.Tensor,
    *,
    alpha: float,
    gamma: float,
    box_loss: str,
    smooth_l1_beta: float,
    box_loss_weight: float,
    variances: Sequence[float],
    normalizer: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """Focal + box loss for a batch.

    Args:
      targets: from :func:`detect.ops.matcher.assign_targets`.
      cls_logits: ``[B, N, K]`` logits.
      box_deltas: ``[B, N, 4]`` predicted deltas.
      anchors: ``[N, 4]`` xyxy (used by the GIoU loss to decode predictions).
      box_loss: ``"smooth_l1"`` on deltas or ``"giou"`` on decoded boxes.
      normalizer: divide by this instead of this batch's positive count (a
        distributed step passes the count over all replicas).

    Returns:
      ``{"cls_loss", "box_loss", "loss"}`` scalar float32 tensors, where
      ``loss = cls_loss + box_loss_weight * box_loss``.
    """
    num_classes = tf.shape(cls_logits)[-1]
    positive = targets.positive
    counted = ~targets.ignored
    onehot = tf.one_hot(tf.maximum(targets.cls_targets, 0), num_classes)
    onehot *= tf.cast(positive, tf.float32)[..., None]
    focal = tf.reduce_sum(sigmoid_focal_loss(onehot, cls_logits, alpha=alpha, gamma=gamma), -1)
    focal = tf.where(counted, focal, 0.0)

    if box_loss == "smooth_l1":
        per_anchor = smooth_l1(targets.box_targets, box_deltas, beta=smooth_l1_beta)
    elif box_loss == "giou":
        pred = box_coder.decode(anchors, box_deltas, variances)
        per_anchor = giou_loss(targets.matched_boxes, pred)
    else:
        raise ValueError(f"box_loss must be 'smooth_l1' or 'giou', got {box_loss!r}")
    # where, not multiply: 0 * inf from an unmatched anchor would be NaN.
    per_anchor = tf.where(positive, per_anchor, 0.0)

    num_pos = normalizer if normalizer is not None else tf.maximum(
        tf.reduce_sum(tf.cast(positive, tf.float32)), 1.0)
    cls_loss = tf.reduce_sum(focal) / num_pos
    box = tf.reduce_sum(per_anchor) / num_pos
    return {"cls_loss": cls_loss, "box_loss": box, "loss": cls_loss + box_loss_weight * box}
