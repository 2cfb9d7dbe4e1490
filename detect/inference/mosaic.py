"""Merging detections across the edges of adjacent scenes of one CRS (``--merge-across-scenes``).

Orthophoto tiles of a mosaic cut objects at their edges exactly as tiles
of one raster do at seams, so the rule is the seam rule of
:mod:`detect.imagery.tiling`, applied in map coordinates: the scenes
(north-up ones; a rotated transform is left as it is and counted) are laid
on one pixel grid of the first scene's pixel size, with each scene's
extent as its "window", and folded one scene at a time, in input order,
through :class:`~detect.inference.predictor.SceneMerger`. Duplicates are
only looked for between different scenes; a box cut by a shared edge is
widened to the union of the parts. Scenes of a mosaic touch rather than
overlap, so the parts of a cut object touch without overlapping: parts
that meet across a shared edge (within one pixel) along most of the shorter
one's side are one object (``abut`` of
:func:`~detect.imagery.tiling.merge_detections`). Folding scene by
scene lets a widened box meet the next scene's part, which is how an
object on the corner of four scenes becomes one box.

Only boxes that can meet another scene's boxes take part (those touching
an inner edge of their own scene, by the seam test of
:mod:`detect.imagery.tiling`, or inside another scene's extent), which keeps
the merge local however many scenes there are.
"""

from __future__ import annotations

import numpy as np

from detect.imagery.tiling import EDGE_TOLERANCE, touches_seam
from detect.inference.predictor import SceneMerger


def _map_boxes(scene) -> np.ndarray:
    """``[N, 4]`` boxes of a north-up scene in map coordinates (xmin, ymin, xmax, ymax)."""
    t, b = scene.transform, scene.boxes
    xs = np.stack([t.a * b[:, 0] + t.c, t.a * b[:, 2] + t.c], 1)
    ys = np.stack([t.e * b[:, 1] + t.f, t.e * b[:, 3] + t.f], 1)
    return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], 1)


def _extent(scene) -> tuple[float, float, float, float]:
    t = scene.transform
    xs, ys = (t.c, t.c + t.a * scene.width), (t.f, t.f + t.e * scene.height)
    return min(xs), min(ys), max(xs), max(ys)


def merge_mosaic(group: list, iou_threshold: float, agnostic: bool = False):
    """Merge ``group`` (:class:`~detect.inference.gis.Scene` of one CRS) across scene edges.

    Returns ``(rows, merged, rotated)``: rows ``(scene, map_boxes or None,
    indices)`` of the detections to write (None: the scene's own pixel
    boxes through its transform), how many detections were merged into
    another scene's, and how many rotated scenes were left out of the merge.
    """
    north = [s for s in group if s.transform.b == 0 and s.transform.d == 0]
    rows = [(s, None, np.arange(len(s.scores))) for s in group if s not in north]
    rotated = len(group) - len(north)
    if not north:
        return rows, 0, rotated
    px, py = abs(north[0].transform.a), abs(north[0].transform.e)
    extents = np.array([_extent(s) for s in north])
    minx, maxy = extents[:, 0].min(), extents[:, 3].max()

    def grid(m):  # map xyxy -> grid pixels (x right, y down)
        return np.stack([(m[:, 0] - minx) / px, (maxy - m[:, 3]) / py,
                         (m[:, 2] - minx) / px, (maxy - m[:, 1]) / py], 1)

    windows = grid(extents)
    merger = SceneMerger((maxy - extents[:, 1].min()) / py, (extents[:, 2].max() - minx) / px,
                         iou_threshold, agnostic, abut=EDGE_TOLERANCE)
    candidates, offset = [], 0
    for k, s in enumerate(north):
        g = grid(_map_boxes(s))
        w = windows[k]
        at_edge = touches_seam(g, np.repeat(w[None], len(g), 0), merger.h, merger.w)
        others = np.delete(windows, k, 0)
        inside_other = ((g[:, None, 0] < others[None, :, 2]) & (g[:, None, 2] > others[None, :, 0])
                        & (g[:, None, 1] < others[None, :, 3]) & (g[:, None, 3] > others[None, :, 1])).any(1)
        cand = np.flatnonzero(at_edge | inside_other)
        candidates.append(cand)
        merger.add(w, g[cand].astype(np.float32), s.scores[cand].astype(np.float32),
                   s.labels[cand].astype(np.int32), ids=offset + cand)
        rows.append((s, None, np.setdiff1d(np.arange(len(s.scores)), cand)))
        offset += len(s.scores)
    # kept candidates, back to map coordinates, each with its scene
    starts = np.cumsum([0] + [len(s.scores) for s in north])
    for k, s in enumerate(north):
        mine = (merger.ids >= starts[k]) & (merger.ids < starts[k + 1])
        g = merger.boxes[mine].astype(np.float64)
        m = np.stack([minx + g[:, 0] * px, maxy - g[:, 3] * py, minx + g[:, 2] * px, maxy - g[:, 1] * py], 1)
        rows.append((s, m, merger.ids[mine] - starts[k]))
    merged = sum(len(c) for c in candidates) - len(merger.ids)
    return rows, merged, rotated
