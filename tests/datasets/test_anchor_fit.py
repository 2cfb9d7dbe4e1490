import numpy as np
import pytest
import tensorflow as tf

from detect.config import AnchorConfig
from detect.datasets.anchor_fit import (
    anchor_range,
    best_anchor_iou,
    check_reachable,
    coverage,
    fit_anchors,
)
from detect.ops.anchors import AnchorGenerator
from detect.ops.boxes import pairwise_iou
from tests.conftest import random_boxes


def test_best_iou_golden():
    cfg = AnchorConfig(min_level=3, max_level=3, anchor_size=2.0, num_scales=1, aspect_ratios=(1.0,))
    # one 16x16 anchor per stride-8 cell, centred at (j + 0.5) * 8: cell (1, 1) -> (12, 12)
    centred = [4, 4, 20, 20]
    # shifted by 4 px in x and y: the box centre (16, 16) sits on a cell corner; the
    # nearest anchors are 4 px away per axis -> intersection 12 x 12 = 144,
    # union 256 + 256 - 144 = 368 -> 144 / 368
    shifted = [8, 8, 24, 24]
    np.testing.assert_allclose(best_anchor_iou(np.array([centred, shifted]), cfg), [1.0, 144 / 368],
                               rtol=1e-9)


@pytest.mark.parametrize("levels,size,scales,convention", [
    ((3, 5), 2.0, 2, "detect"), ((3, 7), 4.0, 3, "detect"), ((3, 4), 1.25, 3, "detect"),
    # keras-hub's rule (imported models): centres at j * stride, sizes truncated, sides rounded
    ((3, 5), 4.0, 3, "keras_hub"), ((3, 4), 1.25, 2, "keras_hub")])
def test_best_iou_equals_brute_force_over_all_anchors(rng, levels, size, scales, convention):
    cfg = AnchorConfig(min_level=levels[0], max_level=levels[1], anchor_size=size, num_scales=scales,
                       convention=convention)
    boxes = random_boxes(rng, (400,), extent=300.0, min_size=3.0, max_size=120.0)
    anchors = AnchorGenerator.from_config(cfg)((384, 384))
    slow = np.asarray(pairwise_iou(tf.constant(boxes), anchors)).max(axis=1)
    np.testing.assert_allclose(best_anchor_iou(boxes, cfg), slow, atol=1e-5)


def test_fit_finds_layout_for_small_objects_and_keeps_pinned(rng):
    xy = rng.uniform(0, 400, (500, 2))
    side = rng.uniform(14, 30, (500, 1))
    boxes = np.concatenate([xy, xy + side], 1)
    default = AnchorConfig()  # 32..812 px anchors: small objects poorly covered
    assert coverage(boxes, default).share < 0.6
    fitted, cov = fit_anchors(boxes, default)
    assert cov.share > 0.9 and fitted.max_level <= 5  # no level left for nothing
    assert cov.share == coverage(boxes, fitted).share
    pinned, _ = fit_anchors(boxes, default, pinned={"anchor_size"})
    assert pinned.anchor_size == default.anchor_size


def test_unreachable_boxes_get_a_clear_message():
    boxes = np.array([[10, 10, 13, 13], [40, 40, 43, 44]], np.float64)
    cfg = AnchorConfig(anchor_size=4.0)
    with pytest.raises(ValueError, match=r"3\.0-3\.5 px side.*smaller than the smallest anchor \(32 px\)"):
        check_reachable(coverage(boxes, cfg), cfg)
    big = np.array([[0, 0, 2000, 2000]], np.float64)
    small_cfg = AnchorConfig(max_level=3, anchor_size=1.0, num_scales=1, aspect_ratios=(1.0,))
    assert anchor_range(small_cfg) == (8.0, 8.0)
    with pytest.raises(ValueError, match="larger than the largest anchor"):
        check_reachable(coverage(big, small_cfg), small_cfg)


def test_p2_only_when_it_covers_what_p3_cannot(rng):
    # 9-14 px objects: a stride-8 anchor centre can be 4 px off per axis, which
    # caps the IoU of a 10 px box near 0.2; stride-4 centres are at most 2 px off
    xy = rng.uniform(0, 400, (400, 2))
    small = np.concatenate([xy, xy + rng.uniform(9, 14, (400, 1))], 1)
    p3, cov3 = fit_anchors(small, AnchorConfig(), pinned={"min_level"})
    fitted, cov = fit_anchors(small, AnchorConfig())
    assert p3.min_level == 3 and cov3.share < 0.9
    assert fitted.min_level == 2 and cov.share >= 0.95
    # 20-40 px objects are covered from P3: no P2, whose head costs 4x P3's
    mid = np.concatenate([xy, xy + rng.uniform(20, 40, (400, 1))], 1)
    assert fit_anchors(mid, AnchorConfig())[0].min_level == 3
