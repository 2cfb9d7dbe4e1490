"""Feature pyramid: C3..C5 -> P3..P7 (Lin et al. 2017, as used by RetinaNet), optionally P2.

Lateral 1x1 convs on C3..C5 (and C2 for P2); top-down nearest-neighbour upsampling resized to
the lateral's exact shape (so odd feature sizes work); 3x3 smoothing; P6 by a
stride-2 3x3 conv on P5 (torchvision) or C5 (paper / detectron2); P7 by a
stride-2 3x3 conv on ReLU(P6).
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="detect")
class ResizeToMatch(keras.layers.Layer):
    """2x nearest-neighbour upsampling of ``x``, cropped to ``reference``'s shape.

    A level is ``ceil(size / 2)`` of the one below, so doubling and cropping
    gives the lateral's exact shape for odd sizes too. Written as repeat +
    slice rather than ``tf.image.resize``: the resize gradient has no XLA CPU
    kernel, which made ``jit_compile=True`` training fail.
    """

    def call(self, x, reference):
        size = tf.shape(reference)
        up = tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)
        return up[:, : size[1], : size[2], :]

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


def build_fpn(c2, c3, c4, c5, *, channels: int, p6_from: str = "p5", min_level: int = 3,
              max_level: int = 7):
    """Functional FPN on symbolic tensors -> ``[P{min_level}, ..., P{max_level}]``.

    P2 (stride 4, for objects of about 8-16 px) joins the top-down pathway
    only when ``min_level == 2``: it quadruples the head's work of P3, so it
    is built only when asked for. Layer names do not depend on ``min_level``,
    so P3..P7 weights are interchangeable between the two layouts.
    """
    bottom = min(min_level, 3)
    inputs = {2: c2, 3: c3, 4: c4, 5: c5}
    lat = {level: keras.layers.Conv2D(channels, 1, name=f"fpn_lateral{level}")(inputs[level])
           for level in range(bottom, 6)}
    top = {5: lat[5]}
    for level in range(4, bottom - 1, -1):
        up = ResizeToMatch(name=f"fpn_upsample{level + 1}")(top[level + 1], lat[level])
        top[level] = keras.layers.Add(name=f"fpn_merge{level}")([lat[level], up])
    outs = {level: keras.layers.Conv2D(channels, 3, padding="same", name=f"fpn_output{level}")(top[level])
            for level in range(bottom, 6)}
    if max_level >= 6:
        src = outs[5] if p6_from == "p5" else c5
        outs[6] = keras.layers.Conv2D(channels, 3, strides=2, padding="same", name="fpn_p6")(src)
    if max_level >= 7:
        p7 = keras.layers.ReLU(name="fpn_p6_relu")(outs[6])
        outs[7] = keras.layers.Conv2D(channels, 3, strides=2, padding="same", name="fpn_p7")(p7)
    return [outs[level] for level in range(min_level, max_level + 1)]
