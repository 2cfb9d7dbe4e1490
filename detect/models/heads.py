"""Classification and box subnets, shared across pyramid levels.

Each subnet is ``head_convs`` x (3x3 conv [+ norm] + ReLU) and a 3x3
prediction conv. The norm (``head_norm``) is GroupNorm, whose statistics cover
the whole feature map (so a detection's score depends on everything else in
its tile), or LayerNorm over each position's channels (it does not). The same
layer objects are applied to every level, so the weights are shared. Per-level
outputs ``[B, H, W, A * C]`` are flattened to ``[B, H * W * A, C]`` in (row,
column, anchor) order, the order of :class:`detect.ops.anchors.AnchorGenerator`,
and concatenated over levels.

The classification bias starts at ``-log((1 - pi) / pi)`` (pi = 0.01), so at
initialisation every anchor predicts foreground with probability ~0.01 and
the focal loss is not swamped by easy negatives in the first steps.
"""

from __future__ import annotations

import keras

from detect.models.backbones import group_count


class _Subnet:
    """Layer objects of one subnet, applied to every level (shared weights)."""

    def __init__(self, name, *, channels, convs, outputs_per_anchor, num_anchors, norm,
                 bias_init):
        self.outputs_per_anchor = outputs_per_anchor
        self.tower = []
        for i in range(convs):
            self.tower.append(keras.layers.Conv2D(
                channels, 3, padding="same", name=f"{name}_conv{i}",
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.01)))
            if norm == "group":
                self.tower.append(keras.layers.GroupNormalization(
                    groups=group_count(channels), name=f"{name}_gn{i}"))
            elif norm == "layer":  # per position: no statistics over the tile
                self.tower.append(keras.layers.LayerNormalization(axis=-1, name=f"{name}_ln{i}"))
            self.tower.append(keras.layers.ReLU(name=f"{name}_relu{i}"))
        # float32 output layer: logits and deltas stay float32 under mixed precision.
        self.predict = keras.layers.Conv2D(
            num_anchors * outputs_per_anchor, 3, padding="same", name=f"{name}_predict",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer=bias_init, dtype="float32")
        self.name = name

    def __call__(self, features):
        flat = []
        for level, x in enumerate(features):
            for layer in self.tower:
                x = layer(x)
            x = self.predict(x)
            flat.append(keras.layers.Reshape((-1, self.outputs_per_anchor),
                                             name=f"{self.name}_flatten{level}")(x))
        return keras.layers.Concatenate(axis=1, name=f"{self.name}_outputs", dtype="float32")(flat)


def build_heads(features, *, num_classes, num_anchors, channels, convs, norm, prior_bias):
    """Shared subnets on ``[P3..P7]`` -> ``(cls_logits [B, N, K], box_deltas [B, N, 4])``."""
    cls = _Subnet("cls", channels=channels, convs=convs, outputs_per_anchor=num_classes,
                  num_anchors=num_anchors, norm=norm,
                  bias_init=keras.initializers.Constant(prior_bias))
    box = _Subnet("box", channels=channels, convs=convs, outputs_per_anchor=4,
                  num_anchors=num_anchors, norm=norm, bias_init="zeros")
    return cls(features), box(features)
