import math

import numpy as np
import tensorflow as tf

from detect.ops import box_coder
from tests.conftest import random_boxes

#: RetinaNet's variances (the ModelConfig default)
V = (0.1, 0.1, 0.2, 0.2)


def test_encode_golden():
    # anchor centre (10, 10), 20 x 20; box centre (12, 6), 40 x 10.
    # dx = (12-10)/20/0.1 = 1.0, dy = (6-10)/20/0.1 = -2.0,
    # dw = log(40/20)/0.2 = 3.4657, dh = log(10/20)/0.2 = -3.4657
    anchor = tf.constant([[0.0, 0.0, 20.0, 20.0]])
    box = tf.constant([[-8.0, 1.0, 32.0, 11.0]])
    d = box_coder.encode(anchor, box, V).numpy()
    np.testing.assert_allclose(d, [[1.0, -2.0, math.log(2) / 0.2, -math.log(2) / 0.2]], rtol=1e-5)


def test_round_trip(rng):
    anchors = random_boxes(rng, (500,))
    boxes = random_boxes(rng, (3, 500))
    deltas = box_coder.encode(anchors, boxes, V)
    np.testing.assert_allclose(box_coder.decode(anchors, deltas, V), boxes, atol=1e-3)
    # custom variances round-trip too
    v = (1.0, 1.0, 1.0, 1.0)
    np.testing.assert_allclose(
        box_coder.decode(anchors, box_coder.encode(anchors, boxes, v), v), boxes, atol=1e-3
    )


def test_decode_clamps_huge_deltas():
    anchor = tf.constant([[0.0, 0.0, 16.0, 16.0]])
    out = box_coder.decode(anchor, tf.constant([[0.0, 0.0, 1e6, 1e6]]), V).numpy()
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0, 2] - out[0, 0], 1000.0, rtol=1e-4)  # 16 * 62.5


def test_encode_degenerate_is_finite():
    anchor = tf.constant([[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 0.0, 0.0]])
    box = tf.constant([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    assert np.isfinite(box_coder.encode(anchor, box, V).numpy()).all()
