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
