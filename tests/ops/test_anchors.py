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
