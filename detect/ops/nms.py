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
    matter are counted in the pool (see :func:`_pooled_candidates`)."""
    box_max = tf.reduce_max(scores, axis=2)
    return box_max, tf.reduce_sum(tf.cast(box_max > score_threshold, tf.int32), axis=1)


_scan_jit = _jit(_scan)


def _scan_any(scores, score_threshold):
    """One pass over ``scores [B, N, K]``: whether each box has a pair above the threshold
    ``[B, N]``, and how many boxes do ``[B]`` (cheaper than the maximum)."""
    above = tf.reduce_any(scores > score_threshold, axis=2)
    return above, tf.reduce_sum(tf.cast(above, tf.int32), axis=1)


_scan_any_jit = _jit(_scan_any)


def _scan_any_halves(scores, score_threshold):
    """:func:`_scan_any` as two XLA calls over the two contiguous halves of ``scores``
    (viewed as ``[2B, N / 2, K]``; N odd: one call), which the executor runs at once.
    The scan reads all N * K scores and one core does not saturate memory (sparse load
    of benchmark_ops: one call 1.97-2.07 ms, two 1.67-1.87)."""
    b, n, k = tf.shape(scores)[0], tf.shape(scores)[1], tf.shape(scores)[2]

    def halves():
        rows = tf.reshape(scores, [2 * b, n // 2, k])  # image i's halves are rows 2i, 2i + 1
        first, c1 = _scan_any_jit(rows[:b], score_threshold)
        second, c2 = _scan_any_jit(rows[b:], score_threshold)
        counts = tf.reduce_sum(tf.reshape(tf.concat([c1, c2], 0), [b, 2]), axis=1)
        return tf.reshape(tf.concat([first, second], 0), [b, n]), counts

    return tf.cond(n % 2 == 0, halves, lambda: _scan_any_jit(scores, score_threshold))


def _bucket(count: tf.Tensor, cap) -> tf.Tensor:
    """Largest count over the batch, rounded up to a multiple of _K_BUCKET, at most cap."""
    needed = tf.reduce_max(tf.concat([count, [0]], axis=0))
    needed = (needed + _K_BUCKET - 1) // _K_BUCKET * _K_BUCKET
    return tf.minimum(cap, tf.maximum(needed, _K_BUCKET))


def _top_candidates(scores: tf.Tensor, k, score_threshold, static_shapes: bool):
    """The (box, class) pairs that enter NMS: the top ``k`` of ``scores [B, N, K]`` above
    the threshold -> scores, box idx, class (``[B, k']`` each; padding scores below the
    threshold), and the count of pairs above the threshold before the cut (``[B]``; see
    ``NMSResult.num_candidates``).

    The order of the k' columns is either the precedence order (score descending,
    exactly tied scores by box index then class index, as a stable sort, i.e.
    torchvision's order) or, when nothing was cut, index order; NMS reads
    precedence from scores and column order, so both give the same answer.

    Unless ``static_shapes``, k' shrinks to the most pairs above the score
    threshold in any image of the batch (rounded up to a multiple of 128):
    candidates below the threshold can never be kept, and the NMS work grows
    with k'. When no image has more than ``k`` boxes above the threshold (the
    common case of a trained detector) the pairs are gathered directly
    (:func:`_gathered_candidates`), else ranked in two top-k stages
    (:func:`_pooled_candidates`); both give the same candidates.
    """
    if static_shapes:
        box_max, boxes_above = _scan(scores, score_threshold)
        return _pooled_candidates(scores, box_max, boxes_above, k, score_threshold, True)
    above, boxes_above = _scan_any_halves(scores, score_threshold)
    return tf.cond(
        tf.reduce_max(tf.concat([boxes_above, [0]], 0)) <= k,
        lambda: _gathered_candidates(scores, above, k, score_threshold),
        lambda: _pooled_candidates(scores, _scan_jit(scores, score_threshold)[0], boxes_above,
                                   k, score_threshold, False))


def _gathered_candidates(scores, above, k, score_threshold):
    """Every pair above the threshold, found with two ``tf.where`` (boxes, then their
    classes). In index order when no image has more than ``k``; else each image's pairs
    are put in precedence order and cut at ``k``."""
    b = tf.shape(scores)[0]
    box = tf.where(above)  # [P, 2] (image, box), in index order
    box_scores = tf.gather_nd(scores, box)  # [P, K]
    pair = tf.where(box_scores > score_threshold)  # [Q, 2] (row of `box`, class), index order
    pair_scores = tf.gather_nd(box_scores, pair)
    image = tf.cast(tf.gather(box[:, 0], pair[:, 0]), tf.int32)
    box_idx = tf.cast(tf.gather(box[:, 1], pair[:, 0]), tf.int32)
    cls = tf.cast(pair[:, 1], tf.int32)
    count = tf.math.bincount(image, minlength=b, maxlength=b)  # [B]
    k_pairs = tf.minimum(_bucket(tf.minimum(count, k), k), tf.size(scores[0]))  # no pairs: none

    offsets = tf.cumsum(count, exclusive=True)
    # score (its bits), box and class of each pair in one int32 row: one scatter, not three
    rows = tf.stack([tf.bitcast(pair_scores, tf.int32), box_idx, cls], 1)
    empty = tf.stack([tf.bitcast(tf.constant(-float("inf"), scores.dtype), tf.int32), 0, 0])

    def place(at, values):
        """``values [Q', 3]`` to columns ``at [Q', 2]`` (image, column) of ``[B, k', 3]``."""
        return tf.tensor_scatter_nd_update(tf.tile(empty[None, None], [b, k_pairs, 1]), at, values)

    def in_index_order():
        return place(tf.stack([image, tf.range(tf.shape(image)[0]) - tf.gather(offsets, image)], 1), rows)

    def in_precedence_order_cut():
        order = tf.argsort(-pair_scores, stable=True)
        order = tf.gather(order, tf.argsort(tf.gather(image, order), stable=True))  # by image, then precedence
        img = tf.gather(image, order)
        rank = tf.range(tf.shape(order)[0]) - tf.gather(offsets, img)
        inside = rank < k  # the pre-NMS cut
        return place(tf.boolean_mask(tf.stack([img, rank], 1), inside),
                     tf.gather(rows, tf.boolean_mask(order, inside)))

    placed = tf.cond(tf.reduce_max(tf.concat([count, [0]], 0)) <= k, in_index_order, in_precedence_order_cut)
    top_scores, boxes, classes = tf.bitcast(placed[..., 0], scores.dtype), placed[..., 1], placed[..., 2]
    return top_scores, boxes, classes, count


def _pooled_candidates(scores, box_max, boxes_above, k, score_threshold, static_shapes: bool):
    """Two cheap top-k stages instead of one over all N * K pairs, with the same result:
    let ``U`` be the k-th largest per-box maximum score. At least k pairs score
    ``>= U``, so every pair in the top k scores ``>= U`` and its box is among the k
    boxes with the largest maximum. Only those k boxes' k * K pairs need ranking.
    Which of several boxes tied at the k-th largest maximum enter the pool is
    unspecified."""
    b = tf.shape(scores)[0]
    n = tf.shape(scores)[1]
    num_classes = tf.shape(scores)[2]
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


def greedy_keep(suppresses: tf.Tensor, valid: tf.Tensor, earlier: tf.Tensor | None = None) -> tf.Tensor:
    """Solve the greedy recurrence.

    Args:
      suppresses: ``[B, k, k]`` bool, ``[b, j, i]`` true when candidate ``j``
        would suppress ``i`` (only entries where ``j`` comes earlier are read).
      valid: ``[B, k]`` bool, candidates eligible at all.
      earlier: ``[B, k, k]`` bool, ``[b, j, i]`` true when ``j`` is visited
        before ``i`` (a strict total order); default: column order (``j < i``).

    Returns:
      ``[B, k]`` bool keep mask, identical to sequential greedy NMS.
    """
    k = tf.shape(valid)[1]
    if earlier is None:
        earlier = tf.linalg.band_part(tf.ones([k, k], tf.bool), 0, -1)  # j <= i
        earlier = (earlier & ~tf.eye(k, dtype=tf.bool))[None]  # j < i
    s = tf.cast(suppresses & earlier & valid[:, :, None], tf.float32)

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


def _precedes(scores):
    """``[B, k, k]``: candidate ``j`` is visited before ``i`` (higher score; on a tie the
    lower column)."""
    k = tf.shape(scores)[1]
    lower = tf.range(k)[:, None] < tf.range(k)[None, :]
    s_j, s_i = scores[:, :, None], scores[:, None, :]
    return (s_j > s_i) | ((s_j == s_i) & lower[None])


def _keep_mask(cand, cls, valid, scores, iou_threshold):
    """Greedy keep mask for candidates ``[B, k, 4]`` / ``[B, k]`` visited in precedence
    order (:func:`_precedes`), whatever their column order."""
    same_class = tf.equal(cls[:, :, None], cls[:, None, :])
    suppresses = (pairwise_iou(cand, cand) > iou_threshold) & same_class
    return greedy_keep(suppresses, valid, _precedes(scores))


_dense_keep = _jit(_keep_mask)


def _size_bucket(x, floor: int):
    """Smallest of 16, 20, 24, 32, 40, 48, 64, 80, ... (2^n times 1, 1.25 or 1.5) that is
    >= max(x, floor): few distinct XLA shapes, at most 25% padding."""
    x = tf.maximum(tf.cast(x, tf.float32), float(floor))
    p = tf.round(2.0 ** tf.math.ceil(tf.math.log(x) / tf.math.log(2.0)))  # power of two >= x
    size = tf.where(p * 0.75 >= x, p * 0.75, p)
    size = tf.where(p * 0.625 >= x, p * 0.625, size)
    return tf.cast(size, tf.int32)


def _next_fit(counts, width):
    """Classes packed into rows of ``m`` slots (``m`` = ``width``'s length, at least the
    largest count), in class order, a new row when the next class does not fit (next fit):
    ``counts`` ``[B, K]`` -> ``(row, start)`` ``[B, K]`` each (a class's row and first slot)
    and the number of rows for the whole batch, rounded up by :func:`_size_bucket`.

    Packing saves nothing when most rows would hold one class anyway (classes of more
    than ``m / 2`` candidates): then every class gets its own row, the plain layout."""
    m = tf.shape(width)[0]
    b, num_classes = tf.shape(counts)[0], tf.shape(counts)[1]

    def body(c, row, fill, rows, starts):
        n = counts[:, c]
        new_row = fill + n > m
        row = tf.where(new_row, row + 1, row)
        start = tf.where(new_row, 0, fill)
        return (c + 1, row, start + n, rows.write(c, row), starts.write(c, start))

    zeros = tf.zeros([b], tf.int32)
    _, last, fill, rows, starts = tf.while_loop(
        lambda c, *_: c < num_classes, body,
        (0, zeros, zeros, tf.TensorArray(tf.int32, num_classes), tf.TensorArray(tf.int32, num_classes)))
    needed = _size_bucket(tf.reduce_max(last + tf.cast(fill > 0, tf.int32)), 1)
    packed = needed < num_classes
    row = tf.where(packed, tf.transpose(rows.stack()), tf.range(num_classes)[None, :])
    start = tf.where(packed, tf.transpose(starts.stack()), 0)
    return row, start, tf.minimum(needed, num_classes)


_next_fit_jit = _jit(_next_fit)


def _grid_keep(cand, scores, group, row, start, iou_threshold, grid):
    """:func:`_keep_mask` solved on a ``[B, R, m]`` grid (``grid``'s shape, so that XLA
    compiles it as constants) whose rows hold whole classes (:func:`_next_fit`).

    ``group`` ``[B, k]``: each candidate's class, ``K`` when invalid; ``row``,
    ``start`` ``[B, K]`` where each class goes. A class's candidates take its slots in
    column order (rank by a running count, no sort). Classes sharing a row never
    suppress each other (the class is part of :func:`_keep_mask`'s test).
    """
    b, k = tf.shape(group)[0], tf.shape(group)[1]
    rows, m = tf.shape(grid)[0], tf.shape(grid)[1]
    num_classes = tf.shape(row)[1]
    real = group < num_classes
    c = tf.minimum(group, num_classes - 1)
    one_hot = tf.one_hot(c, num_classes, dtype=tf.int32) * tf.cast(real, tf.int32)[..., None]
    rank = tf.reduce_sum(tf.cumsum(one_hot, axis=1, exclusive=True) * one_hot, axis=2)  # [B, k]
    image = tf.broadcast_to(tf.range(b)[:, None], [b, k])
    # scatter_nd sums: invalid candidates add zeros (box, score, class, validity) to
    # slot (image, 0, 0), which keeps whatever lands there
    at = tf.stack([image, tf.where(real, tf.gather(row, c, batch_dims=1), 0),
                   tf.where(real, tf.gather(start, c, batch_dims=1) + rank, 0)], -1)
    shape = tf.stack([b, rows, m])

    def put(values):
        values = tf.where(tf.reshape(real, tf.concat([[b, k], tf.ones_like(tf.shape(values)[2:])], 0)),
                          values, tf.zeros_like(values))
        return tf.reshape(tf.scatter_nd(at, values, tf.concat([shape, tf.shape(values)[2:]], 0)),
                          tf.concat([[b * rows, m], tf.shape(values)[2:]], 0))

    kept = _keep_mask(put(cand), put(c), put(tf.cast(real, tf.int32)) > 0, put(scores), iou_threshold)
    return tf.gather_nd(tf.reshape(kept, shape), at) & real  # [B, k] in column order


_grid_keep_jit = _jit(_grid_keep)


def _class_keep(cand, cls, valid, scores, iou_threshold, num_classes):
    """The greedy keep mask of :func:`_keep_mask`, solved on a grid of whole classes.

    Candidates of different classes never suppress each other, so the
    ``[k, k]`` problem splits into rows of ``m`` slots, each holding whole
    classes (``m`` the most candidates of one class in the batch, rounded up by
    :func:`_size_bucket`; classes packed by :func:`_next_fit`): with several
    classes far less work, same answer. The single ``[k, k]`` problem is solved
    instead when splitting does not pay (one class, or one class holding most
    candidates).
    """
    if num_classes is None or num_classes < 2:
        return _dense_keep(cand, cls, valid, scores, iou_threshold)
    k = tf.shape(valid)[1]
    group = tf.where(valid, cls, num_classes)
    counts = tf.math.bincount(group, minlength=num_classes + 1, maxlength=num_classes + 1,
                              axis=-1)
    m = _size_bucket(tf.reduce_max(counts[:, :num_classes]), 16)
    row, start, r = _next_fit_jit(counts[:, :num_classes], tf.zeros([m]))

    def split():
        return _grid_keep_jit(cand, scores, group, row, start, iou_threshold, tf.zeros([r, m]))

    return tf.cond(2 * r * m * m <= k * k, split,
                   lambda: _dense_keep(cand, cls, valid, scores, iou_threshold))


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
    decode=None,
) -> NMSResult:
    """Class-aware (or class-agnostic) exact greedy NMS over a batch.

    Args:
      boxes: ``[B, N, 4]`` xyxy boxes (any consistent units), shared by all
        classes; with ``decode``, any per-box rows ``[B, N, R]`` it turns into
        boxes.
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
      decode: optional ``decode(rows [B, k, R], box_idx [B, k]) -> [B, k, 4]``
        xyxy, applied to the candidates' rows of ``boxes`` only: a detector's
        box deltas are decoded for the k candidates, not for all N anchors
        (element-wise, so the boxes equal decoding all N, then gathering).

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
    if decode is not None:
        cand = tf.cast(decode(cand, box_idx), tf.float32)
    valid = (top_scores > score_threshold) & tf.math.is_finite(top_scores)
    valid &= tf.reduce_all(tf.math.is_finite(cand), axis=-1)

    iou = tf.constant(iou_threshold, tf.float32)
    if static_shapes:
        keep = _dense_keep(cand, cls, valid, top_scores, iou)
    else:
        keep = _class_keep(cand, cls, valid, top_scores, iou,
                           None if agnostic else scores.shape[-1])
    if agnostic:
        cls = tf.gather(best_class, box_idx, batch_dims=1)

    # The first D kept candidates in precedence order: top_k ranks equal scores by column.
    k = tf.shape(keep)[1]
    d = tf.minimum(max_detections, k)
    _, sel = tf.math.top_k(tf.where(keep, top_scores, -float("inf")), k=d, sorted=True)  # [B, d]
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
