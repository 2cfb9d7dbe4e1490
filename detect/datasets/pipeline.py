"""tf.data pipeline: decode, resize, augment, pad, batch.

Output elements are ``(images [B, H, W, 3] float32 0..255, {"boxes" [B, M, 4]
float32 xyxy pixels, "labels" [B, M] int32})`` with ``M = data.max_boxes``
(padding rows: label -1) and ``H, W`` multiples of 128, which is what
``RetinaNet.fit`` takes. Decoding runs in parallel; every random choice is
a stateless function of ``(seed, element index)``, so a seed fixes the whole
stream (and a resumed run sees the same stream again).
"""

from __future__ import annotations

import sys

import numpy as np
import tensorflow as tf

from detect.config import DataConfig
from detect.datasets import transforms as T
from detect.datasets.coco import CocoDataset
from detect.imagery.images import RGB, BandRule, read_image

SIZE_MULTIPLE = 128


def _resize(image, boxes, config: DataConfig):
    if config.resize == "none":
        return image, boxes
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    if config.resize == "fixed":
        size = [config.image_size, config.image_size]
        nh = nw = float(config.image_size)
    else:
        if config.resize == "scale":
            s = tf.constant(config.scale, tf.float32)
        else:
            s = tf.minimum(config.min_side / tf.minimum(h, w), config.max_side / tf.maximum(h, w))
        nh, nw = tf.round(h * s), tf.round(w * s)
        size = tf.cast(tf.stack([nh, nw]), tf.int32)
    image = tf.image.resize(image, size, method="bilinear")
    return image, boxes * tf.stack([nw / w, nh / h, nw / w, nh / h])


def _pad_targets(boxes, labels, max_boxes: int):
    boxes, labels = boxes[:max_boxes], labels[:max_boxes]
    n = tf.shape(labels)[0]
    boxes = tf.pad(boxes, [[0, max_boxes - n], [0, 0]])
    labels = tf.pad(labels, [[0, max_boxes - n]], constant_values=-1)
    return tf.ensure_shape(boxes, [max_boxes, 4]), tf.ensure_shape(labels, [max_boxes])


def make_dataset(ds: CocoDataset, config: DataConfig, *, batch_size: int, training: bool,
                 seed: int = 0, repeat: bool = False, skip: int = 0, bands: BandRule = RGB) -> tf.data.Dataset:
    """Batches for ``model.fit`` / ``model.evaluate`` (see the module doc).

    ``bands``: the model's band rule (images ``[B, H, W, bands.count]``).

    ``skip`` drops that many elements before decoding (cheap): a resumed run
    continues the exact stream of an uninterrupted one.
    """
    samples = ds.samples
    if not samples:
        raise ValueError("the dataset has no usable images")

    failed: set[str] = set()

    def load(i):
        # load_coco decode-checked every file; one that changed since is
        # skipped here with a warning, because an exception raised inside
        # tf.data's parallel map can hang or abort the process.
        s = samples[int(i)]
        try:
            img = read_image(s.path, bands)
            if img.shape[:2] != (s.height, s.width):
                raise ValueError(f"image is {img.shape[1]}x{img.shape[0]}, was {s.width}x{s.height} "
                                 f"when the dataset was loaded")
        except (OSError, ValueError) as err:
            if str(s.path) not in failed:
                failed.add(str(s.path))
                print(f"\nwarning: {s.path}: {err}; skipped from now on ({len(failed)} image(s) so far)",
                      file=sys.stderr, flush=True)
            return (np.zeros((1, 1, bands.count), np.float32), np.zeros((0, 4), np.float32), np.zeros(0, np.int32),
                    False)
        return img.astype(np.float32), s.boxes, s.labels, True

    def decode(counter, index):
        img, boxes, labels, ok = tf.numpy_function(
            load, [index], [tf.float32, tf.float32, tf.int32, tf.bool])
        img.set_shape([None, None, bands.count])
        boxes.set_shape([None, 4])
        labels.set_shape([None])
        return counter, img, boxes, labels, ok

    def augment(counter, img, boxes, labels, _ok):
        img, boxes = _resize(img, boxes, config)
        if training:
            seed_pair = tf.stack([tf.constant(seed, tf.int64), counter])
            s_geo, s_scale, s_col = T._split(tf.cast(seed_pair, tf.int32), 3)
            s_crop = T._split(s_col, 2)[1]  # derived: the other streams stay as they were
            img, boxes = T.random_flips_and_rotation(
                img, boxes, s_geo, horizontal=config.hflip, vertical=config.vflip, rotate=config.rot90)
            if config.scale_jitter and tuple(config.scale_jitter) != (1.0, 1.0):
                img, boxes, labels = T.random_scale_crop(img, boxes, labels, s_scale,
                                                         scale_range=tuple(config.scale_jitter))
            if config.crop_size:
                img, boxes, labels = T.random_crop(img, boxes, labels, s_crop, size=config.crop_size)
            if config.color_jitter:
                img = T.random_color(img, s_col)
        boxes, labels = _pad_targets(boxes, labels, config.max_boxes)
        return img, {"boxes": boxes, "labels": labels}

    n = len(samples)
    # Element k of the stream is sample perm_e[k % n] of epoch e = k // n, where
    # perm_e is a stateless permutation of (seed, e): the order depends on
    # nothing but the seed (not TF's global seed), and skipping is exact.
    if training:
        end = tf.int64.max if repeat else n
        d = tf.data.Dataset.range(skip, end)

        def pick(k):
            perm = tf.argsort(tf.random.stateless_uniform(
                [n], tf.stack([tf.cast(seed, tf.int64), k // n])))
            return k, tf.cast(tf.gather(perm, k % n), tf.int64)

        d = d.map(pick, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        d = tf.data.Dataset.range(n).map(lambda i: (i, i)).skip(skip)
        if repeat:
            d = d.repeat()
    d = d.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    d = d.filter(lambda counter, img, boxes, labels, ok: ok)
    d = d.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    d = d.padded_batch(batch_size, padded_shapes=([None, None, bands.count], {"boxes": [config.max_boxes, 4],
                                                                    "labels": [config.max_boxes]}),
                       padding_values=(0.0, {"boxes": 0.0, "labels": -1}), drop_remainder=training)
    d = d.map(_pad_to_multiple, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return d.prefetch(tf.data.AUTOTUNE)


def _pad_to_multiple(images, targets):
    shape = tf.shape(images)
    h = (shape[1] + SIZE_MULTIPLE - 1) // SIZE_MULTIPLE * SIZE_MULTIPLE
    w = (shape[2] + SIZE_MULTIPLE - 1) // SIZE_MULTIPLE * SIZE_MULTIPLE
    return tf.pad(images, [[0, 0], [0, h - shape[1]], [0, w - shape[2]], [0, 0]]), targets
