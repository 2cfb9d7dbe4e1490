"""Raw RetinaNet outputs -> detections: decode, sigmoid, clip (unless off), NMS (per class unless agnostic)
with box voting (if on), then the calibrated per-class thresholds (if any)."""

from __future__ import annotations

import tensorflow as tf

from detect.config import PostprocessConfig
from detect.ops import box_coder
from detect.ops.boxes import clip_boxes
from detect.ops.nms import batched_nms

#: Keys of the detections dict returned by ``RetinaNet.predict`` and the export.
DETECTION_KEYS = ("boxes", "scores", "labels", "num_detections", "num_candidates", "capped")


def postprocess(
    cls_logits: tf.Tensor,
    box_deltas: tf.Tensor,
    anchors: tf.Tensor,
    image_size,
    config: PostprocessConfig,
    *,
    variances,
    static_shapes: bool = False,
) -> dict[str, tf.Tensor]:
    """Detections for a batch.

    Args:
      cls_logits: ``[B, N, K]``; box_deltas: ``[B, N, 4]``; anchors: ``[N, 4]``.
      image_size: ``(height, width)`` the boxes are clipped to (input pixels).
      static_shapes: passed to :func:`batched_nms` (True under XLA).

    Returns:
      ``{"boxes" [B, D, 4] xyxy pixels, "scores" [B, D], "labels" [B, D] int32
      (-1 padding), "num_detections" [B] int32, "num_candidates" [B] int32
      (class scores above the threshold before ``pre_nms_top_k``), "capped" [B] bool
      (NMS returned ``max_detections`` and what it cut could have been output)}``.
      With ``config.class_thresholds``, only detections at or above their class's
      threshold are returned (see :func:`_at_class_thresholds`).
    """
    def decode(deltas, box_idx):
        # Only the NMS candidates' deltas: decoding all N anchors cost more than the NMS
        # itself (light config: 13 ms for 4 tiles of 193k anchors, not XLA-fused).
        boxes = box_coder.decode(tf.gather(anchors, box_idx), deltas, variances)
        if config.drop_nonpositive:  # NaN: NMS neither keeps such a box nor lets it suppress
            boxes = tf.where(tf.reduce_any(boxes > 0, axis=-1, keepdims=True), boxes, float("nan"))
        return clip_boxes(boxes, image_size) if config.clip_boxes else boxes

    scores = tf.sigmoid(tf.cast(cls_logits, tf.float32))
    r = batched_nms(
        tf.cast(box_deltas, tf.float32), scores, decode=decode,
        iou_threshold=config.iou_threshold, score_threshold=config.score_threshold,
        max_detections=config.max_detections, pre_nms_top_k=config.pre_nms_top_k,
        static_shapes=static_shapes, agnostic=config.agnostic, vote_iou=config.vote_iou,
    )
    full = r.num_detections >= config.max_detections
    out = {"boxes": r.boxes, "scores": r.scores, "labels": r.labels,
           "num_detections": r.num_detections, "num_candidates": r.num_candidates, "capped": full}
    if config.class_thresholds:
        # the cap cut only what scored below NMS's weakest kept detection: harmless when that
        # one is already below every class's threshold (nothing cut would have been output)
        weakest = tf.gather(r.scores, tf.maximum(r.num_detections - 1, 0), batch_dims=1)
        out["capped"] = full & (weakest >= min(config.class_thresholds))
        out.update(_at_class_thresholds(r.boxes, r.scores, r.labels, config.class_thresholds))
    return out


def _at_class_thresholds(boxes, scores, labels, thresholds) -> dict:
    """The detections whose score reaches their class's threshold, moved to the front in their
    order (descending score), the rest padding again (label -1, score 0, box 0).

    Applied after NMS, so a detection dropped here never suppressed a kept one that NMS would
    have kept anyway: NMS only lets higher scores suppress lower ones, and the thresholds
    only remove low scores. ``boxes [B, D, 4]``, ``scores [B, D]``, ``labels [B, D]``."""
    table = tf.constant(thresholds, tf.float32)
    valid = labels >= 0
    keep = valid & (scores >= tf.gather(table, tf.maximum(labels, 0)))
    # a stable sort on "not kept" keeps the kept ones first and in their order
    order = tf.argsort(tf.cast(~keep, tf.int32), axis=1, stable=True)
    kept = tf.gather(keep, order, batch_dims=1)
    return {"boxes": tf.where(kept[..., None], tf.gather(boxes, order, batch_dims=1), 0.0),
            "scores": tf.where(kept, tf.gather(scores, order, batch_dims=1), 0.0),
            "labels": tf.where(kept, tf.gather(labels, order, batch_dims=1), -1),
            "num_detections": tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)}
