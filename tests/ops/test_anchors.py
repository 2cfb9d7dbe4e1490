import math

import numpy as np
import pytest
import tensorflow as tf

from detect.ops.anchors import AnchorGenerator


def test_golden_single_level():
    # P3 only (stride 8), base size 4 * 8 = 32, one scale, ratios (0.5, 1, 2)
    # on a 16 x 8 (h x w) image: feature map ceil(16/8) x ceil(8/8) = 2 x 1.
    # Cell (0, 0) centre = (0.5 * 8, 0.5 * 8) = (4, 4).
    #   ratio 0.5 (h/w): w = 32/sqrt(.5) = 45.2548, h = 32*sqrt(.5) = 22.6274
    #   ratio 1: 32 x 32 -> [-12, -12, 20, 20]
    #   ratio 2: w = 22.6274, h = 45.2548
    # Cell (1, 0) centre = (4, 12).
    gen = AnchorGenerator(min_level=3, max_level=3, num_scales=1)
    a = gen((16, 8)).numpy()
    w5, h5 = 32 / math.sqrt(0.5), 32 * math.sqrt(0.5)
    expected = [
        [4 - w5 / 2, 4 - h5 / 2, 4 + w5 / 2, 4 + h5 / 2],
        [-12, -12, 20, 20],
        [4 - h5 / 2, 4 - w5 / 2, 4 + h5 / 2, 4 + w5 / 2],
        [4 - w5 / 2, 12 - h5 / 2, 4 + w5 / 2, 12 + h5 / 2],
        [-12, -4, 20, 28],
        [4 - h5 / 2, 12 - w5 / 2, 4 + h5 / 2, 12 + w5 / 2],
    ]
    np.testing.assert_allclose(a, expected, rtol=1e-5)


def test_default_sizes_and_scales():
    # Default: P3..P7, 3 scales x 3 ratios; square anchors at P3 are
    # 32, 32*2^(1/3), 32*2^(2/3) px; at P7 the first is 4 * 128 = 512 px.
    gen = AnchorGenerator()
    a = gen((128, 128)).numpy()
    sides = a[:, 2] - a[:, 0]
    assert gen.num_anchors_per_location == 9
    np.testing.assert_allclose(sides[[1, 4, 7]], [32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)], rtol=1e-5)
    np.testing.assert_allclose(sides[-8], 512, rtol=1e-5)  # P7, scale 0, ratio 1


@pytest.mark.parametrize("size", [(128, 128), (100, 130), (333, 517), (1, 1)])
def test_count_and_centres_for_any_size(size):
    gen = AnchorGenerator()
    a = gen(size).numpy()
    h, w = size
    expected = sum(math.ceil(h / 2**lv) * math.ceil(w / 2**lv) * 9 for lv in range(3, 8))
    assert a.shape == (expected, 4) == (gen.num_anchors(size), 4)
    # Centres are (i + 0.5) * stride: at P3 the first is (4, 4), the next cell (12, 4).
    centres = (a[:, :2] + a[:, 2:]) / 2
    np.testing.assert_allclose(centres[0], [4, 4], atol=1e-4)
    if w > 8:
        np.testing.assert_allclose(centres[9], [12, 4], atol=1e-4)


def test_static_sizes_are_cached_and_dynamic_sizes_agree():
    gen = AnchorGenerator()
    assert gen((96, 160)) is gen((96, 160))
    dyn = tf.function(lambda h, w: gen((h, w)))(tf.constant(96), tf.constant(160))
    np.testing.assert_allclose(dyn, gen((96, 160)), atol=1e-5)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="min_level"):
        AnchorGenerator(min_level=5, max_level=3)
    with pytest.raises(ValueError, match="aspect_ratios"):
        AnchorGenerator(aspect_ratios=(0.0, 1.0))


def test_keras_hub_convention_golden():
    """keras-hub's rule, by hand (level 3, anchor_size 4, 2 scales, ratios 1 and 2):
    sizes int(32 * 2**0) = 32 and int(32 * 2**0.5) = int(45.25) = 45; half-sides
    rounded half to even: ratio 1 -> 16 and 22.5 -> 22; ratio 2 (h = size*sqrt2,
    w = size/sqrt2): 32 -> w/2 = 11.31 -> 11, h/2 = 22.63 -> 23; 45 -> 15.91 -> 16,
    31.82 -> 32. Centres at i * (H // cells): offset 0."""
    gen = AnchorGenerator(min_level=3, max_level=3, anchor_size=4, num_scales=2, aspect_ratios=(1.0, 2.0),
                          convention="keras_hub")
    a = gen((256, 256)).numpy().reshape(32, 32, 4, 4)
    half = np.array([[-16, -16, 16, 16], [-11, -23, 11, 23], [-22, -22, 22, 22], [-16, -32, 16, 32]], np.float32)
    np.testing.assert_array_equal(a[0, 0], half)
    np.testing.assert_array_equal(a[2, 1], half + [8, 16, 8, 16])  # row 2, column 1: (x, y) = (8, 16)
    # 100 px: 13 cells of stride 100 // 13 = 7 (keras-hub's integer stride), not 8
    b = gen((100, 100)).numpy().reshape(13, 13, 4, 4)
    np.testing.assert_array_equal(b[0, 1], half + [7, 0, 7, 0])
    np.testing.assert_array_equal(b[12, 12], half + [84, 84, 84, 84])


def test_clip_keeps_anchors_inside_the_image():
    gen = AnchorGenerator(min_level=3, max_level=3, anchor_size=4, num_scales=1, aspect_ratios=(1.0,), clip=True)
    a = gen((64, 48)).numpy()  # 8 x 6 cells, centres (4 + 8 j, 4 + 8 i), half-side 16
    np.testing.assert_array_equal(a[0], [0, 0, 20, 20])
    np.testing.assert_array_equal(a[-1], [28, 44, 48, 64])
    assert a[:, [0, 1]].min() == 0 and a[:, 2].max() == 48 and a[:, 3].max() == 64
    with pytest.raises(ValueError, match="convention"):
        AnchorGenerator(convention="torchvision")


GRID_CASES = [
    (dict(min_level=2, max_level=4, anchor_size=2, num_scales=3), (96, 160)),
    (dict(min_level=3, max_level=7, anchor_size=4, num_scales=2, aspect_ratios=(1.0,)), (100, 130)),
    (dict(min_level=3, max_level=5, convention="keras_hub"), (128, 128)),  # the general path
    (dict(min_level=3, max_level=5, clip=True), (96, 64)),  # the general path
]


@pytest.mark.parametrize("kw, size", GRID_CASES)
def test_grid_iou_is_bit_equal_to_the_general_iou(kw, size):
    """The matcher's fast IoU must give the very same numbers (so the very same targets, ties
    included) for boxes of every kind: inside, crossing the edge, outside, degenerate (zero or
    negative extent), equal to an anchor, and invalid (padding) rows."""
    from detect.ops.boxes import pairwise_iou

    gen = AnchorGenerator(**kw)
    anchors = gen(size).numpy()
    rng = np.random.default_rng(7)
    xy = rng.uniform(-20, max(size) + 10, (3, 12, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 70, (3, 12, 2))], -1).astype(np.float32)
    boxes[0, 0] = anchors[5]  # IoU exactly 1 with an anchor (ties between equal anchors too)
    boxes[0, 1] = [30, 30, 30, 50]  # zero width
    boxes[0, 2] = [40, 40, 35, 60]  # negative width
    boxes[1, :3] = anchors[len(anchors) // 2] + np.float32(0.25)
    valid = rng.uniform(size=(3, 12)) > 0.2
    valid[2] = False  # an all-padding image
    valid[0, :3] = valid[1, :3] = True
    fast = gen.pairwise_iou(size, tf.constant(boxes), tf.constant(valid)).numpy()
    slow = pairwise_iou(tf.constant(anchors), tf.constant(boxes), b_valid=tf.constant(valid)).numpy()
    np.testing.assert_array_equal(fast, slow)
    assert fast.shape == (3, len(anchors), 12) and (fast[:2] > 0.5).sum() >= 3 and (fast[2] == 0).all()


def test_grid_iou_with_a_run_time_image_size():
    """In training the padded size may be a tensor (images of any size): same numbers."""
    gen = AnchorGenerator(min_level=2, max_level=4, anchor_size=2, num_scales=2)
    boxes = tf.constant([[[10.0, 12, 30, 40], [50, 5, 58, 20]]])
    valid = tf.constant([[True, True]])
    f = tf.function(lambda h, w: gen.pairwise_iou((h, w), boxes, valid))
    np.testing.assert_array_equal(f(tf.constant(64), tf.constant(96)).numpy(),
                                  gen.pairwise_iou((64, 96), boxes, valid).numpy())


def test_matcher_with_the_grid_iou_gives_the_same_targets():
    from detect.ops.matcher import assign_targets

    gen = AnchorGenerator(min_level=2, max_level=4, anchor_size=2, num_scales=3)
    size = (128, 128)
    anchors = gen(size)
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 110, (2, 20, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(3, 40, (2, 20, 2))], -1).astype(np.float32)
    boxes[0, 0] = anchors.numpy()[100]  # ties between the anchors a box overlaps most
    boxes[1, 3] = np.nan  # a non-finite row never matches
    labels = rng.integers(0, 3, (2, 20)).astype(np.int32)
    labels[1, 15:] = -1
    kw = dict(positive_iou=0.5, negative_iou=0.4, allow_low_quality_matches=True, variances=(0.1, 0.1, 0.2, 0.2))
    slow = assign_targets(anchors, boxes, labels, **kw)
    fast = assign_targets(anchors, boxes, labels, **kw,
                          anchor_iou=lambda b, v: gen.pairwise_iou(size, b, v))
    for a, b in zip(slow, fast):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert (slow.cls_targets.numpy() >= 0).sum() > 40
