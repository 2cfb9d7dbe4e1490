"""Batched, class-aware (optionally class-agnostic), exact greedy non-maximum suppression.

Greedy NMS visits candidates in descending score order and keeps one unless
an already kept candidate *of the same class* overlaps it with
IoU > ``iou_threshold``. Written as a recurrence over the sorted candidates:

    keep[i] = valid[i] and not any(keep[j] and S[j, i] for j < i)

where ``S[j, i]`` says candidate ``j`` would suppress ``i``. The recurrence has
exactly one solution (it is defined index by index), and it is the fixed point
of ``keep <- F(keep)``. Iterating ``F`` from ``keep = valid`` fixes at least one
more leading index per step, so it reaches the greedy answer after at most
``k`` steps; in practice after a handful (the length of the longest
suppression chain). Each step is one batched matrix-vector product, so the
whole thing is a few dense ops on ``[B, k, k]`` with no per-box Python loop.

No ``tf.image.*non_max_suppression*`` is used; tests compare against a
pure-Python greedy reference and against ``tf.image.non_max_suppression``.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import tensorflow as tf

from detect.ops.boxes import pairwise_iou


class NMSResult(NamedTuple):
    """Fixed-shape NMS output; rows past ``num_detections`` are padding.

    boxes: ``[B, D, 4]`` float32 xyxy (padding rows are 0).
    scores: ``[B, D]`` float32, descending per image (padding rows are 0).
    labels: ``[B, D]`` int32 class index (padding rows are -1).
    num_detections: ``[B]`` int32.
    num_candidates: ``[B]`` int32, (box, class) pairs above the score
      threshold before ``pre_nms_top_k`` (more than it: that cap cut some).
      Exact up to ``pre_nms_top_k`` boxes above the threshold; beyond that a
      lower bound that is still more than ``pre_nms_top_k``.
    """

    boxes: tf.Tensor
    scores: tf.Tensor
    labels: tf.Tensor
    num_detections: tf.Tensor
    num_candidates: tf.Tensor


#: Candidate counts are rounded up to a multiple of this, so the XLA-compiled
#: dense part sees only a handful of distinct shapes.
_K_BUCKET = 128


def _jit(fn):
    # XLA fuses chains of element-wise ops into one kernel (about 10x faster
    # on CPU than op by op). top_k stays outside: XLA's CPU top_k is two
    # orders of magnitude slower than TF's. DETECT_NMS_JIT=0 turns
    # compilation off (for platforms without XLA).
    return tf.function(
        fn, jit_compile=os.environ.get("DETECT_NMS_JIT", "1") != "0", reduce_retracing=True
    )


def _scan(scores, score_threshold):
    """One pass over ``scores [B, N, K]``: per-box maximum ``[B, N]`` and the
    number of boxes whose maximum is above the threshold ``[B]``.

    Boxes, not (box, class) pairs, are counted here: counting pairs over all
    N * K scores costs twice the maximum itself (measured), and the pairs that
    matter are counted in the pool (see :func:`_top_candidates`)."""
    box_max = tf.reduce_max(scores, axis=2)
    return box_max, tf.reduce_sum(tf.cast(box_max > score_threshold, tf.int32), axis=1)


_scan_jit = _jit(_scan)


def _bucket(count: tf.Tensor, cap) -> tf.Tensor:
    """Largest count over the batch, rounded up to a multiple of _K_BUCKET, at most cap."""
    needed = tf.reduce_max(tf.concat([count, [0]], axis=0))
    needed = (needed + _K_BUCKET - 1) // _K_BUCKET * _K_BUCKET
    return tf.minimum(cap, tf.maximum(needed, _K_BUCKET))


def _top_candidates(scores: tf.Tensor, k, score_threshold, static_shapes: bool):
    """Top ``k`` (box, class) pairs of ``scores [B, N, K]`` -> scores, box idx, class,
    and the count of pairs above the threshold before the cut (``[B]``; see
    ``NMSResult.num_candidates``).

    Two cheap stages instead of one top_k over all N * K pairs, with the same
    result: let ``U`` be the k-th largest per-box maximum score. At least k
    pairs score ``>= U``, so every pair in the top k scores ``>= U`` and its box
    is among the k boxes with the largest maximum. Only those k boxes' k * K
    pairs need ranking. Exactly tied scores rank by box index, then class
    index (a stable sort's order, as torchvision's NMS); which of several
    boxes tied at the k-th largest maximum enter the pool is unspecified.

    Unless ``static_shapes``, k shrinks to the most pairs above the score
    threshold in any image of the batch (rounded up to a multiple of 128):
    candidates below the threshold can never be kept, and the dense NMS
    work grows with k squared.
    """
    b = tf.shape(scores)[0]
    n = tf.shape(scores)[1]
    num_classes = tf.shape(scores)[2]
    box_max, boxes_above = (_scan if static_shapes else _scan_jit)(scores, score_threshold)
    k_boxes = tf.minimum(k, n)
    if not static_shapes:
        k_boxes = tf.minimum(k_boxes, _bucket(boxes_above, k))
    _, box_pool = tf.math.top_k(box_max, k=k_boxes, sorted=False)
    # Pool in box order, so that top_k (lower index first among equal values)
    # ranks exactly tied pairs by (box index, class index): the tie rule.
    box_pool = tf.sort(box_pool, axis=1)
    pool_scores = tf.reshape(tf.gather(scores, box_pool, batch_dims=1), [b, -1])
    k_pairs = tf.minimum(k, tf.shape(pool_scores)[1])
    pairs_above = tf.reduce_sum(tf.cast(pool_scores > score_threshold, tf.int32), axis=1)
    if not static_shapes:
        k_pairs = tf.minimum(k_pairs, _bucket(pairs_above, k))
    # Exact when the pool holds every box above the threshold. Otherwise the pool
    # is k boxes (each with a pair above) and each box left out adds at least one
    # pair: a lower bound that still exceeds k, which is all a cap check needs.
    pairs_total = pairs_above + tf.maximum(boxes_above - k_boxes, 0)
    top_scores, pair_idx = tf.math.top_k(pool_scores, k=k_pairs, sorted=True)
    box_idx = tf.gather(box_pool, pair_idx // num_classes, batch_dims=1)
    return top_scores, box_idx, pair_idx % num_classes, pairs_total


def greedy_keep(suppresses: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Solve the greedy recurrence for score-sorted candidates.

    Args:
      suppresses: ``[B, k, k]`` bool, ``[b, j, i]`` true when candidate ``j``
        would suppress ``i`` (only ``j < i`` entries are read).
      valid: ``[B, k]`` bool, candidates eligible at all.

    Returns:
      ``[B, k]`` bool keep mask, identical to sequential greedy NMS.
    """
    k = tf.shape(valid)[1]
    earlier = tf.linalg.band_part(tf.ones([k, k], tf.bool), 0, -1)  # j <= i
    earlier &= ~tf.eye(k, dtype=tf.bool)  # j < i
    s = tf.cast(suppresses & earlier[None] & valid[:, :, None], tf.float32)

    def step(keep):
        hit = tf.linalg.matvec(s, tf.cast(keep, tf.float32), transpose_a=True)
        return valid & (hit < 0.5)

    def cond(i, keep, prev):
        return (i < k) & tf.reduce_any(keep != prev)

    def body(i, keep, prev):
        return i + 1, step(keep), keep

    keep0 = valid
    _, keep, _ = tf.while_loop(
        cond, body, (tf.constant(0), step(keep0), keep0), maximum_iterations=k
    )
    return keep


def _keep_mask(cand, cls, valid, iou_threshold):
    """Greedy keep mask for score-sorted candidates ``[B, k, 4]`` / ``[B, k]``."""
    same_class = tf.equal(cls[:, :, None], cls[:, None, :])
    suppresses = (pairwise_iou(cand, cand) > iou_threshold) & same_class
    return greedy_keep(suppresses, valid)


_dense_keep = _jit(_keep_mask)


def batched_nms(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    *,
    iou_threshold: float,
    score_threshold: float,
    max_detections: int,
    pre_nms_top_k: int,
    static_shapes: bool = False,
    agnostic: bool = False,
) -> NMSResult:
    """Class-aware (or class-agnostic) exact greedy NMS over a batch.

    Args:
      boxes: ``[B, N, 4]`` xyxy boxes (any consistent units), shared by all
        classes.
      scores: ``[B, N, K]`` per-class scores (e.g. sigmoid probabilities).
      iou_threshold: a kept box suppresses same-class boxes with IoU strictly
        greater than this.
      score_threshold: only pairs with score strictly greater are considered.
      max_detections: ``D``, the fixed output length per image.
      pre_nms_top_k: only the ``pre_nms_top_k`` highest-scoring (box, class)
        pairs per image enter NMS.
      static_shapes: keep every intermediate shape static (needed when the
        caller compiles this function with XLA, ``jit_compile=True``). The
        default sizes the dense work to the candidates above
        ``score_threshold``, which is much faster when few pass; the
        detections are the same either way.

    Returns:
      :class:`NMSResult` with fixed shapes ``[B, D, ...]``, detections sorted
      by descending score.
    """
    boxes = tf.cast(boxes, tf.float32)
    scores = tf.cast(scores, tf.float32)
    if agnostic:
        best_class = tf.argmax(scores, axis=-1, output_type=tf.int32)  # [B, N]
        scores = tf.reduce_max(scores, axis=-1, keepdims=True)  # one "class": suppression ignores labels
    top_scores, box_idx, cls, candidates = _top_candidates(
        scores, pre_nms_top_k, tf.constant(score_threshold, tf.float32), static_shapes
    )
    cand = tf.gather(boxes, box_idx, batch_dims=1)  # [B, k, 4]
    valid = (top_scores > score_threshold) & tf.math.is_finite(top_scores)
    valid &= tf.reduce_all(tf.math.is_finite(cand), axis=-1)

    keep = _dense_keep(cand, cls, valid, tf.constant(iou_threshold, tf.float32))
    if agnostic:
        cls = tf.gather(best_class, box_idx, batch_dims=1)

    # The first D kept candidates, in score order: rank kept ones by position.
    k = tf.shape(keep)[1]
    d = tf.minimum(max_detections, k)
    position = tf.range(k, 0, -1)[None, :]  # earlier = larger
    order_key = tf.where(keep, position, tf.zeros_like(position))
    _, sel = tf.math.top_k(order_key, k=d, sorted=True)  # [B, d]
    num = tf.minimum(tf.reduce_sum(tf.cast(keep, tf.int32), axis=1), d)
    live = tf.range(d)[None, :] < num[:, None]

    out_boxes = tf.where(live[..., None], tf.gather(cand, sel, batch_dims=1), 0.0)
    out_scores = tf.where(live, tf.gather(top_scores, sel, batch_dims=1), 0.0)
    out_labels = tf.where(live, tf.gather(cls, sel, batch_dims=1), -1)
    # Pad to exactly D rows; reshape pins the static shape for callers.
    pad = max_detections - d
    b = tf.shape(boxes)[0]
    return NMSResult(
        boxes=tf.reshape(tf.pad(out_boxes, [[0, 0], [0, pad], [0, 0]]), [b, max_detections, 4]),
        scores=tf.reshape(tf.pad(out_scores, [[0, 0], [0, pad]]), [b, max_detections]),
        labels=tf.reshape(
            tf.pad(tf.cast(out_labels, tf.int32), [[0, 0], [0, pad]], constant_values=-1),
            [b, max_detections],
        ),
        num_detections=num,
        num_candidates=candidates,
    )
