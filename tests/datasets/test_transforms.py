import numpy as np
import pytest
import tensorflow as tf

from detect.datasets import transforms as T

MARK = 250.0


def marked_image(h=60, w=90, box=(10, 5, 30, 25)):
    """Dark image with one bright rectangle exactly at ``box`` (xyxy, integer pixels)."""
    img = np.full((h, w, 3), 20.0, np.float32)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = MARK
    return tf.constant(img), tf.constant([box], tf.float32)


def marked_extent(image):
    """xyxy of the bright pixels (threshold halfway)."""
    ys, xs = np.nonzero(image.numpy()[..., 0] > (MARK + 20) / 2)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("fn", [T.hflip, T.vflip, T.rot90])
def test_geometric_transforms_keep_boxes_on_their_pixels(fn):
    img, boxes = marked_image()
    out, out_boxes = fn(img, boxes)
    np.testing.assert_allclose(out_boxes[0], marked_extent(out))


def test_rot90_golden_and_four_rotations_are_identity():
    # 90x60 image (W=90), box [10,5,30,25] -> x' = y, y' = W - x: [5, 60, 25, 80]
    img, boxes = marked_image()
    out, b = T.rot90(img, boxes)
    assert out.shape == (90, 60, 3)
    np.testing.assert_allclose(b[0], [5, 60, 25, 80])
    for _ in range(3):
        out, b = T.rot90(out, b)
    np.testing.assert_array_equal(out, img)
    np.testing.assert_allclose(b, boxes)


@pytest.mark.parametrize("seed", range(6))
def test_random_flips_and_rotation(seed):
    img, boxes = marked_image()
    out, b = T.random_flips_and_rotation(img, boxes, tf.constant([seed, 7]))
    np.testing.assert_allclose(b[0], marked_extent(out))


@pytest.mark.parametrize("seed", range(6))
def test_scale_crop_boxes_follow_pixels(seed):
    img, boxes = marked_image(h=120, w=120, box=(40, 50, 80, 76))
    out, b, labels = T.random_scale_crop(img, boxes, tf.constant([1]), tf.constant([seed, 3]),
                                         scale_range=(0.7, 1.4))
    assert out.shape == (120, 120, 3)
    # the crop is at most 1.4x the image, so most of a central 40x26 mark stays in view:
    # the box must be kept, and it must sit on the mark's pixels
    assert labels.numpy().tolist() == [1]
    # bilinear resampling blurs the edge by at most a pixel
    np.testing.assert_allclose(b[0], marked_extent(out), atol=1.5)


def test_scale_crop_drops_mostly_hidden_boxes_keeps_visible_ones():
    img, _ = marked_image(h=100, w=100)
    boxes = tf.constant([[90.0, 90, 130, 130], [10.0, 10, 30, 30]])  # first: 1/16 visible
    _, b, labels = T.random_scale_crop(img, boxes, tf.constant([0, 1]), tf.constant([0, 0]),
                                       scale_range=(1.0, 1.0))
    np.testing.assert_array_equal(labels, [1])
    np.testing.assert_allclose(b, [[10, 10, 30, 30]])


def test_color_jitter_leaves_geometry_and_range():
    img, _ = marked_image()
    out = T.random_color(img, tf.constant([1, 2]))
    assert out.shape == img.shape and float(tf.reduce_min(out)) >= 0 and float(tf.reduce_max(out)) <= 255
    np.testing.assert_array_equal(out, T.random_color(img, tf.constant([1, 2])))  # stateless
    # it does change colours, differently per seed, and leaves the geometry: the
    # mark is still the brightest region, at the same pixels
    others = [T.random_color(img, tf.constant([s, 2])).numpy() for s in range(2, 6)]
    assert not np.allclose(out, img, atol=1.0)
    assert len({round(float(o.mean()), 3) for o in others}) == len(others)
    for o in [out.numpy(), *others]:
        assert o[5:25, 10:30].mean() > o.mean()
        np.testing.assert_allclose(np.ptp(o[5:25, 10:30], axis=(0, 1)), 0, atol=1e-3)  # uniform inside


@pytest.mark.parametrize("seed", range(4))
def test_random_crop_window_and_boxes(seed):
    img, boxes = marked_image(h=120, w=100, box=(40, 50, 70, 80))
    out, b, labels = T.random_crop(img, boxes, tf.constant([1]), tf.constant([seed, 9]), size=64)
    assert out.shape == (64, 64, 3)
    bright = (out.numpy()[..., 0] > (MARK + 20) / 2).sum()
    if labels.shape[0]:  # kept: the box is the visible part of the mark, at least 40% of it
        np.testing.assert_allclose(b[0], marked_extent(out), atol=1e-4)
        assert bright >= 0.4 * 30 * 30
    else:
        assert bright < 0.4 * 30 * 30
    small, _ = marked_image(h=40, w=100)
    out, _, _ = T.random_crop(small, tf.zeros([0, 4]), tf.zeros([0], tf.int32), tf.constant([seed, 9]), size=64)
    assert out.shape == (40, 64, 3)  # a side shorter than the crop is kept whole
