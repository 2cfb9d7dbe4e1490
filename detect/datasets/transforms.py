"""Box-aware augmentations as TensorFlow ops on one sample.

Every function takes ``image [H, W, 3]`` float32 (0..255), ``boxes [M, 4]``
xyxy pixels and where needed ``labels [M]``; random ones take a stateless
``seed [2]`` int32 tensor, so a pipeline is reproducible from one seed.
Aerial imagery has no "up": flips both ways and 90-degree rotations are
label-preserving there.
"""

from __future__ import annotations

import tensorflow as tf

from detect.ops.boxes import area, clip_boxes


def _split(seed, n):
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=n))


def _coin(seed, p=0.5):
    return tf.random.stateless_uniform([], seed) < p


def hflip(image, boxes):
    """Mirror left-right: x -> W - x."""
    w = tf.cast(tf.shape(image)[1], boxes.dtype)
    x0, y0, x1, y1 = tf.unstack(boxes, axis=-1)
    return image[:, ::-1], tf.stack([w - x1, y0, w - x0, y1], axis=-1)


def vflip(image, boxes):
    """Mirror top-bottom: y -> H - y."""
    h = tf.cast(tf.shape(image)[0], boxes.dtype)
    x0, y0, x1, y1 = tf.unstack(boxes, axis=-1)
    return image[::-1], tf.stack([x0, h - y1, x1, h - y0], axis=-1)


def rot90(image, boxes):
    """Rotate 90 degrees counter-clockwise (``tf.image.rot90`` with k=1).

    Pixel (x, y) of a W-wide image goes to (y, W - x); the result is H wide.
    """
    w = tf.cast(tf.shape(image)[1], boxes.dtype)
    x0, y0, x1, y1 = tf.unstack(boxes, axis=-1)
    return tf.image.rot90(image), tf.stack([y0, w - x1, y1, w - x0], axis=-1)


def random_flips_and_rotation(image, boxes, seed, *, horizontal=True, vertical=True, rotate=True):
    s1, s2, s3 = _split(seed, 3)
    if horizontal:
        image, boxes = tf.cond(_coin(s1), lambda: hflip(image, boxes), lambda: (image, boxes))
    if vertical:
        image, boxes = tf.cond(_coin(s2), lambda: vflip(image, boxes), lambda: (image, boxes))
    if rotate:
        image, boxes = tf.cond(_coin(s3), lambda: rot90(image, boxes), lambda: (image, boxes))
    return image, boxes


def random_scale_crop(image, boxes, labels, seed, *, scale_range=(0.75, 1.25), min_visible=0.4):
    """Resize by a random factor, then crop (or pad bottom/right) back to the input size.

    Boxes are scaled, shifted and clipped; a box keeping less than
    ``min_visible`` of its area is dropped (ignore regions are kept while any
    part is visible).
    """
    s_scale, s_y, s_x = _split(seed, 3)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    scale = tf.random.stateless_uniform([], s_scale, scale_range[0], scale_range[1])
    nh = tf.maximum(tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32), 1)
    nw = tf.maximum(tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32), 1)
    image = tf.image.resize(image, [nh, nw], method="bilinear")
    sy = tf.cast(nh, tf.float32) / tf.cast(h, tf.float32)
    sx = tf.cast(nw, tf.float32) / tf.cast(w, tf.float32)
    boxes = boxes * tf.stack([sx, sy, sx, sy])
    oy = tf.random.stateless_uniform([], s_y, 0, tf.maximum(nh - h, 0) + 1, dtype=tf.int32)
    ox = tf.random.stateless_uniform([], s_x, 0, tf.maximum(nw - w, 0) + 1, dtype=tf.int32)
    image = tf.image.pad_to_bounding_box(image, 0, 0, tf.maximum(nh, h), tf.maximum(nw, w))
    return _crop(image, boxes, labels, oy, ox, h, w, min_visible)


def random_crop(image, boxes, labels, seed, *, size: int, min_visible=0.4):
    """A random ``size`` x ``size`` window (the whole extent along a side shorter than
    ``size``); boxes cut as in :func:`random_scale_crop`.

    Training on crops of large scenes makes each step cheaper at the same
    object scale, so a time budget buys more (smaller) steps.
    """
    s_y, s_x = _split(seed, 2)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    ch, cw = tf.minimum(h, size), tf.minimum(w, size)
    oy = tf.random.stateless_uniform([], s_y, 0, h - ch + 1, dtype=tf.int32)
    ox = tf.random.stateless_uniform([], s_x, 0, w - cw + 1, dtype=tf.int32)
    return _crop(image, boxes, labels, oy, ox, ch, cw, min_visible)


def _crop(image, boxes, labels, oy, ox, h, w, min_visible):
    """``image[oy:oy+h, ox:ox+w]`` with boxes shifted and clipped; a box keeping less
    than ``min_visible`` of its area is dropped (ignore regions: while any part shows)."""
    image = image[oy:oy + h, ox:ox + w]
    shifted = boxes - tf.cast(tf.stack([ox, oy, ox, oy]), tf.float32)
    clipped = clip_boxes(shifted, (h, w))
    before = area(shifted)
    visible = tf.math.divide_no_nan(area(clipped), before)
    keep = tf.where(labels >= 0, visible >= min_visible, visible > 0)
    return image, tf.boolean_mask(clipped, keep), tf.boolean_mask(labels, keep)


def random_color(image, seed, *, brightness=20.0, contrast=0.2, saturation=0.2):
    """Brightness (+-delta in 0..255 units), contrast and saturation jitter; boxes untouched."""
    s1, s2, s3 = _split(seed, 3)
    x = tf.image.stateless_random_brightness(image, brightness, s1)
    x = tf.image.stateless_random_contrast(x, 1 - contrast, 1 + contrast, s2)
    if image.shape[-1] == 3:  # saturation is an RGB notion; other band sets get brightness and contrast
        x = tf.image.stateless_random_saturation(x, 1 - saturation, 1 + saturation, s3)
    return tf.clip_by_value(x, 0.0, 255.0)
