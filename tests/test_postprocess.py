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


def test_class_thresholds_keep_each_class_at_its_own_score_and_recompact():
    # four separate anchors (no overlap): class 0 at 0.9 and 0.4, class 1 at 0.7 and 0.2
    anchors = tf.constant([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]], tf.float32)
    deltas = tf.zeros([1, 4, 4])
    probs = [[0.9, 0.01], [0.01, 0.7], [0.4, 0.01], [0.01, 0.2]]
    logits = tf.constant([[[logit(p) for p in row] for row in probs]], tf.float32)
    base = PostprocessConfig(score_threshold=0.05, max_detections=4, pre_nms_top_k=10)
    plain = postprocess(logits, deltas, anchors, (10, 80), base, variances=V)
    assert int(plain["num_detections"][0]) == 4 and bool(plain["capped"][0])  # full, all could be output
    # class 0 needs 0.5 (drops 0.4), class 1 needs 0.15 (keeps 0.7 and 0.2)
    cal = postprocess(logits, deltas, anchors, (10, 80),
                      PostprocessConfig(score_threshold=0.05, max_detections=4, pre_nms_top_k=10,
                                        class_thresholds=(0.5, 0.15)), variances=V)
    assert int(cal["num_detections"][0]) == 3
    np.testing.assert_allclose(cal["scores"][0], [0.9, 0.7, 0.2, 0], rtol=1e-5)  # order kept, padding last
    np.testing.assert_array_equal(cal["labels"][0], [0, 1, 1, -1])
    np.testing.assert_allclose(cal["boxes"][0, 2], [60, 0, 70, 10], atol=1e-4)
    np.testing.assert_array_equal(cal["boxes"][0, 3], 0)
    # NMS was full but its weakest kept (0.2) reaches class 1's threshold: a cut could matter
    assert bool(cal["capped"][0])
    high = postprocess(logits, deltas, anchors, (10, 80),
                       PostprocessConfig(score_threshold=0.05, max_detections=4, pre_nms_top_k=10,
                                         class_thresholds=(0.5, 0.5)), variances=V)
    # the weakest NMS-kept (0.2) is below every threshold: what the cap cut is lower still
    assert int(high["num_detections"][0]) == 2 and not bool(high["capped"][0])


def test_class_thresholds_are_validated():
    import pytest

    from detect.config import ModelConfig

    with pytest.raises(ValueError, match="class_thresholds"):
        PostprocessConfig(class_thresholds=(0.5, 1.5)).validate()
    with pytest.raises(ValueError, match="has 2 values for num_classes=3"):
        ModelConfig(num_classes=3, postprocess=PostprocessConfig(class_thresholds=(0.5, 0.5)))


def test_drop_nonpositive_boxes_neither_kept_nor_suppressing():
    # keras-hub's / keras-cv's padded NMS reads a box with no coordinate above 0 as padding.
    # Anchor 0 [-10, -10, 0, 0] (0.9) overlaps anchor 1 [-10, -10, 1, 1] (0.8) with IoU
    # 100 / 121 = 0.83: greedy NMS keeps 0 and suppresses 1; with the rule, 0 is no box
    # and 1 (one coordinate above 0) is kept. Anchor 2 [20, 20, 30, 30] is kept either way.
    anchors = tf.constant([[-10, -10, 0, 0], [-10, -10, 1, 1], [20, 20, 30, 30]], tf.float32)
    deltas = tf.zeros([1, 3, 4])
    logits = tf.constant([[[logit(0.9)], [logit(0.8)], [logit(0.7)]]], tf.float32)
    base = PostprocessConfig(score_threshold=0.05, max_detections=3, pre_nms_top_k=10, agnostic=True,
                             clip_boxes=False)
    plain = postprocess(logits, deltas, anchors, (40, 40), base, variances=V)
    np.testing.assert_allclose(plain["scores"][0, :2], [0.9, 0.7], rtol=1e-5)
    np.testing.assert_allclose(plain["boxes"][0, 0], [-10, -10, 0, 0], atol=1e-4)
    quirk = postprocess(logits, deltas, anchors, (40, 40), PostprocessConfig(**{**base.__dict__,
                        "drop_nonpositive": True}), variances=V)
    assert int(quirk["num_detections"][0]) == 2
    np.testing.assert_allclose(quirk["scores"][0, :2], [0.8, 0.7], rtol=1e-5)
    np.testing.assert_allclose(quirk["boxes"][0, :2], [[-10, -10, 1, 1], [20, 20, 30, 30]], atol=1e-4)
    assert np.isfinite(quirk["boxes"]).all()  # the dropped box's NaN never reaches an output
