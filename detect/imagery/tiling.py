"""Cutting large images into overlapping tiles and merging the tiles' detections.

Tiles are ``tile x tile`` windows stepped by ``tile * (1 - overlap)``; every
pixel is covered, and images smaller than a tile give one window the size of the
image. Unaligned (``align`` 1), the last row and column are shifted back to end
at the image edge, so no tile hangs over the border.

Aligned grids (``align``, the network's total stride): every window starts at
a multiple of ``align`` px. A convolutional detector is equivariant only to
shifts by its stride, so an object seen whole by tiles at aligned origins
lands on the same phase of every feature map and gets the same box and score,
whichever grid (overlap) cut the image: measured on a 2048 px dense scene,
two aligned grids agreed on 88% of confident boxes at IoU >= 0.9, two
unaligned ones on 54% (``tools/benchmark_tiling.py``). The step is rounded
down to a multiple (more overlap, never less), and the last row and column
start at the first multiple at or past ``size - tile``: they reach up to
``align - 1`` px past the image, which the reader pads with zeros, so every
tile of a scene larger than a tile has the same size (one traced shape, equal
batches). A
georeferenced north-up raster aligns its grid to the world's pixel lattice
(``phase``, :func:`world_phase`): a crop of it, or the parts of a mosaic cut
along any pixel line, get tiles on the same lattice as the whole; their first
row and column then start up to ``align - 1`` px before the image (the
reader pads that strip).

Merging: an object cut by a seam shows up in two tiles, once whole and once
truncated, or truncated in both. Plain IoU misses the second case (a half box
has IoU ~0.5 with the whole one), so two same-class boxes are duplicates when
IoU > ``iou_threshold``, or, when either box touches an inner tile border
(a seam, not the image edge), when their intersection over the smaller box is
> ``ios_threshold``. Duplicates are resolved greedily, the copy seen farthest
from its own tile's seams first (the tile where the object is most central:
the most context, and the same copy whichever grid cut the image; measured,
this took the share of confident boxes two aligned grids agree on at IoU >=
0.9 from 89% to 97%), then by score (the exact
greedy solver of :mod:`detect.ops.nms`), and when both the kept box and a
box it absorbed are truncated at seams, the kept box is widened to their union, which restores an object's extent
across the seam.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from detect.config.sections import tile_rule_problems
from detect.ops import numpy_boxes
from detect.ops.nms import greedy_keep

#: A box edge within this many pixels of a tile edge counts as touching it.
EDGE_TOLERANCE = 1.0


def grid_alignment(tile: int, overlap: float, multiple: int) -> int:
    """The alignment :func:`tile_windows` uses for a network of total stride ``multiple``:
    ``multiple`` itself, halved while rounding the step down to it would cost more than a
    quarter of the step (small tiles of a deep network: tile 256 at overlap 0.2 steps 205 px,
    aligned to 64 rather than 128 to step 192 rather than 128)."""
    step = tile * (1 - overlap)
    align = max(int(multiple), 1)
    while align > 1 and step // align * align < 0.75 * step:
        align //= 2
    return align


def tile_windows(height: int, width: int, tile: int, overlap: float, align: int = 1,
                 phase: tuple[int, int] = (0, 0)) -> np.ndarray:
    """``[T, 4]`` int windows ``(x0, y0, x1, y1)`` covering the image, row by row; with
    ``align`` > 1 each starts at a column ``px`` and row ``py`` (``phase``) plus a multiple of
    it, the first ones before the image when the phase is not 0, the last ones up to
    ``align - 1`` px past it (see module doc and :func:`grid_alignment`): every window of an
    axis longer than ``tile`` is ``tile`` long; a shorter axis is one window of its length."""
    for name, problem in tile_rule_problems(tile, overlap):
        raise ValueError(f"{name} {problem}")
    align = max(int(align), 1)
    step = max(int(round(tile * (1 - overlap))) // align * align, align)
    if step > tile:  # an alignment above the tile: plain windows (no gaps)
        align, step = 1, max(int(round(tile * (1 - overlap))), 1)

    def starts(n, p):
        if n <= tile:
            return [0]
        first = p % align - align if p % align else 0  # on the lattice, at or before 0
        last = first - (-(n - tile - first) // align) * align  # the first lattice start past n - tile
        out = [first]
        while out[-1] < last:  # each start at most one step (<= tile) past the previous: no gaps
            out.append(min(out[-1] + step, last))
        return out

    px, py = phase
    xe, ye = (tile if width > tile else width), (tile if height > tile else height)
    return np.array([(x, y, x + xe, y + ye) for y in starts(height, py) for x in starts(width, px)], np.int64)


def world_phase(transform, scale: float, align: int) -> tuple[int, int]:
    """``(px, py)``: the first column and row (of the image rescaled by ``scale``) on the
    world's lattice of ``align``-pixel cells, for a north-up affine ``transform`` (rasterio's
    ``Affine``: ``a`` pixel width, ``c`` / ``f`` the top-left corner, ``e`` negative pixel
    height); ``(0, 0)`` without one, for a rotated one, or with ``align`` 1. Two rasters on one
    pixel lattice (a crop, the parts of a mosaic) get tiles on the same world cells."""
    if transform is None or align <= 1 or transform.b != 0 or transform.d != 0 or not transform.a \
            or not transform.e:
        return 0, 0
    gx = round(transform.c * scale / transform.a)  # the lattice index of column 0
    gy = round(transform.f * scale / transform.e)
    return int(-gx % align), int(-gy % align)


def touches_seam(boxes: np.ndarray, windows: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[N]`` bool: box touches an edge of its own tile that is inside the image."""
    return seam_distance(boxes, windows, height, width) <= EDGE_TOLERANCE


def _abutting(boxes: np.ndarray, gap: float, share: float) -> np.ndarray:
    """``[N, N]``: boxes at most ``gap`` apart along x (or y) that share more than ``share`` of
    the shorter one's extent along y (or x)."""
    def along(lo, hi):  # overlap / shorter extent on one axis, and the gap on it
        overlap = np.minimum(hi[:, None], hi[None, :]) - np.maximum(lo[:, None], lo[None, :])
        shorter = np.minimum((hi - lo)[:, None], (hi - lo)[None, :])
        return np.where(shorter > 0, overlap / np.maximum(shorter, 1e-12), 0.0), -overlap

    x_share, x_gap = along(boxes[:, 0], boxes[:, 2])
    y_share, y_gap = along(boxes[:, 1], boxes[:, 3])
    return ((np.abs(x_gap) <= gap) & (y_share > share)) | ((np.abs(y_gap) <= gap) & (x_share > share))


def merge_detections(boxes, scores, labels, windows, *, height: int, width: int,
                     iou_threshold: float = 0.5, ios_threshold: float = 0.6,
                     return_index: bool = False, agnostic: bool = False, abut: float = 0.0):
    """Merge per-tile detections already in image coordinates.

    Args:
      boxes ``[N, 4]`` xyxy, scores ``[N]``, labels ``[N]``; windows ``[N, 4]``:
      the tile each detection came from. ``agnostic``: duplicates of any
      class merge (the model's class-agnostic NMS rule), else same class only.
      ``abut`` > 0: windows that only touch (scenes of a mosaic) rather than
      overlap: two boxes that both touch a seam, lie within ``abut`` of each
      other across it and share more than ``ios_threshold`` of the shorter
      one's extent along it are also duplicates (the two parts of one cut object).

    Returns:
      ``(boxes, scores, labels)`` of the kept detections, by descending score,
      and with ``return_index`` their indices in the input as a fourth item.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        empty = (boxes.astype(np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))
        return (*empty, np.zeros(0, np.int64)) if return_index else empty
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels)
    windows = np.asarray(windows, np.float64)
    # precedence: the copy seen farthest from its tile's seams (the most context, so the same
    # copy whatever the grid), then the higher score
    distance = seam_distance(boxes, windows, height, width)
    order = np.lexsort((-scores, -distance))
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    seam = distance[order] <= EDGE_TOLERANCE  # touches a seam (see touches_seam)

    iou = numpy_boxes.iou(boxes[:, None], boxes[None, :])
    ios = numpy_boxes.ios(boxes[:, None], boxes[None, :])
    same = np.ones((len(boxes),) * 2, bool) if agnostic else labels[:, None] == labels[None, :]
    # Only detections of different tiles are duplicates here: each tile's own were already
    # suppressed by the model's NMS (on unclipped boxes for imported models, whose parity a
    # second NMS on clipped boxes would break).
    win = windows[order]
    other_tile = (win[:, None, :] != win[None, :, :]).any(-1)
    duplicate = same & other_tile & ((iou > iou_threshold) | ((seam[:, None] | seam[None, :]) & (ios > ios_threshold)))
    if abut > 0:
        duplicate |= same & other_tile & seam[:, None] & seam[None, :] & _abutting(boxes, abut, ios_threshold)

    keep = greedy_keep(tf.constant(duplicate[None]), tf.ones([1, len(boxes)], tf.bool))[0].numpy()
    # Each dropped box is absorbed by the best-scoring kept box it duplicates.
    merged = boxes.copy()
    kept_idx = np.flatnonzero(keep)
    for i in np.flatnonzero(~keep):
        owners = kept_idx[(kept_idx < i) & duplicate[kept_idx, i]]
        # Only when both are truncated: an object split by a seam that no
        # tile saw whole. (Widening a whole box by a truncated false one
        # made boxes too large.)
        if len(owners) and seam[i] and seam[owners[0]]:
            o = owners[0]
            merged[o, :2] = np.minimum(merged[o, :2], boxes[i, :2])
            merged[o, 2:] = np.maximum(merged[o, 2:], boxes[i, 2:])
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(-scores[kept], kind="stable")]  # by descending score again
    out = (merged[kept].astype(np.float32), scores[kept].astype(np.float32), labels[kept].astype(np.int32))
    return (*out, order[kept]) if return_index else out


def seam_distance(boxes: np.ndarray, windows: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[N]`` px from each box to the nearest edge of its own tile that is a seam (inside the
    image; the image's own edges do not count), 0 when it touches or crosses one, ``inf`` for a
    tile with no seam (the whole image)."""
    x0, y0, x1, y1 = np.asarray(boxes, np.float64).T
    wx0, wy0, wx1, wy1 = np.asarray(windows, np.float64).T
    inf = np.inf
    gaps = [np.where(wx0 > 0, x0 - wx0, inf), np.where(wy0 > 0, y0 - wy0, inf),
            np.where(wx1 < width, wx1 - x1, inf), np.where(wy1 < height, wy1 - y1, inf)]
    return np.maximum(np.minimum.reduce(gaps), 0.0)
