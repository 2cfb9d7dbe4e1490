import numpy as np
import pytest
import tensorflow as tf

from detect.ops import boxes as B
from tests.conftest import random_boxes


def np_iou(a, b):
    """Slow reference: loops over pairs."""
    out = np.zeros((len(a), len(b)), np.float64)
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = iw * ih
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def test_format_conversions_golden():
    xyxy = tf.constant([[10.0, 20.0, 40.0, 60.0]])
    np.testing.assert_allclose(B.xyxy_to_xywh(xyxy), [[10, 20, 30, 40]])
    np.testing.assert_allclose(B.xyxy_to_cxcywh(xyxy), [[25, 40, 30, 40]])
    np.testing.assert_allclose(B.xywh_to_xyxy([[10.0, 20.0, 30.0, 40.0]]), xyxy)
    np.testing.assert_allclose(B.cxcywh_to_xyxy([[25.0, 40.0, 30.0, 40.0]]), xyxy)


def test_conversions_round_trip(rng):
    b = random_boxes(rng, (3, 50))
    np.testing.assert_allclose(B.xywh_to_xyxy(B.xyxy_to_xywh(b)), b, atol=1e-4)
    np.testing.assert_allclose(B.cxcywh_to_xyxy(B.xyxy_to_cxcywh(b)), b, atol=1e-4)


def test_area_and_clip():
    b = tf.constant([[0.0, 0.0, 10.0, 5.0], [5.0, 5.0, 3.0, 9.0], [np.nan, 0, 1, 1]])
    np.testing.assert_allclose(B.area(b), [50.0, 0.0, 0.0])
    clipped = B.clip_boxes(tf.constant([[-5.0, -1.0, 120.0, 30.0]]), (20, 100))
    np.testing.assert_allclose(clipped, [[0, 0, 100, 20]])
    # Per-image sizes [B, 2] broadcast against [B, N, 4].
    batch = tf.constant([[[-5.0, -1.0, 120.0, 30.0]], [[-5.0, -1.0, 120.0, 30.0]]])
    clipped = B.clip_boxes(batch, tf.constant([[20, 100], [10, 50]]))
    np.testing.assert_allclose(clipped, [[[0, 0, 100, 20]], [[0, 0, 50, 10]]])


def test_iou_golden():
    # A = [0,0,10,10] (area 100); B = [5,5,15,15] (area 100); overlap 5x5 = 25;
    # union 175 -> IoU 1/7. C = [10,0,20,10] touches A on an edge -> 0.
    a = tf.constant([[0.0, 0.0, 10.0, 10.0]])
    b = tf.constant([[5.0, 5.0, 15.0, 15.0], [10.0, 0.0, 20.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    np.testing.assert_allclose(B.pairwise_iou(a, b), [[25 / 175, 0.0, 1.0]], rtol=1e-6)


def test_pairwise_iou_matches_reference_batched(rng):
    a = random_boxes(rng, (3, 40))
    b = random_boxes(rng, (3, 25))
    got = B.pairwise_iou(a, b).numpy()
    assert got.shape == (3, 40, 25)
    for i in range(3):
        np.testing.assert_allclose(got[i], np_iou(a[i], b[i]), atol=1e-6)
    assert (got > 0).mean() > 0.05  # the fixture really overlaps


def test_iou_degenerate_nan_and_padding_are_zero():
    a = tf.constant([[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 9.0], [np.nan, 0.0, 4.0, 4.0],
                     [0.0, 0.0, np.inf, 4.0], [0.0, 0.0, 4.0, 4.0]])
    got = B.pairwise_iou(a, a).numpy()
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got[:4], 0.0)
    assert got[4, 4] == 1.0
    masked = B.pairwise_iou(a, a, b_valid=tf.constant([True] * 4 + [False])).numpy()
    assert masked[4, 4] == 0.0


def test_ioa():
    # anchor [0,0,10,10] half inside region [5,0,100,100] -> 0.5
    np.testing.assert_allclose(
        B.pairwise_ioa(tf.constant([[0.0, 0.0, 10.0, 10.0]]), tf.constant([[5.0, 0.0, 100.0, 100.0]])),
        [[0.5]],
    )


def test_giou_golden():
    # A=[0,0,2,2], B=[3,0,5,2]: no overlap, IoU 0; enclosing C=[0,0,5,2], |C|=10,
    # |A u B| = 8 -> GIoU = 0 - 2/10 = -0.2.
    a = tf.constant([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [np.nan, 0, 1, 1]])
    b = tf.constant([[3.0, 0.0, 5.0, 2.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0, 1, 1]])
    got = B.giou(a, b).numpy()
    np.testing.assert_allclose(got[:2], [-0.2, 1.0], rtol=1e-6)
    assert np.isfinite(got).all()


def test_iou_is_xla_compilable(rng):
    a = random_boxes(rng, (2, 10))
    f = tf.function(lambda x: B.pairwise_iou(x, x), jit_compile=True)
    np.testing.assert_allclose(f(a), B.pairwise_iou(a, a), atol=1e-6)


@pytest.mark.parametrize("fn", [B.xyxy_to_xywh, B.area])
def test_leading_dims_free(fn, rng):
    b = random_boxes(rng, (2, 3, 5))
    assert fn(b).shape[:3] == (2, 3, 5)
