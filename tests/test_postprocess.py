"""postprocess(): decode, sigmoid, clip, NMS, on hand-made raw outputs."""

import math

import numpy as np
import tensorflow as tf

from detect.config import PostprocessConfig
from detect.models.postprocess import DETECTION_KEYS, postprocess

V = (0.1, 0.1, 0.2, 0.2)


def logit(p):
    return math.log(p / (1 - p))


def test_golden_decode_threshold_clip_and_nms():
    anchors = tf.constant([[10, 10, 30, 30], [12, 10, 32, 30], [60, 60, 100, 100], [0, 0, 8, 8]],
                          tf.float32)
    # anchor 1 moved right by dx = 0.1 * 20 * 1.0 px = 2 px -> [14, 10, 34, 30]; anchor 2
    # scaled x e^(0.2 * 2.5) about its centre (80, 80): w = 40 e^0.5 = 65.9 -> clipped to the
    # 90 x 90 image on the right/bottom
    deltas = tf.constant([[[0, 0, 0, 0], [1.0, 0, 0, 0], [0, 0, 2.5, 2.5], [0, 0, 0, 0]]], tf.float32)
    probs = [[0.9, 0.01], [0.8, 0.01], [0.01, 0.7], [0.04, 0.05]]  # anchor 3: below 0.05 (strictly)
    logits = tf.constant([[[logit(p) for p in row] for row in probs]], tf.float32)
    cfg = PostprocessConfig(score_threshold=0.05, iou_threshold=0.5, max_detections=5, pre_nms_top_k=10)
    out = postprocess(logits, deltas, anchors, (90, 90), cfg, variances=V)
    assert set(out) == set(DETECTION_KEYS)
    n = int(out["num_detections"][0])
    # anchor 0 (0.9) suppresses anchor 1 (0.8, IoU 18*20 / (2*400 - 360) = 0.82); anchor 2 kept
    assert n == 2 and int(out["num_candidates"][0]) == 3  # 0.9, 0.8, 0.7 are above 0.05
    np.testing.assert_allclose(out["scores"][0, :2], [0.9, 0.7], rtol=1e-5)
    np.testing.assert_array_equal(out["labels"][0], [0, 1, -1, -1, -1])
    half = 20 * math.exp(0.5)
    np.testing.assert_allclose(out["boxes"][0, 0], [10, 10, 30, 30], atol=1e-4)
    np.testing.assert_allclose(out["boxes"][0, 1], [80 - half, 80 - half, 90, 90], atol=1e-3)
    np.testing.assert_array_equal(out["boxes"][0, 2:], 0)  # padding rows


def test_empty_and_non_finite_inputs():
    cfg = PostprocessConfig(max_detections=3, pre_nms_top_k=10)
    anchors = tf.constant([[0, 0, 10, 10], [5, 5, 15, 15]], tf.float32)
    logits = tf.constant([[[5.0], [float("nan")]], [[-20.0], [-20.0]]])  # image 2: nothing above
    deltas = tf.constant([[[0, 0, 0, 0], [0, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]], tf.float32)
    out = postprocess(logits, deltas, anchors, (20, 20), cfg, variances=V)
    np.testing.assert_array_equal(out["num_detections"], [1, 0])  # NaN score never kept
    assert np.isfinite(out["boxes"]).all() and out["boxes"].shape == (2, 3, 4)
