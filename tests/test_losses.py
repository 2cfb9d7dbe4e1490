import math

import numpy as np
import pytest
import tensorflow as tf

from detect.models import losses
from detect.ops import box_coder
from detect.ops.matcher import BACKGROUND, IGNORE, AnchorTargets, assign_targets
from tests.ops.test_matcher import LOW, STRICT, V

#: the paper's focal loss, and the ModelConfig's loss defaults
FOCAL = dict(alpha=0.25, gamma=2.0)
LOSS = dict(**FOCAL, box_loss="smooth_l1", smooth_l1_beta=0.1, box_loss_weight=1.0, variances=V)


def test_focal_golden():
    # logit 0 -> p = 0.5, ce = ln 2, (1 - p_t)^2 = 0.25.
    # target 1: alpha_t = 0.25 -> 0.25 * 0.25 * ln2; target 0: alpha_t = 0.75.
    got = losses.sigmoid_focal_loss(tf.constant([1.0, 0.0]), tf.constant([0.0, 0.0]), **FOCAL).numpy()
    np.testing.assert_allclose(got, [0.0625 * math.log(2), 0.1875 * math.log(2)], rtol=1e-6)
    # gamma = 0, alpha = 0.5 is half the plain BCE
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=[1.0, 0.0], logits=[2.0, -1.0])
    fl = losses.sigmoid_focal_loss(tf.constant([1.0, 0.0]), tf.constant([2.0, -1.0]), alpha=0.5, gamma=0.0)
    np.testing.assert_allclose(fl, 0.5 * bce.numpy(), rtol=1e-6)


def test_focal_stable_for_huge_logits():
    got = losses.sigmoid_focal_loss(tf.constant([1.0, 0.0]), tf.constant([-200.0, 200.0]), **FOCAL).numpy()
    # p_t ~ 0, so FL = alpha_t * ce = 0.25 * 200 and 0.75 * 200
    np.testing.assert_allclose(got, [50.0, 150.0], rtol=1e-5)


def test_smooth_l1_golden():
    # |x| = 0.05 < beta=0.1: 0.5 * 0.0025 / 0.1 = 0.0125; |x| = 1: 1 - 0.05 = 0.95
    got = losses.smooth_l1(tf.zeros([1, 4]), tf.constant([[0.05, 1.0, 0.0, 0.0]]), beta=0.1).numpy()
    np.testing.assert_allclose(got, [0.0125 + 0.95], rtol=1e-6)


def _targets(cls, n):
    return AnchorTargets(tf.constant([cls], tf.int32), tf.zeros([1, n, 4]), tf.zeros([1, n, 4]))


def test_detection_losses_normalisation_and_ignore():
    # 4 anchors, 2 classes, all logits 0: per anchor focal sum over 2 classes.
    # anchor 0: positive class 1 -> 0.1875 ln2 (class 0) + 0.0625 ln2 (class 1)
    # anchor 1: background -> 2 * 0.1875 ln2; anchor 2: ignore -> 0; anchor 3: positive class 0.
    # total = (0.25 + 0.375 + 0.25) ln2, normalised by 2 positives.
    t = _targets([1, BACKGROUND, IGNORE, 0], 4)
    out = losses.detection_losses(t, tf.zeros([1, 4, 2]), tf.zeros([1, 4, 4]), tf.zeros([4, 4]), **LOSS)
    np.testing.assert_allclose(out["cls_loss"], 0.875 * math.log(2) / 2, rtol=1e-6)
    np.testing.assert_allclose(out["box_loss"], 0.0)
    # ignore anchor's logit does not matter
    logits = tf.constant([[[0.0, 0], [0, 0], [50, -50], [0, 0]]])
    out2 = losses.detection_losses(t, logits, tf.zeros([1, 4, 4]), tf.zeros([4, 4]), **LOSS)
    np.testing.assert_allclose(out2["cls_loss"], out["cls_loss"], rtol=1e-6)


def test_no_positives_normalises_by_one():
    t = _targets([BACKGROUND, BACKGROUND], 2)
    out = losses.detection_losses(t, tf.zeros([1, 2, 1]), tf.ones([1, 2, 4]), tf.zeros([2, 4]), **LOSS)
    np.testing.assert_allclose(out["cls_loss"], 2 * 0.1875 * math.log(2), rtol=1e-6)
    assert float(out["box_loss"]) == 0.0


@pytest.mark.parametrize("box_loss", ["smooth_l1", "giou"])
def test_box_loss_zero_at_perfect_prediction(box_loss):
    anchors = tf.constant([[0.0, 0, 10, 10], [20.0, 20, 40, 40]])
    gt = tf.constant([[[1.0, 1, 11, 11], [21.0, 19, 41, 39]]])
    t = assign_targets(anchors, gt, [[0, 1]], **STRICT)
    perfect = box_coder.encode(anchors, t.matched_boxes, V)
    out = losses.detection_losses(t, tf.zeros([1, 2, 2]), perfect, anchors, **{**LOSS, "box_loss": box_loss})
    np.testing.assert_allclose(out["box_loss"], 0.0, atol=1e-5)
    off = losses.detection_losses(t, tf.zeros([1, 2, 2]), perfect + 1.0, anchors, **{**LOSS, "box_loss": box_loss})
    assert float(off["box_loss"]) > 0.1


def test_degenerate_and_nan_ground_truth_never_give_nan_loss():
    anchors = tf.constant([[0.0, 0, 10, 10], [20.0, 20, 30, 30], [0.0, 0, 0, 0]])
    gt = tf.constant([[[np.nan, 0, 10, 10], [20.0, 20, 20, 20], [0.0, 0, 10, 10]]])
    t = assign_targets(anchors, gt, [[0, 1, 2]], **LOW)
    for kind in ("smooth_l1", "giou"):
        out = losses.detection_losses(t, tf.zeros([1, 3, 3]), tf.zeros([1, 3, 4]), anchors, **{**LOSS, "box_loss": kind})
        assert all(np.isfinite(v.numpy()) for v in out.values())


def test_unknown_box_loss():
    with pytest.raises(ValueError, match="box_loss"):
        losses.detection_losses(_targets([0], 1), tf.zeros([1, 1, 1]), tf.zeros([1, 1, 4]),
                                tf.zeros([1, 4]), **{**LOSS, "box_loss": "l2"})
