import numpy as np
import pytest
import tensorflow as tf

from detect.ops import box_coder
from detect.ops.matcher import BACKGROUND, IGNORE, IGNORE_REGION_LABEL, assign_targets
from tests.conftest import random_boxes
from tests.ops.test_boxes import np_iou

#: RetinaNet's variances (the ModelConfig default)
V = (0.1, 0.1, 0.2, 0.2)
#: The paper's thresholds, without / with low-quality matches
STRICT = dict(positive_iou=0.5, negative_iou=0.4, allow_low_quality_matches=False, variances=V)
LOW = {**STRICT, "allow_low_quality_matches": True}


def reference_cls_targets(anchors, gt, labels, low_quality=False):
    """Slow reference for one image (no crowd): loops over anchors."""
    real = labels >= 0
    iou = np_iou(anchors, gt) if len(gt) else np.zeros((len(anchors), 0))
    iou[:, ~real] = 0.0
    out = np.full(len(anchors), BACKGROUND)
    for n in range(len(anchors)):
        best = iou[n].max() if iou.shape[1] else 0.0
        if best >= 0.5:
            out[n] = labels[iou[n].argmax()]
        elif best >= 0.4:
            out[n] = IGNORE
    if low_quality:
        for m in np.flatnonzero(real):
            top = iou[:, m].max()
            if top > 0:
                for n in np.flatnonzero(iou[:, m] == top):
                    out[n] = labels[iou[n].argmax()]
    return out


def test_golden_states():
    anchors = tf.constant([[0.0, 0, 10, 10], [0.0, 0, 10, 8], [0.0, 0, 10, 4.5], [50.0, 50, 60, 60]])
    # gt [0,0,10,10] label 3: IoUs 1.0, 0.8, 0.45, 0 -> pos, pos, ignore, background
    gt = tf.constant([[[0.0, 0, 10, 10], [0, 0, 0, 0]]])
    labels = tf.constant([[3, -1]])
    t = assign_targets(anchors, gt, labels, **STRICT)
    np.testing.assert_array_equal(t.cls_targets, [[3, 3, IGNORE, BACKGROUND]])
    np.testing.assert_allclose(t.box_targets[0, 0], [0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(
        t.box_targets[0, 1], box_coder.encode(anchors[1:2], gt[0, :1], V)[0], atol=1e-6
    )
    np.testing.assert_array_equal(t.box_targets[0, 2:], 0.0)
    np.testing.assert_allclose(t.matched_boxes[0, 1], [0, 0, 10, 10])


@pytest.mark.parametrize("low_quality", [False, True])
def test_matches_reference(rng, low_quality):
    anchors = random_boxes(rng, (300,), max_size=40)
    # Ground truth = jittered anchors, so positives, ignores and negatives all occur.
    gt = anchors[rng.integers(0, 300, size=(2, 12))] + rng.normal(0, 3, size=(2, 12, 4))
    gt = gt.astype(np.float32)
    labels = rng.integers(0, 5, size=(2, 12)).astype(np.int32)
    labels[1, 8:] = -1  # padding rows
    t = assign_targets(anchors, gt, labels, **{**STRICT, "allow_low_quality_matches": low_quality})
    for b in range(2):
        ref = reference_cls_targets(anchors, gt[b], labels[b], low_quality)
        np.testing.assert_array_equal(t.cls_targets[b].numpy(), ref)
    states = t.cls_targets.numpy()
    assert (states >= 0).sum() > 10 and (states == IGNORE).sum() > 0  # fixture is informative


def test_low_quality_gives_small_objects_an_anchor():
    anchors = tf.constant([[0.0, 0, 32, 32], [100.0, 100, 132, 132]])
    gt = tf.constant([[[0.0, 0, 8, 8]]])  # IoU 64/1024 with the first anchor
    assert (assign_targets(anchors, gt, [[1]], **STRICT).cls_targets.numpy() < 0).all()
    t = assign_targets(anchors, gt, [[1]], **LOW)
    np.testing.assert_array_equal(t.cls_targets, [[1, BACKGROUND]])


@pytest.mark.parametrize("m", [0, 3])
def test_no_ground_truth_gives_all_background(m):
    anchors = tf.constant([[0.0, 0, 10, 10], [5.0, 5, 20, 20]])
    gt = tf.zeros([2, m, 4])
    labels = -tf.ones([2, m], tf.int32)
    t = assign_targets(anchors, gt, labels, **LOW)
    np.testing.assert_array_equal(t.cls_targets, BACKGROUND)
    assert np.isfinite(t.box_targets.numpy()).all()


def test_crowd_regions_make_anchors_ignore():
    anchors = tf.constant([[0.0, 0, 10, 10], [60.0, 60, 70, 70], [200.0, 200, 210, 210]])
    gt = tf.constant([[[0.0, 0, 10, 10], [50.0, 50, 100, 100]]])
    labels = tf.constant([[0, IGNORE_REGION_LABEL]])
    t = assign_targets(anchors, gt, labels, **STRICT)
    # positive stays positive; anchor inside the crowd box is ignored; far one is background
    np.testing.assert_array_equal(t.cls_targets, [[0, IGNORE, BACKGROUND]])


def test_nan_and_degenerate_ground_truth_never_match():
    anchors = tf.constant([[0.0, 0, 10, 10], [20.0, 20, 30, 30]])
    gt = tf.constant([[[np.nan, 0, 10, 10], [20.0, 20, 20, 20]]])
    t = assign_targets(anchors, gt, [[0, 1]], **LOW)
    np.testing.assert_array_equal(t.cls_targets, BACKGROUND)
    assert np.isfinite(t.box_targets.numpy()).all() and np.isfinite(t.matched_boxes.numpy()).all()


def test_xla_compilable(rng):
    anchors = random_boxes(rng, (50,))
    gt = random_boxes(rng, (2, 4))
    labels = np.array([[0, 1, -1, -1], [2, -1, -1, -1]], np.int32)
    f = tf.function(lambda a, g, lab: assign_targets(a, g, lab, **STRICT).cls_targets, jit_compile=True)
    np.testing.assert_array_equal(f(anchors, gt, labels), assign_targets(anchors, gt, labels, **STRICT).cls_targets)


@pytest.mark.parametrize("low_quality", [False, True])
def test_trimming_the_padding_changes_no_target(rng, low_quality):
    """Training pads to data.max_boxes while a crop holds fewer: dropping the columns past the
    batch's last real row must give the very same targets, crowd regions, non-finite rows and
    an all-padding image included."""
    anchors = random_boxes(rng, (2000,), max_size=40)
    gt = random_boxes(rng, (3, 12), max_size=40)
    gt[0, 3] = [0, 0, 120, 120]  # the crowd region: large, so anchors fall mostly inside it
    gt[0, 2] = np.nan  # a non-finite row before the last real one
    labels = np.full((3, 12), -1, np.int32)
    labels[0, :5] = [0, 1, 2, IGNORE_REGION_LABEL, 1]  # a crowd region among the objects
    labels[1, :2] = [2, 0]
    labels[1, 4] = 1  # a real row after a padding row: trimming keeps up to the last real one
    near = gt[:2].reshape(-1, 4) + rng.uniform(-2, 2, (24, 4)).astype(np.float32)  # positives
    anchors = np.concatenate([anchors, near[np.isfinite(near).all(1)]])
    kw = {**STRICT, "allow_low_quality_matches": low_quality}
    full = assign_targets(anchors, gt, labels, **kw)
    trimmed = assign_targets(anchors, gt, labels, **kw, trim_padding=True)
    for a, b in zip(full, trimmed):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert (full.cls_targets.numpy()[2] == BACKGROUND).all()
    assert (full.cls_targets.numpy() >= 0).sum() >= 6 and (full.cls_targets.numpy() == IGNORE).any()
    # nothing but padding anywhere: every anchor is background, nothing to trim to
    none = assign_targets(anchors, gt, np.full((3, 12), -1, np.int32), **kw, trim_padding=True)
    assert (none.cls_targets.numpy() == BACKGROUND).all()
