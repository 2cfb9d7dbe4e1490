"""The (box, class) pairs that enter non-maximum suppression, found from ``scores [B, N, K]``.

One pass over all scores (:func:`_scan`, the memory-bound part) finds the boxes with a
pair above the score threshold; then either the pairs are gathered directly (a trained
detector: few boxes above) or ranked in two cheap top-k stages (many boxes above), each
image cut to its ``pre_nms_top_k`` pairs in precedence order. :func:`candidate_pairs`
lists them class-major for :mod:`detect.ops.nms`'s grid; :func:`pooled_candidates` gives
static-shape columns for callers under XLA.

Precedence (the tie rule): score descending, exactly tied scores by box index, then class
index (:func:`precedence_key`).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import tensorflow as tf

#: The pool's sizes (boxes, pairs) are rounded up to a multiple of this, so that
#: they take only a handful of distinct values.
_K_BUCKET = 128


def dims(x: tf.Tensor) -> list:
    """``x``'s dimensions: Python ints where known when tracing (fewer ops in the graph:
    each dynamic one is a node run per call), else scalar tensors."""
    dynamic = tf.shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(x.shape)]


def xla(fn):
    """``fn`` as a ``tf.function`` compiled with XLA (for the NMS ops' fused steps)."""
    # XLA fuses chains of element-wise ops into one kernel (about 10x faster
    # on CPU than op by op). top_k stays outside: XLA's CPU top_k is two
    # orders of magnitude slower than TF's. DETECT_NMS_JIT=0 turns
    # compilation off (for platforms without XLA).
    return tf.function(
        fn, jit_compile=os.environ.get("DETECT_NMS_JIT", "1") != "0", reduce_retracing=True
    )


def _scan(scores, score_threshold):
    """One pass over ``scores [B, N, K]``: per-box maximum ``[B, N]``, whether it is above
    the threshold ``[B, N]``, and how many boxes are ``[B]``.

    Boxes, not (box, class) pairs, are counted here: counting pairs over all N * K scores
    costs about twice the maximum itself (measured), and the pairs that matter are counted
    once they are gathered. Both candidate routes read this one pass (the pooled route
    ranks boxes by their maximum): a second pass over the scores costs as much as the
    whole scan. ``reduce_max`` runs at the memory floor of a plain ``reduce_sum``; a
    boolean ``reduce_any`` was 20% slower on one 2-core Xeon, and anything that selects
    per score before the maximum (to rule NaN out explicitly) more than twice as slow.

    NaN: a NaN pair is never a candidate (pairs are tested one by one when gathered), but
    whether a NaN hides the other scores of its box in this maximum depends on the
    backend (XLA on CPU skipped it in our tests; TensorFlow's own kernel, with
    ``DETECT_NMS_JIT=0``, returns NaN, which drops the box)."""
    box_max = tf.reduce_max(scores, axis=2)
    above = box_max > score_threshold
    return box_max, above, tf.reduce_sum(tf.cast(above, tf.int32), axis=1)


_scan_jit = xla(_scan)


def _scan_halves(scores, score_threshold):
    """:func:`_scan` as two XLA calls over the two contiguous halves of ``scores``, which
    the executor runs at once: where one core does not saturate memory this is faster
    (sparse load of benchmark_ops on one machine: one call 1.97-2.07 ms, two 1.67-1.87;
    on another, equal).

    Returns ``box_max, above, h, counts``: ``box_max`` and ``above`` are the view
    ``[h * B, N / h]`` (image i's halves are rows 2i and 2i + 1; ``h`` = 2, or 1 when N is
    odd) as a pair of its rows ``[:B]`` and ``[B:]`` (then empty), each straight from its
    XLA call; ``counts``: the boxes above the threshold per image ``[B]``.
    """
    b, n, k = dims(scores)
    h = (2 if n % 2 == 0 else 1) if isinstance(n, int) else tf.where(n % 2 == 0, 2, 1)
    rows = tf.reshape(scores, [h * b, n // h, k])
    max1, above1, c1 = _scan_jit(rows[:b], score_threshold)
    max2, above2, c2 = _scan_jit(rows[b:], score_threshold)
    counts = tf.reduce_sum(tf.reshape(tf.concat([c1, c2], 0), [b, h]), axis=1)
    return (max1, max2), (above1, above2), h, counts


def _most(count: tf.Tensor) -> tf.Tensor:
    """Largest of the per-image counts ``[B]`` (0 for an empty batch)."""
    return tf.reduce_max(tf.concat([count, [0]], axis=0))


def _bucket(count: tf.Tensor, cap) -> tf.Tensor:
    """Largest count over the batch, rounded up to a multiple of _K_BUCKET, at most cap."""
    needed = _most(count)
    needed = (needed + _K_BUCKET - 1) // _K_BUCKET * _K_BUCKET
    return tf.minimum(cap, tf.maximum(needed, _K_BUCKET))


class Pairs(NamedTuple):
    """Candidate (box, class) pairs as flat lists ``[Q]``, in class-major order: by class,
    then image, then box index (the order ``detect.ops.nms._grid`` relies on).

    image, box, cls: int32; score: float32 (above the threshold, possibly +inf).
    count: ``[B]`` int32 pairs above the threshold before ``pre_nms_top_k`` (see
    ``detect.ops.nms.NMSResult.num_candidates``).
    """

    image: tf.Tensor
    box: tf.Tensor
    cls: tf.Tensor
    score: tf.Tensor
    count: tf.Tensor


def candidate_pairs(scores: tf.Tensor, k, score_threshold) -> Pairs:
    """The (box, class) pairs that enter NMS: each image's top ``k`` of ``scores [B, N, K]``
    above the threshold, in class-major order.

    When no image has more than ``k`` boxes above the threshold (the common case of a
    trained detector) the pairs are gathered directly (:func:`_gathered_pairs`), else
    ranked in two top-k stages (:func:`_pooled_pairs`); both give the same pairs.
    """
    box_max, above, h, boxes_above = _scan_halves(scores, score_threshold)
    b, n, _ = dims(scores)
    return tf.cond(
        _most(boxes_above) <= k,
        lambda: _gathered_pairs(scores, above, h, k, score_threshold),
        lambda: _pooled_pairs(scores, tf.reshape(tf.concat(box_max, 0), [b, n]), boxes_above, k,
                              score_threshold))


def precedence_key(score, box, cls, num_classes):
    """int64 key, larger first, that orders pairs by precedence: score descending, exactly
    tied scores by box index, then class index (the tie rule). Score bits map to int32 in
    float order (negative floats: magnitude bits flipped; -0 counts as +0); the low 32 bits
    hold ``2^31 - 1 - (box * K + class)``, so ``N * K`` must stay below ``2^31``."""
    bits = tf.where(score == 0.0, 0, tf.bitcast(score, tf.int32))  # not score + 0: XLA folds it
    ordered = tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, 0x7FFFFFFF), bits)
    tie = tf.int32.max - (box * num_classes + cls)
    return tf.cast(ordered, tf.int64) * 2**32 + tf.cast(tie, tf.int64)


def _gathered_pairs(scores, above, h, k, score_threshold) -> Pairs:
    """Every pair above the threshold, found with ``tf.where``: boxes (``above``, the two
    parts of :func:`_scan_halves`, each found as soon as its scan ends), then their
    classes over the transposed rows, which lists them class-major for free. An image with
    more than ``k`` pairs keeps its top ``k`` in precedence order."""
    b, n, num_classes = dims(scores)
    rows = tf.reshape(scores, [h * b, n // h, num_classes])
    at = [tf.cast(tf.where(part), tf.int32) + [[offset, 0]] for part, offset in zip(above, (0, b))]
    at = tf.concat(at, 0)  # [P, 2] (row of the view, column), in index order
    box_scores = tf.gather_nd(rows, at)  # [P, K]
    box = tf.stack([at[:, 0] // h, at[:, 0] % h * (n // h) + at[:, 1]], 1)  # (image, box)
    pair = tf.cast(tf.where(tf.transpose(box_scores > score_threshold)), tf.int32)  # [Q, 2] (class, row)
    cls, row = pair[:, 0], pair[:, 1]
    pairs = Pairs(image=tf.gather(box[:, 0], row), box=tf.gather(box[:, 1], row), cls=cls,
                   score=tf.gather(tf.reshape(box_scores, [-1]), row * num_classes + cls), count=None)
    count = tf.math.bincount(pairs.image, minlength=b, maxlength=b)  # [B]

    def cut():
        # precedence within each image: by key (stable sorts), then by image
        order = tf.argsort(precedence_key(pairs.score, pairs.box, cls, num_classes), direction="DESCENDING",
                           stable=True)
        order = tf.gather(order, tf.argsort(tf.gather(pairs.image, order), stable=True))
        rank = tf.range(tf.shape(order)[0]) - tf.gather(tf.cumsum(count, exclusive=True),
                                                         tf.gather(pairs.image, order))
        inside = tf.scatter_nd(order[:, None], tf.cast(rank < k, tf.int32), tf.shape(order)) > 0
        return [tf.boolean_mask(t, inside) for t in pairs[:4]]  # still class-major

    kept = tf.cond(_most(count) <= k, lambda: list(pairs[:4]), cut)
    return Pairs(*kept, count=count)


def _pooled_pairs(scores, box_max, boxes_above, k, score_threshold) -> Pairs:
    """:func:`_pool`'s top ``k`` pairs (the route for many boxes above the threshold) as a
    class-major list: marked on the pool, then found by ``tf.where`` over the transposed
    marks (the pool is in box order)."""
    b, _, num_classes = dims(scores)
    box_pool, pool_scores, k_pairs, count = _pool(scores, box_max, boxes_above, k, score_threshold, False)
    top_scores, pair_idx = tf.math.top_k(pool_scores, k=k_pairs, sorted=True)  # ties: lower index
    image = tf.broadcast_to(tf.range(b)[:, None], tf.shape(pair_idx))
    marks = tf.scatter_nd(tf.reshape(tf.stack([image, pair_idx], -1), [-1, 2]),
                          tf.reshape(tf.cast(top_scores > score_threshold, tf.int32), [-1]),  # not the padding
                          tf.shape(pool_scores))
    pool_size = tf.shape(box_pool)[1]
    at = tf.cast(tf.where(tf.transpose(tf.reshape(marks > 0, [b, pool_size, num_classes]), [2, 0, 1])),
                 tf.int32)  # [Q, 3] (class, image, pool slot)
    cls, image, slot = at[:, 0], at[:, 1], at[:, 2]
    return Pairs(image, tf.gather_nd(box_pool, at[:, 1:]), cls,
                  tf.gather_nd(pool_scores, tf.stack([image, slot * num_classes + cls], 1)), count)


def _pool(scores, box_max, boxes_above, k, score_threshold, static_shapes: bool):
    """Two cheap top-k stages instead of one over all N * K pairs, with the same result:
    let ``U`` be the k-th largest per-box maximum score. At least k pairs score
    ``>= U``, so every pair in the top k scores ``>= U`` and its box is among the k
    boxes with the largest maximum. Only those k boxes' k * K pairs need ranking.
    Which of several boxes tied at the k-th largest maximum enter the pool is
    unspecified.

    Returns the pool's boxes ``[B, P]`` in index order, their scores ``[B, P * K]``
    (box-major), how many pairs the second top-k must take, and the count of pairs
    above the threshold ``[B]`` (see ``detect.ops.nms.NMSResult.num_candidates``)."""
    b = tf.shape(scores)[0]
    n = tf.shape(scores)[1]
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
    return box_pool, pool_scores, k_pairs, pairs_above + tf.maximum(boxes_above - k_boxes, 0)


def pooled_candidates(scores, k, score_threshold):
    """The top ``k`` pairs of :func:`_pool` as columns ``[B, k]`` in precedence order
    (static shapes, for callers under XLA): scores, box index, class, and the count."""
    num_classes = tf.shape(scores)[2]
    box_max, _, boxes_above = _scan(scores, score_threshold)
    box_pool, pool_scores, k_pairs, count = _pool(scores, box_max, boxes_above, k, score_threshold, True)
    top_scores, pair_idx = tf.math.top_k(pool_scores, k=k_pairs, sorted=True)
    box_idx = tf.gather(box_pool, pair_idx // num_classes, batch_dims=1)
    return top_scores, box_idx, pair_idx % num_classes, count
