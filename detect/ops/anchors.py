"""Anchor boxes for every pyramid level, vectorized.

Conventions:
- Level ``l`` has stride ``2**l`` and a feature map of ``ceil(H / 2**l)`` x
  ``ceil(W / 2**l)`` cells (what stride-2 'same' convolutions produce, so any
  image size works, not only multiples of 128).
- The anchor of cell ``(i, j)`` is centred at ``((j + 0.5) * stride,
  (i + 0.5) * stride)`` in (x, y) pixels: offset 0.5.
- Base size at level ``l`` is ``anchor_size * stride`` (4 x 8 = 32 px at P3 up
  to 4 x 128 = 512 px at P7). Octave scales are ``2 ** (k / num_scales)``.
- Aspect ratio is height / width: ratio ``r`` gives
  ``w = size / sqrt(r)``, ``h = size * sqrt(r)`` (area preserved).
- Output order: levels ascending, then row ``i``, column ``j``, then anchor
  ``a = scale_index * len(aspect_ratios) + ratio_index``. The heads flatten
  their ``[B, H, W, A * C]`` outputs in exactly this order.

``convention="keras_hub"`` reproduces keras-hub's ``AnchorGenerator`` (for
imported models, whose weights learned those boxes): the cell stride is
``H // ceil(H / 2**l)`` (2**l when H is a multiple of it), centres at
``i * stride`` (offset 0), base sizes ``int(anchor_size * 2**l * 2**(k/S))``
and half-sides rounded to whole pixels (half to even, as ``tf.round``).
Our output order is kept; the importer permutes the heads' channels.
``clip=True`` clips every anchor to the input (keras-cv's RetinaNet).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf

from detect.ops.boxes import pairwise_iou

DEFAULT_ASPECT_RATIOS = (0.5, 1.0, 2.0)


class AnchorGenerator:
    """Generates xyxy anchors ``[N, 4]`` (float32 pixels) for an image size.

    Anchors for a static image size are computed once and cached; inside a
    ``tf.function`` they become a graph constant. Dynamic (tensor) sizes are
    computed with TF ops in the graph.
    """

    def __init__(
        self,
        *,
        min_level: int = 3,
        max_level: int = 7,
        anchor_size: float = 4.0,
        num_scales: int = 3,
        aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
        convention: str = "detect",
        clip: bool = False,
    ):
        if not 1 <= min_level <= max_level:
            raise ValueError(f"need 1 <= min_level <= max_level, got {min_level}, {max_level}")
        if num_scales < 1 or not aspect_ratios or min(aspect_ratios) <= 0:
            raise ValueError(
                f"need num_scales >= 1 and positive aspect_ratios, got "
                f"{num_scales}, {tuple(aspect_ratios)}"
            )
        self.min_level = min_level
        self.max_level = max_level
        self.anchor_size = float(anchor_size)
        self.num_scales = num_scales
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        if convention not in ("detect", "keras_hub"):
            raise ValueError(f"anchor convention must be 'detect' or 'keras_hub', got {convention!r}")
        self.convention, self.clip = convention, bool(clip)
        self._cache: dict[tuple[int, int], tf.Tensor] = {}

    @classmethod
    def from_config(cls, anchors) -> "AnchorGenerator":
        """The generator of an ``AnchorConfig`` (``ModelConfig.anchors``)."""
        return cls(min_level=anchors.min_level, max_level=anchors.max_level, anchor_size=anchors.anchor_size,
                   num_scales=anchors.num_scales, aspect_ratios=anchors.aspect_ratios,
                   convention=anchors.convention, clip=anchors.clip)

    @property
    def num_anchors_per_location(self) -> int:
        return self.num_scales * len(self.aspect_ratios)

    @property
    def levels(self) -> range:
        return range(self.min_level, self.max_level + 1)

    def _unit_shapes(self) -> list[tuple[float, float]]:
        """``[A]`` (width, height) of the anchors at unit base size, in anchor order."""
        whs = []
        for k in range(self.num_scales):
            scale = 2.0 ** (k / self.num_scales)
            for r in self.aspect_ratios:
                whs.append((scale / math.sqrt(r), scale * math.sqrt(r)))
        return whs

    def _shapes(self) -> tf.Tensor:
        """``[A, 2]`` (width, height) of the anchors at unit base size."""
        return tf.constant(self._unit_shapes(), tf.float32)

    #: Where a cell's anchors are centred, in strides from the cell's corner (keras-hub: its corner).
    @property
    def centre_offset(self) -> float:
        return 0.0 if self.convention == "keras_hub" else 0.5

    def level_shapes(self, level: int) -> np.ndarray:
        """``[A, 2]`` float64 (width, height) in pixels of the anchors of ``level``, in anchor order,
        as :meth:`__call__` lays them out (keras-hub's rounding included). For code that needs
        the anchor rule without the anchors of an image (anchor fitting)."""
        if self.convention == "keras_hub":
            half = self._keras_hub_half_sides(level).numpy().astype(np.float64)
            return half[:, 2:] - half[:, :2]
        base = self.anchor_size * 2**level
        return np.asarray([(base * 2 ** (k / self.num_scales) / math.sqrt(r),
                            base * 2 ** (k / self.num_scales) * math.sqrt(r))
                           for k in range(self.num_scales) for r in self.aspect_ratios], np.float64)

    def feature_sizes(self, image_size) -> list[tuple]:
        """``[(h_l, w_l), ...]`` per level; ints for int input, tensors otherwise."""
        h, w = image_size
        out = []
        for level in self.levels:
            s = 2**level
            if isinstance(h, int) and isinstance(w, int):
                out.append((-(-h // s), -(-w // s)))
            else:
                out.append(((h + s - 1) // s, (w + s - 1) // s))
        return out

    def _level_anchors(self, level: int, fh, fw, image_size) -> tf.Tensor:
        if self.convention == "keras_hub":
            h, w = image_size
            ys = tf.cast(tf.range(fh), tf.float32) * tf.cast(h // fh, tf.float32)
            xs = tf.cast(tf.range(fw), tf.float32) * tf.cast(w // fw, tf.float32)
            half = self._keras_hub_half_sides(level)
        else:
            xs, ys, half_wh = self._grid(level, fh, fw)
            half = tf.concat([-half_wh, half_wh], axis=-1)  # [A, 4]
        cy, cx = tf.meshgrid(ys, xs, indexing="ij")  # [fh, fw]
        centres = tf.stack([cx, cy, cx, cy], axis=-1)[:, :, None, :]  # [fh, fw, 1, 4]
        return tf.reshape(centres + half, [-1, 4])

    def _grid(self, level: int, fh, fw) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The ``detect`` convention's layout of ``level``, stated once for the anchors and the
        grid IoU: cell centres ``xs [fw]`` and ``ys [fh]`` at ``(j + 0.5) * stride`` pixels,
        and the anchors' half-sides ``[A, 2]`` (half width, half height) in pixels."""
        stride = float(2**level)
        xs = (tf.cast(tf.range(fw), tf.float32) + 0.5) * stride
        ys = (tf.cast(tf.range(fh), tf.float32) + 0.5) * stride
        return xs, ys, 0.5 * (self._shapes() * (self.anchor_size * stride))

    def _keras_hub_half_sides(self, level: int) -> tf.Tensor:
        """``[A, 4]`` rounded (-w/2, -h/2, w/2, h/2) in our anchor order, computed as keras-hub
        does (float32 ratios, Python-int sizes) so the values are bit-equal."""
        ratios = tf.constant(self.aspect_ratios, tf.float32)
        h_ratio = tf.sqrt(ratios)
        w_ratio = 1 / h_ratio
        rows = []
        for k in range(self.num_scales):
            size = float(int(2**level * self.anchor_size * 2 ** (k / self.num_scales)))
            ws, hs = w_ratio * size, h_ratio * size
            rows.append(tf.stack([-1 * ws, -1 * hs, ws, hs], axis=1) / 2)
        return tf.round(tf.concat(rows, axis=0))

    def __call__(self, image_size) -> tf.Tensor:
        """Anchors for ``image_size = (height, width)`` -> ``[N, 4]`` xyxy float32."""
        h, w = image_size
        static = isinstance(h, int) and isinstance(w, int)
        if static and (h, w) in self._cache:
            return self._cache[(h, w)]
        if static:
            with tf.init_scope():  # compute eagerly even when traced
                anchors = self._compute((h, w))
            self._cache[(h, w)] = anchors
            return anchors
        return self._compute((h, w))

    def _compute(self, image_size) -> tf.Tensor:
        parts = [
            self._level_anchors(level, fh, fw, image_size)
            for level, (fh, fw) in zip(self.levels, self.feature_sizes(image_size))
        ]
        anchors = tf.concat(parts, axis=0)
        if self.clip:
            h, w = (tf.cast(v, tf.float32) for v in image_size)
            anchors = tf.maximum(tf.minimum(anchors, tf.stack([w, h, w, h])), 0.0)
        return anchors

    def pairwise_iou(self, image_size, boxes: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
        """IoU of the anchors of ``image_size`` with ``boxes [B, M, 4]`` -> ``[B, N, M]``.

        Bit-equal to ``boxes.pairwise_iou(self(image_size), boxes, b_valid=valid)`` for finite
        ``boxes`` (``valid [B, M]`` bool; invalid boxes get IoU 0), in about a fifth of the time:
        an anchor's x-extent depends only on its column and shape and its y-extent only on its
        row and shape, so the overlaps along each axis are computed on ``[B, fw, A, M]`` and
        ``[B, fh, A, M]``, and only their product, the union and the ratio on the full
        ``[B, fh, fw, A, M]``. (Measured on a CPU recipe's batch: the matcher was a quarter
        of a training step, and this IoU two thirds of the matcher.) keras-hub's convention
        and clipped anchors take the general path.
        """
        if self.convention != "detect" or self.clip:
            return pairwise_iou(self(image_size), boxes, b_valid=valid)
        boxes = tf.cast(boxes, tf.float32)
        bx0, by0, bx1, by1 = tf.unstack(boxes, num=4, axis=-1)  # [B, M]
        area_b = tf.maximum(bx1 - bx0, 0.0) * tf.maximum(by1 - by0, 0.0)
        keep = tf.cast(valid, tf.float32)[:, None, None, :]  # [B, 1, 1, M]
        parts = []
        for level, (fh, fw) in zip(self.levels, self.feature_sizes(image_size)):
            xs, ys, half = self._grid(level, fh, fw)  # [fw], [fh], [A, 2]
            ax0, ax1 = xs[:, None] - half[:, 0], xs[:, None] + half[:, 0]  # [fw, A]
            ay0, ay1 = ys[:, None] - half[:, 1], ys[:, None] + half[:, 1]  # [fh, A]

            def overlap(lo, hi, b_lo, b_hi):  # [f, A] x [B, M] -> [B, f, A, M]
                return tf.maximum(tf.minimum(hi[None, :, :, None], b_hi[:, None, None, :])
                                  - tf.maximum(lo[None, :, :, None], b_lo[:, None, None, :]), 0.0)

            iw = overlap(ax0, ax1, bx0, bx1) * keep
            ih = overlap(ay0, ay1, by0, by1)
            inter = iw[:, None] * ih[:, :, None]  # [B, fh, fw, A, M]
            area_a = tf.maximum(ax1 - ax0, 0.0)[None] * tf.maximum(ay1 - ay0, 0.0)[:, None]  # [fh, fw, A]
            union = (area_a[None, ..., None] + area_b[:, None, None, None, :]) - inter
            parts.append(tf.reshape(inter / union, [tf.shape(boxes)[0], -1, tf.shape(boxes)[1]]))
        return tf.concat(parts, axis=1)

    def num_anchors(self, image_size: tuple[int, int]) -> int:
        """Total number of anchors for a static image size."""
        a = self.num_anchors_per_location
        return sum(fh * fw * a for fh, fw in self.feature_sizes(tuple(map(int, image_size))))
