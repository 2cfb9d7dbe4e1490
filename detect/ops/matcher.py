"""IoU assignment of anchors to padded ground truth -> training targets.

Ground truth comes padded: ``boxes [B, M, 4]`` xyxy pixels and
``labels [B, M]`` int, where

- ``labels >= 0`` are object classes (background is not a class),
- ``labels == PADDING_LABEL (-1)`` are padding rows, ignored entirely,
- ``labels == IGNORE_REGION_LABEL (-2)`` are crowd / ignore regions: anchors
  that fall mostly inside one are neither positive nor negative.

Each anchor gets one state from its best IoU with a real object:
positive if ``>= positive_iou``, negative if ``< negative_iou``, ignored in
between. With ``allow_low_quality_matches`` every object also claims the
anchor(s) it overlaps most (ties included), even below ``positive_iou``; small
objects would otherwise get no positive anchor at all.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import tensorflow as tf

from detect.ops import box_coder
from detect.ops.boxes import pairwise_ioa, pairwise_iou

#: Fraction of an anchor's area inside a crowd region that makes it "ignore".
CROWD_IOA = 0.5

PADDING_LABEL = -1
IGNORE_REGION_LABEL = -2

#: Values of ``AnchorTargets.cls_targets`` that are not classes.
BACKGROUND = -1
IGNORE = -2


class AnchorTargets(NamedTuple):
    """Per-anchor training targets.

    cls_targets: ``[B, N]`` int32: class index (positive), ``BACKGROUND`` (-1)
      or ``IGNORE`` (-2).
    box_targets: ``[B, N, 4]`` encoded deltas; zero where not positive.
    matched_boxes: ``[B, N, 4]`` xyxy of the matched object; zero where not
      positive (used by the GIoU loss).
    """

    cls_targets: tf.Tensor
    box_targets: tf.Tensor
    matched_boxes: tf.Tensor

    @property
    def positive(self) -> tf.Tensor:
        return self.cls_targets >= 0

    @property
    def ignored(self) -> tf.Tensor:
        return tf.equal(self.cls_targets, IGNORE)


def assign_targets(
    anchors: tf.Tensor,
    gt_boxes: tf.Tensor,
    gt_labels: tf.Tensor,
    *,
    positive_iou: float,
    negative_iou: float,
    allow_low_quality_matches: bool,
    variances: Sequence[float],
    crowd_ioa: float = CROWD_IOA,
    trim_padding: bool = False,
    anchor_iou: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None,
) -> AnchorTargets:
    """Match ``anchors [N, 4]`` to ``gt_boxes [B, M, 4]`` / ``gt_labels [B, M]``.

    Images with no objects (all padding, or ``M == 0``) give all-background
    targets. Non-finite ground-truth boxes never match anything.

    ``trim_padding``: first drop the columns past the batch's last
    non-padding row (the targets are identical: a padding row has IoU 0 with
    every anchor and claims none). Training pads every image to
    ``data.max_boxes``, the densest whole image's count, while a crop holds a
    fraction of it, and the ``[B, N, M]`` IoU work is most of a CPU training
    step's loss. The trimmed ``M`` is known only at run time: leave it off
    under XLA (``jit_compile``), which needs static shapes.

    ``anchor_iou(boxes [B, M, 4], valid [B, M]) -> [B, N, M]``: a faster IoU of ``anchors``
    with finite boxes that equals :func:`~detect.ops.boxes.pairwise_iou` (the model passes
    :meth:`AnchorGenerator.pairwise_iou`, which knows the anchors' grid); None: the general one.
    """
    if negative_iou > positive_iou:
        raise ValueError(f"negative_iou {negative_iou} > positive_iou {positive_iou}")
    anchors = tf.cast(anchors, tf.float32)
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_labels = tf.cast(gt_labels, tf.int32)
    if trim_padding:
        rows = tf.range(1, tf.shape(gt_labels)[1] + 1)[None]
        last = tf.reduce_max(tf.where(tf.not_equal(gt_labels, PADDING_LABEL), rows, 0))
        gt_boxes, gt_labels = gt_boxes[:, :last], gt_labels[:, :last]
    # One extra padding row guarantees M >= 1, so the reductions below are
    # defined for images with no ground truth at all.
    gt_boxes = tf.pad(gt_boxes, [[0, 0], [0, 1], [0, 0]])
    gt_labels = tf.pad(gt_labels, [[0, 0], [0, 1]], constant_values=PADDING_LABEL)
    finite = tf.reduce_all(tf.math.is_finite(gt_boxes), axis=-1)  # [B, M]
    is_object = (gt_labels >= 0) & finite
    is_crowd = tf.equal(gt_labels, IGNORE_REGION_LABEL) & finite
    safe_boxes = tf.where(finite[..., None], gt_boxes, tf.zeros_like(gt_boxes))

    if anchor_iou is None:
        iou = pairwise_iou(anchors, safe_boxes, b_valid=is_object)  # [B, N, M]
    else:
        iou = anchor_iou(safe_boxes, is_object)
    best_gt = tf.argmax(iou, axis=-1, output_type=tf.int32)  # [B, N]
    best_iou = tf.gather(iou, best_gt, batch_dims=2)  # [B, N]: one pass over the IoU, not two

    positive = best_iou >= positive_iou
    negative = best_iou < negative_iou
    if allow_low_quality_matches:
        per_gt_best = tf.reduce_max(iou, axis=1, keepdims=True)  # [B, 1, M]
        # An object that overlaps no anchor claims none: 2 is above every IoU.
        per_gt_best = tf.where(per_gt_best > 0.0, per_gt_best, 2.0)
        positive |= tf.reduce_any(tf.equal(iou, per_gt_best), axis=-1)

    # Anchors mostly inside a crowd region are ignored unless they are positive
    # (the [B, N, M] IoA only for a batch that has a crowd region).
    def crowd_cover():
        in_crowd = pairwise_ioa(anchors, safe_boxes)  # [B, N, M]
        in_crowd = tf.where(is_crowd[:, None, :], in_crowd, tf.zeros_like(in_crowd))
        return tf.reduce_max(in_crowd, axis=-1)

    cover = tf.cond(tf.reduce_any(is_crowd), crowd_cover, lambda: tf.zeros_like(best_iou))
    negative &= ~(cover >= crowd_ioa)
    negative &= ~positive

    matched_labels = tf.gather(gt_labels, best_gt, batch_dims=1)  # [B, N]
    cls_targets = tf.where(
        positive,
        matched_labels,
        tf.where(negative, tf.fill(tf.shape(best_gt), BACKGROUND), IGNORE),
    )
    matched = tf.gather(safe_boxes, best_gt, batch_dims=1)  # [B, N, 4]
    pos4 = positive[..., None]
    matched = tf.where(pos4, matched, tf.zeros_like(matched))
    deltas = box_coder.encode(anchors, matched, variances)
    deltas = tf.where(pos4, deltas, tf.zeros_like(deltas))
    return AnchorTargets(cls_targets, deltas, matched)
