"""Numba kernels of the LiteRT path (compiled on first use, cached next to this file when
it is writable): kept apart so that importing :mod:`detect.exporters.litert` compiles nothing."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def normalize_into(image, order, mean, std, out):
    """``out[y, x, c] = (float32(image[y, x, order[c]]) - mean[c]) / std[c]`` inside
    ``image [h, w, C]``'s extent, 0 in the rest of ``out [hp, wp, C]`` (float32 throughout,
    so the values equal TensorFlow's float32 ``(x - mean) / std``)."""
    h, w, c = image.shape
    hp, wp = out.shape[0], out.shape[1]
    for y in range(hp):
        if y < h:
            for x in range(w):
                for k in range(c):
                    out[y, x, k] = (np.float32(image[y, x, order[k]]) - mean[k]) / std[k]
            for x in range(w, wp):
                for k in range(c):
                    out[y, x, k] = 0.0
        else:
            for x in range(wp):
                for k in range(c):
                    out[y, x, k] = 0.0
