"""The NumPy IoU / IoS: golden values by hand, agreement with the TF op, degenerate boxes."""

import numpy as np
import pytest

from detect.ops import numpy_boxes
from detect.ops.boxes import pairwise_iou


def test_golden_values():
    a = np.array([0, 0, 10, 10], np.float64)
    # half of a: intersection 50, union 100 -> 0.5; IoS 50 / 50 = 1
    assert numpy_boxes.iou(a, np.array([0, 0, 10, 5.0])) == pytest.approx(0.5)
    assert numpy_boxes.ios(a, np.array([0, 0, 10, 5.0])) == pytest.approx(1.0)
    # shifted by 5 in x and y: intersection 25, union 175 -> 1/7; IoS 25/100
    assert numpy_boxes.iou(a, np.array([5, 5, 15, 15.0])) == pytest.approx(1 / 7)
    assert numpy_boxes.ios(a, np.array([5, 5, 15, 15.0])) == pytest.approx(0.25)
    # touching edges and disjoint boxes: 0
    assert numpy_boxes.iou(a, np.array([10, 0, 20, 10.0])) == 0.0
    assert numpy_boxes.iou(a, np.array([30, 30, 40, 40.0])) == 0.0


def test_degenerate_boxes_give_zero_not_nan():
    point = np.array([3, 3, 3, 3.0])
    with np.errstate(all="raise"):  # no division by zero anywhere
        assert numpy_boxes.iou(point, point) == 0.0
        assert numpy_boxes.ios(point, np.array([0, 0, 10, 10.0])) == 0.0


def test_matrix_by_broadcasting_equals_the_tf_op():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (2, 40, 2))
    wh = rng.uniform(1, 30, (2, 40, 2))
    a, b = (np.concatenate([xy[i], xy[i] + wh[i]], axis=1) for i in range(2))
    got = numpy_boxes.iou(a[:, None], b[None, :])
    assert got.shape == (40, 40) and (got > 0).sum() > 10
    np.testing.assert_allclose(got, pairwise_iou(a.astype(np.float32), b.astype(np.float32)).numpy(), atol=1e-6)
    # IoS is symmetric and at least IoU
    s = numpy_boxes.ios(a[:, None], b[None, :])
    np.testing.assert_allclose(s, numpy_boxes.ios(b[:, None], a[None, :]).T)
    assert (s >= got - 1e-12).all()
