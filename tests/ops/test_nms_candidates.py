"""The candidate pairs that enter NMS: both routes against brute force, the precedence key."""

import numpy as np
import pytest
import tensorflow as tf

from tests.ops.test_nms import clustered_case


def brute_force_pairs(scores, thr, top_k):
    """Each image's top_k pairs above thr in precedence order (score descending, then box,
    then class), listed class-major: [(class, image, box, score)]."""
    out = []
    for b in range(scores.shape[0]):
        above = [(-scores[b, n, c], n, c) for n, c in zip(*np.nonzero(scores[b] > thr))]
        out += [(c, b, n, -s) for s, n, c in sorted(above)[:top_k]]
    return sorted(out)


@pytest.mark.parametrize("n", [200, 201])  # odd: the scan is one call, not two halves
@pytest.mark.parametrize("top_k", [1000, 300, 64])
def test_both_candidate_routes_give_the_same_pairs(rng, top_k, n):
    """Gathering the pairs above the threshold equals ranking them in two top-k stages, and
    both equal brute force: the same pairs, listed class-major, the same counts, cut at
    top_k per image in precedence order or not."""
    from detect.ops.nms_candidates import _gathered_pairs, _pooled_pairs, _scan_halves

    _, scores = clustered_case(rng, 3, n, 5)
    scores[1] *= 0.17  # images with very different numbers of candidates
    scores[2, 10:] = 0.0
    scores[0, :40:2] = scores[0, 1:40:2]  # exactly tied scores across boxes
    thr = tf.constant(0.15)
    box_max, above, h, boxes_above = _scan_halves(tf.constant(scores), thr)
    assert h == (2 if n % 2 == 0 else 1)
    np.testing.assert_array_equal(boxes_above, (scores > 0.15).any(2).sum(1))
    got = _gathered_pairs(tf.constant(scores), above, h, top_k, thr)
    want = _pooled_pairs(tf.constant(scores), tf.reshape(tf.concat(box_max, 0), [3, n]), boxes_above, top_k, thr)
    counts = (scores > 0.15).sum((1, 2))
    assert counts.max() > 300 and counts.min() < 60
    np.testing.assert_array_equal(got.count, counts)
    for b in range(3):
        if int(boxes_above[b]) <= top_k:  # else the pooled count is a lower bound above top_k
            assert int(want.count[b]) == counts[b]
        else:
            assert counts[b] >= int(want.count[b]) > top_k

    def listed(p):
        return list(zip(p.cls.numpy(), p.image.numpy(), p.box.numpy(), p.score.numpy()))

    expected = brute_force_pairs(scores, 0.15, top_k)
    assert listed(got) == expected  # class-major, exactly
    assert listed(want) == expected


def test_precedence_key_orders_by_score_then_box_then_class(rng):
    """Sorting by the int64 key equals sorting by (-score, box, class), negative scores,
    +-0 (equal) and exact ties included."""
    from detect.ops.nms_candidates import precedence_key

    score = rng.choice(np.float32([-2.5, -1e-30, -0.0, 0.0, 1e-30, 0.25, 0.5, 7.0, np.inf]), 400)
    box = rng.integers(0, 50_000, 400).astype(np.int32)
    cls = rng.integers(0, 80, 400).astype(np.int32)
    key = tf.function(precedence_key, jit_compile=True)(score, box, cls, 80).numpy()
    np.testing.assert_array_equal(key, precedence_key(score, box, cls, 80).numpy())  # XLA keeps -0 = +0
    got = np.argsort(-key, kind="stable")
    want = sorted(range(400), key=lambda i: (-score[i], box[i], cls[i]))
    np.testing.assert_array_equal(got, want)
