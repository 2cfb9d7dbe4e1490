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

The candidates, the (box, class) pairs above the score threshold cut to
``pre_nms_top_k`` per image, come from :mod:`detect.ops.nms_candidates`.
Candidates of different classes never suppress each other, so they are laid
out on a grid whose rows hold whole classes (:func:`_grid`) and each row of
``m`` slots is its own ``[m, m]`` problem: with several classes far less work
than one ``[k, k]``. Under XLA (``static_shapes``) the ``[k, k]`` problem is
solved as it is.

No ``tf.image.*non_max_suppression*`` is used; tests compare against a
pure-Python greedy reference and against ``tf.image.non_max_suppression``.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from detect.ops.boxes import pairwise_iou
from detect.ops.nms_candidates import (
    Pairs,
    candidate_pairs,
    dims,
    pooled_candidates,
    precedence_key,
    xla,
)


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


_dense_keep = xla(_keep_mask)


def _usable(present, scores, cand):
    """``[B, k]``: candidates that may be kept, suppress and vote: present (above the score
    threshold, or a filled grid slot), with a finite score and a finite box."""
    return present & tf.math.is_finite(scores) & tf.reduce_all(tf.math.is_finite(cand), axis=-1)


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


_next_fit_jit = xla(_next_fit)


def _grid(pairs: Pairs, b, num_classes):
    """Lay class-major ``pairs`` out on a ``[B, R, m]`` grid whose rows hold whole classes
    (``m`` the most pairs of one class in an image, rounded up by :func:`_size_bucket`;
    classes packed into rows by :func:`_next_fit`): a class's pairs take consecutive slots
    in box order, their rank within (class, image) read off the class-major order.

    Returns ``[B, R * m, 4]`` int32: score bits, box, class, 1 (0 in empty slots), and
    ``m``. Candidates of different classes never suppress each other, so greedy NMS over
    each row of ``m`` slots equals NMS over all pairs: with several classes, far less work.
    """
    key = pairs.cls * b + pairs.image  # non-decreasing
    per_key = tf.math.bincount(key, minlength=b * num_classes, maxlength=b * num_classes)
    rank = tf.range(tf.shape(key)[0]) - tf.gather(tf.cumsum(per_key, exclusive=True), key)
    counts = tf.transpose(tf.reshape(per_key, [num_classes, b]))  # [B, K]
    m = _size_bucket(tf.reduce_max(counts), 16)
    row, start, rows = _next_fit_jit(counts, tf.zeros([m]))
    where = tf.stack([pairs.image, pairs.cls], 1)
    at = tf.stack([pairs.image, tf.gather_nd(row, where), tf.gather_nd(start, where) + rank], 1)
    values = tf.stack([tf.bitcast(pairs.score, tf.int32), pairs.box, pairs.cls, tf.ones_like(pairs.cls)], 1)
    grid = tf.scatter_nd(at, values, tf.stack([b, rows, m, 4]))  # empty slots stay 0
    return tf.reshape(grid, [b, rows * m, 4]), m


def _grid_keep(grid, cand, iou_threshold, num_classes, width):
    """Greedy NMS on each row of :func:`_grid`'s ``grid [B, R * m, 4]`` (``m`` = ``width``'s
    length, a compile-time constant), boxes ``cand [B, R * m, 4]`` -> the precedence key of
    each kept pair (:func:`precedence_key`; ``int64`` min where not kept) ``[B, R * m]``,
    and the number kept ``[B]``. One XLA call: validity, keep mask and key fused."""
    m = tf.shape(width)[0]
    scores, box, cls = tf.bitcast(grid[..., 0], tf.float32), grid[..., 1], grid[..., 2]
    valid = _usable(grid[..., 3] > 0, scores, cand)
    keep = tf.reshape(_keep_mask(tf.reshape(cand, [-1, m, 4]), tf.reshape(cls, [-1, m]), tf.reshape(valid, [-1, m]),
                                 tf.reshape(scores, [-1, m]), iou_threshold), tf.shape(valid))
    key = precedence_key(scores, box, cls, num_classes)
    return tf.where(keep, key, tf.int64.min), tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)


_grid_keep_jit = xla(_grid_keep)


def vote_boxes(kept: tf.Tensor, kept_cls: tf.Tensor, cand: tf.Tensor, cand_cls: tf.Tensor,
               cand_scores: tf.Tensor, cand_valid: tf.Tensor, vote_iou: float) -> tf.Tensor:
    """Box voting (Gidaris and Komodakis, 2015): each kept box becomes the score-weighted mean
    of the valid candidates of its class whose IoU with it is at least ``vote_iou``, itself
    included, most of them the boxes it suppressed. Scores and labels are not changed.

    The many overlapping candidates of one object are noisy estimates of its box; their mean
    is a better one than the single best-scoring box, so boxes become more precise (higher
    AP at IoU 0.75) at no cost in recall.

    Args:
      kept: ``[B, d, 4]`` xyxy boxes NMS kept; kept_cls: ``[B, d]`` their classes.
      cand: ``[B, k, 4]`` xyxy candidates, cand_cls / cand_scores / cand_valid ``[B, k]``
        (invalid candidates, e.g. NaN boxes or empty slots, never vote).
      vote_iou: in (0, 1].

    Returns:
      ``[B, d, 4]``: the voted boxes; a kept box no candidate votes for (a zero-area box,
      whose IoU with itself is 0) is returned as it was.
    """
    safe = tf.where(cand_valid[..., None], cand, 0.0)  # 0 * NaN would poison the sum
    same = tf.equal(kept_cls[:, :, None], cand_cls[:, None, :]) & cand_valid[:, None, :]
    votes = same & (pairwise_iou(kept, safe) >= vote_iou)  # [B, d, k]
    weights = tf.where(votes, cand_scores[:, None, :], 0.0)
    total = tf.reduce_sum(weights, axis=-1, keepdims=True)  # [B, d, 1]
    mean = tf.linalg.matmul(weights, safe) / tf.maximum(total, 1e-30)
    return tf.where(total > 0, mean, kept)


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
    vote_iou: float = 0.0,
) -> NMSResult:
    """Class-aware (or class-agnostic) exact greedy NMS over a batch.

    Args:
      boxes: ``[B, N, 4]`` xyxy boxes (any consistent units), shared by all
        classes; with ``decode``, any per-box rows ``[B, N, R]`` it turns into
        boxes.
      scores: ``[B, N, K]`` per-class scores (e.g. sigmoid probabilities);
        ``N * K`` below 2^31.
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
      vote_iou: 0 (off), or box voting after NMS (:func:`vote_boxes`): each kept box
        becomes the score-weighted mean of the candidates of its class (its class-agnostic
        group with ``agnostic``) overlapping it with IoU >= ``vote_iou``. Which
        detections are kept, their scores and labels are the same either way.

    Returns:
      :class:`NMSResult` with fixed shapes ``[B, D, ...]``, detections sorted
      by descending score.
    """
    boxes = tf.cast(boxes, tf.float32)
    scores = tf.cast(scores, tf.float32)
    b, n, _ = dims(boxes)
    if agnostic:
        best_class = tf.argmax(scores, axis=-1, output_type=tf.int32)  # [B, N]
        scores = tf.reduce_max(scores, axis=-1, keepdims=True)  # one "class": suppression ignores labels
    threshold = tf.constant(score_threshold, tf.float32)
    iou = tf.constant(iou_threshold, tf.float32)

    def candidates(box_idx):  # [B, k] -> [B, k, 4]
        def gather():
            cand = tf.gather(boxes, box_idx, batch_dims=1)
            return cand if decode is None else tf.cast(decode(cand, box_idx), tf.float32)

        # no boxes at all: the grid's empty slots have nothing to gather
        if isinstance(n, int):
            return gather() if n > 0 else tf.zeros(tf.concat([tf.shape(box_idx), [4]], 0))
        return tf.cond(n > 0, gather, lambda: tf.zeros(tf.concat([tf.shape(box_idx), [4]], 0)))

    if static_shapes:  # columns [B, k] in precedence order; ties by column
        top_scores, box_idx, cls, count = pooled_candidates(scores, pre_nms_top_k, threshold)
        cand = candidates(box_idx)
        valid = _usable(top_scores > score_threshold, top_scores, cand)
        keep = _dense_keep(cand, cls, valid, top_scores, iou)
        order = tf.where(keep, top_scores, -float("inf"))  # top_k ranks equal scores by column
        kept = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
    else:  # the pairs above the threshold on a grid of whole classes
        pairs = candidate_pairs(scores, pre_nms_top_k, threshold)
        num_classes = dims(scores)[2]
        grid, m = _grid(pairs, b, num_classes)
        top_scores, box_idx, cls = tf.bitcast(grid[..., 0], tf.float32), grid[..., 1], grid[..., 2]
        cand = candidates(box_idx)
        if isinstance(b, int) and b < 2:
            order, kept = _grid_keep_jit(grid, cand, iou, num_classes, tf.zeros([m]))
        else:  # two XLA calls on the two halves of the batch, which the executor runs at once
            halves = [_grid_keep_jit(grid[i:j], cand[i:j], iou, num_classes, tf.zeros([m]))
                      for i, j in ((0, b // 2), (b // 2, b))]
            order, kept = (tf.concat(x, 0) for x in zip(*halves))
        count = pairs.count
        valid = None if not vote_iou else _usable(grid[..., 3] > 0, top_scores, cand)  # as _grid_keep's
    group = cls  # what suppresses what: one group under agnostic
    if agnostic:
        cls = tf.gather(best_class, box_idx, batch_dims=1)

    # The first D kept candidates in precedence order (``order``: larger first, the
    # dropped ones at the type's minimum).
    d = tf.minimum(max_detections, tf.shape(order)[1])
    _, sel = tf.math.top_k(order, k=d, sorted=True)  # [B, d]
    num = tf.minimum(kept, d)
    live = tf.range(d)[None, :] < num[:, None]

    out_boxes = tf.gather(cand, sel, batch_dims=1)
    if vote_iou:
        out_boxes = vote_boxes(out_boxes, tf.gather(group, sel, batch_dims=1), cand, group, top_scores,
                               valid, vote_iou)
    out_boxes = tf.where(live[..., None], out_boxes, 0.0)
    out_scores = tf.where(live, tf.gather(top_scores, sel, batch_dims=1), 0.0)
    out_labels = tf.where(live, tf.gather(cls, sel, batch_dims=1), -1)
    # Pad to exactly D rows; reshape pins the static shape for callers.
    pad = max_detections - d
    return NMSResult(
        boxes=tf.reshape(tf.pad(out_boxes, [[0, 0], [0, pad], [0, 0]]), [b, max_detections, 4]),
        scores=tf.reshape(tf.pad(out_scores, [[0, 0], [0, pad]]), [b, max_detections]),
        labels=tf.reshape(
            tf.pad(tf.cast(out_labels, tf.int32), [[0, 0], [0, pad]], constant_values=-1),
            [b, max_detections],
        ),
        num_detections=num,
        num_candidates=count,
    )
