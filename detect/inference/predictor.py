"""Detection over whole images or rasters of any size: rescale, tiles, batches, merge.

Tiles are laid out on the *rescaled* image (``--scale``); each tile is read
from the source at the matching source-pixel window and resized, so a raster
is never resampled as a whole. Memory therefore follows the tile batch.
Detections are merged tile by tile against the already-kept detections that
intersect the tile's window, which keeps the merge local (no all-pairs
matrix over a whole scene).
"""

from __future__ import annotations

import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
from tqdm import tqdm

from detect.config import defaults
from detect.imagery.rasters import ArraySource, transform_gsd
from detect.imagery.tiling import grid_alignment, merge_detections, tile_windows, world_phase


@dataclass(frozen=True)
class TileOptions:
    """How imagery is cut for the model; ``None`` fields take the model's input rule."""

    tile: int | None = None  # tile side in (rescaled) pixels; images no larger are one tile
    overlap: float | None = None  # fraction of the tile
    batch_size: int = defaults.BATCH_SIZE
    scale: float | None = None  # model pixels per source pixel (ground-resolution match)
    align: int = 1  # tile origins at multiples of this (the network's stride; see tiling)

    def resolved(self, model) -> "TileOptions":
        """The model's input rule where a field is None, and the grid aligned to its stride."""
        config = model.model_config
        rule = config.input
        tile = self.tile or rule.tile
        overlap = rule.overlap if self.overlap is None else self.overlap
        stride = config.pad_multiple or 2 ** config.anchors.max_level  # what the model pads to
        return TileOptions(tile=tile, overlap=overlap, batch_size=self.batch_size,
                           scale=rule.scale if self.scale is None else self.scale,
                           align=grid_alignment(tile, overlap, stride))


#: Everything from the model's input rule, batches of 4.
DEFAULT_TILES = TileOptions()


@dataclass
class CapCount:
    """Tiles where a post-processing cap may have cut detections, summed over sources.

    ``at_max``: tiles that returned ``max_detections`` detections (more may
    have survived NMS). ``at_top_k``: tiles with fewer, but with more
    candidates above the score threshold than ``pre_nms_top_k`` lets into NMS
    (lower-scoring candidates were never considered).
    """

    tiles: int = 0
    at_max: int = 0
    at_top_k: int = 0
    blank: int = 0  # tiles skipped as holding no data (counted in ``tiles``)
    outside: int = 0  # detections wholly in the zero padding past the image (dropped)

    def add(self, det: dict) -> None:
        """Add one :func:`detect_many` result."""
        self.tiles += det["tiles"]
        self.at_max += det["capped_tiles"]
        self.at_top_k += det["top_k_capped_tiles"]
        self.blank += det.get("blank_tiles", 0)
        self.outside += det.get("outside_boxes", 0)

    def __iadd__(self, other: "CapCount") -> "CapCount":
        self.tiles += other.tiles
        self.at_max += other.at_max
        self.at_top_k += other.at_top_k
        self.blank += other.blank
        self.outside += other.outside
        return self

    def warning(self, pp) -> str | None:
        """One line naming the counts and the flag that lifts each cap (``pp``: the
        PostprocessConfig the tiles ran with); None when nothing was cut."""
        parts = []
        if self.at_max:
            parts.append(f"{self.at_max} of {self.tiles} tiles reached the detection cap of "
                         f"max_detections={pp.max_detections} (raise --max-detections)")
        if self.at_top_k:
            parts.append(f"{self.at_top_k} of {self.tiles} tiles had more candidates above the score "
                         f"threshold than pre_nms_top_k={pp.pre_nms_top_k} (raise --max-detections, "
                         f"which raises it, or --score-threshold)")
        lines = ["warning: " + "; ".join(parts) + "; objects beyond a cap are lost there"] if parts else []
        if self.outside:  # not a cap: boxes of nothing, but never dropped without a word
            lines.append(f"note: {self.outside} detection(s) lay wholly in the zero padding past an image's "
                         f"edge (the outer tiles of an aligned grid reach past it) and were dropped")
        return "\n".join(lines) or None


def read_tile(source, window, scale: float, *, skip_blank: bool = False) -> np.ndarray | None:
    """The ``window`` (x0, y0, x1, y1 on the image rescaled by ``scale``) of ``source``, ``[h, w, C]``.

    With ``skip_blank``, None when the source says the window holds no data
    (a raster's nodata / mask, or all zeros: see ``RasterSource.read_or_none``).
    """
    x0, y0, x1, y1 = (int(v) for v in window)
    h, w = rescaled_size(source.height, source.width, scale)
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:  # an aligned grid's outer rows / columns: zeros outside
        inner = read_tile(source, (max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)), scale, skip_blank=skip_blank)
        pad = ((max(-y0, 0), max(y1 - h, 0)), (max(-x0, 0), max(x1 - w, 0)), (0, 0))
        return None if inner is None else np.pad(inner, pad)
    read = getattr(source, "read_or_none", source.read) if skip_blank else source.read
    if scale == 1.0:
        return read(x0, y0, x1, y1)
    sx0, sy0 = int(np.floor(x0 / scale)), int(np.floor(y0 / scale))
    sx1 = min(source.width, max(sx0 + 1, int(np.ceil(x1 / scale))))
    sy1 = min(source.height, max(sy0 + 1, int(np.ceil(y1 / scale))))
    patch = read(sx0, sy0, sx1, sy1)
    if patch is None:
        return None
    out = cv2.resize(patch, (x1 - x0, y1 - y0),
                     interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return out.reshape(out.shape[0], out.shape[1], patch.shape[2])  # OpenCV drops a single band's axis


@dataclass
class TileResult:
    """One tile's detections in the coordinates of the (rescaled) scene.

    ``boxes`` ``[n, 4]`` float32 xyxy, clipped to the tile's window;
    ``scores`` ``[n]`` float32; ``labels`` ``[n]`` int32; ``at_max``: the tile
    returned ``max_detections``; ``at_top_k``: fewer, but its candidates
    above the score threshold exceeded ``pre_nms_top_k`` (see :class:`CapCount`).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    at_max: bool = False
    at_top_k: bool = False


def infer_tiles(model, tiles: list[np.ndarray | None], windows) -> list[TileResult | None]:
    """Run ``tiles`` (``[h, w, C]`` each, at most one batch) through ``model``; one result per tile.

    A None tile (a blank window, see :func:`read_tile`) never reaches the
    model and gives None. Tiles of different sizes (small images of several
    sizes; a scene's own tiles are all one size) run in separate calls, each
    padded only by the model itself: a tile's detections never depend on which
    tiles share its batch. Boxes are clipped to their tile and moved by its
    window's origin (:class:`SceneMerger` clips them to the image).
    """
    out: list[TileResult | None] = [None] * len(tiles)
    groups: dict[tuple, list[int]] = {}
    for k, t in enumerate(tiles):
        if t is not None:
            groups.setdefault(t.shape, []).append(k)
    for seen in groups.values():
        _infer_same_size(model, [tiles[k] for k in seen], [windows[k] for k in seen], out, seen)
    return out


def _infer_same_size(model, tiles, windows, out, slots) -> None:
    """:func:`infer_tiles` for tiles of one shape: results into ``out`` at ``slots``."""
    det = model.predict_on_batch(np.stack(tiles).astype(np.float32, copy=False))
    pp = model.model_config.postprocess
    for b, k in enumerate(slots):
        x0, y0, x1, y1 = windows[b]
        n = int(det["num_detections"][b])
        boxes = np.asarray(det["boxes"][b, :n], np.float64)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, x1 - x0) + x0  # (the scene's merger clips them
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, y1 - y0) + y0  # to the image)
        # "capped": NMS returned max_detections and what it cut could have been output
        at_max = bool(det["capped"][b]) if "capped" in det else n >= pp.max_detections
        out[k] = TileResult(boxes.astype(np.float32), np.asarray(det["scores"][b, :n], np.float32),
                            np.asarray(det["labels"][b, :n], np.int32), at_max=at_max,
                            at_top_k=not at_max and n < pp.max_detections
                            and int(det["num_candidates"][b]) > pp.pre_nms_top_k)


class SceneMerger:
    """A scene's merged detections, folded in one tile at a time, in window order.

    The one merge of ``detect``: :func:`detect_many` feeds it tiles as they
    come back from the model, :mod:`detect.inference.jobs` feeds it the
    tiles that shards stored; equal inputs in equal order give equal output.
    Each fold merges the tile's detections only with kept detections that
    intersect its window, which keeps the work local.
    """

    def __init__(self, height: int, width: int, iou_threshold: float, agnostic: bool = False,
                 abut: float = 0.0):
        self.h, self.w, self.iou, self.agnostic, self.abut = height, width, iou_threshold, agnostic, abut
        self.boxes = np.zeros((0, 4), np.float32)
        self.scores = np.zeros(0, np.float32)
        self.labels = np.zeros(0, np.int32)
        self.windows = np.zeros((0, 4), np.float64)
        self.ids = np.zeros(0, np.int64)
        self.tiles = self.capped = self.top_k_capped = self.blank = self.outside = 0

    def add_tile(self, window, tile: TileResult | None) -> None:
        """Fold in one tile (None: a blank window the model never saw, only counted)."""
        self.tiles += 1
        if tile is None:
            self.blank += 1
            return
        self.capped += tile.at_max
        self.top_k_capped += tile.at_top_k
        # a window of an aligned grid may reach past the image (padding): boxes end at its edge,
        # and a box with an extent that clipping leaves without one lay wholly in the padding
        # (dropped, counted). A box the decoder already made degenerate (e.g. clipped to a tile
        # edge that is also the image's) is the model's output, passed on as for any image.
        b = tile.boxes
        boxes = np.minimum(np.maximum(b, 0), np.array([self.w, self.h, self.w, self.h], np.float32))
        had_extent = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        keep = ~had_extent | ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
        self.outside += int((~keep).sum())
        self.add(window, boxes[keep], tile.scores[keep], tile.labels[keep])

    def add(self, window, boxes, scores, labels, ids=None) -> None:
        """Merge detections found in ``window`` (``ids``: caller's names for them, kept with them)."""
        x0, y0, x1, y1 = window
        b, a = self.boxes, self.abut  # boxes that only touch the window count as near when abutting
        near = (b[:, 0] < x1 + a) & (b[:, 2] > x0 - a) & (b[:, 1] < y1 + a) & (b[:, 3] > y0 - a)
        ids = np.full(len(boxes), -1, np.int64) if ids is None else np.asarray(ids, np.int64)
        pool_boxes = np.concatenate([b[near], boxes])
        pool_windows = np.concatenate([self.windows[near],
                                       np.repeat(np.asarray(window, np.float64)[None], len(boxes), 0)])
        pool_ids = np.concatenate([self.ids[near], ids])
        mb, ms, ml, idx = merge_detections(
            pool_boxes, np.concatenate([self.scores[near], scores]),
            np.concatenate([self.labels[near], labels]), pool_windows,
            height=self.h, width=self.w, iou_threshold=self.iou, return_index=True, agnostic=self.agnostic,
            abut=self.abut)
        self.boxes = np.concatenate([b[~near], mb])
        self.scores = np.concatenate([self.scores[~near], ms])
        self.labels = np.concatenate([self.labels[~near], ml])
        self.windows = np.concatenate([self.windows[~near], pool_windows[idx]])
        self.ids = np.concatenate([self.ids[~near], pool_ids[idx]])

    def result(self, source_height: int, source_width: int, scale: float) -> dict:
        """Merged detections by descending score, boxes back in source pixels (see :func:`detect_many`)."""
        order = np.argsort(-self.scores, kind="stable")
        boxes = self.boxes[order]
        if scale != 1.0:
            boxes = boxes / np.array([self.w / source_width, self.h / source_height] * 2, np.float32)
        return {"boxes": boxes, "scores": self.scores[order], "labels": self.labels[order],
                "tiles": self.tiles, "capped_tiles": self.capped, "top_k_capped_tiles": self.top_k_capped,
                "blank_tiles": self.blank, "outside_boxes": self.outside, "scale": scale}


def scene_grid(height: int, width: int, scale: float, options: "TileOptions",
               phase: tuple[int, int] = (0, 0)) -> tuple[int, int, np.ndarray]:
    """``(h, w, windows)``: the size of a scene rescaled by ``scale`` and its tile windows ``[T, 4]``
    (``phase``: :func:`~detect.imagery.tiling.world_phase` of a georeferenced scene)."""
    if scale <= 0:
        raise ValueError(f"--scale must be > 0, got {scale}")
    h, w = rescaled_size(height, width, scale)
    return h, w, tile_windows(h, w, options.tile, options.overlap, options.align, phase)


def rescaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(h, w)`` of an image of ``height`` x ``width`` resampled by ``scale`` (at least 1 px)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def source_phase(source, scale: float, options: "TileOptions") -> tuple[int, int]:
    """The grid phase of ``source``: on the world's lattice when it is georeferenced."""
    return world_phase(getattr(source, "transform", None), scale, options.align)


class _Job:
    """One source in flight: its tiles (on the rescaled image) and their merge."""

    def __init__(self, model, source, options: TileOptions, scale: float):
        self.source, self.scale = source, scale
        h, w, self.windows = scene_grid(source.height, source.width, scale, options,
                                        source_phase(source, scale, options))
        pp = model.model_config.postprocess
        self.merger = SceneMerger(h, w, pp.iou_threshold, pp.agnostic)
        self.left = len(self.windows)

    def result(self) -> dict:
        return self.merger.result(self.source.height, self.source.width, self.scale)


def _read_batch(batch_items) -> list[np.ndarray | None]:
    return [read_tile(job.source, win, job.scale, skip_blank=True) for job, win in batch_items]


def _infer_batch(model, batch_items, tiles) -> None:
    for (job, win), result in zip(batch_items, infer_tiles(model, tiles, [w for _, w in batch_items])):
        job.merger.add_tile(win, result)
        job.left -= 1


def gsd_scale(model, source, options: TileOptions, gsd_match: bool, name) -> float | None:
    """Scale that brings a georeferenced raster to the model's training GSD (None: the rule's)."""
    want = model.model_config.input.gsd
    if not gsd_match or options.scale is not None or want is None or source.crs is None:
        return None
    have = transform_gsd(source.transform, source.crs)
    if have is None:
        print(f"\nnote: {name}: CRS {source.crs} is not projected; no GSD matching", file=sys.stderr)
        return None
    scale = have / want
    if abs(scale - 1) > 0.02:
        print(f"\nnote: {name}: {have:.4g} m/px resampled x{scale:.3g} to the model's {want:.4g} m/px "
              f"(--no-gsd-match to turn off)", file=sys.stderr)
    return scale


def detect_many(model, sources: Iterable, options: TileOptions = DEFAULT_TILES, *,
                scale_for: Callable | None = None, progress: bool = False) -> Iterator[dict]:
    """Detections for each source, in order: the one inference path of ``detect``.

    Every source (see :mod:`detect.imagery.rasters`) is resampled by the
    input rule's scale (or ``scale_for(source)``), cut into tiles, and the
    tiles of consecutive sources share batches of ``options.batch_size``
    (many small images run as fast as one large one). Each tile's detections
    are merged into its source's (seam-aware). Yields, per source, ``{"boxes"
    [N, 4] xyxy source pixels, "scores" [N], "labels" [N], "tiles",
    "capped_tiles" (tiles that hit ``max_detections``), "top_k_capped_tiles"
    (tiles with fewer, whose candidates exceeded ``pre_nms_top_k``; see
    :class:`CapCount`), "blank_tiles" (windows of a raster that hold only
    nodata, skipped before the model), "scale"}`` sorted by descending
    score, as soon as the source's last tile is done.
    """
    opts = options.resolved(model)
    jobs: deque[_Job] = deque()
    queue: list[tuple[_Job, tuple]] = []
    # The next batch's tiles are read on a thread while the model runs the current one
    # (raster reads and resampling release the GIL): one batch ahead, in order.
    reader = ThreadPoolExecutor(1, thread_name_prefix="detect-read")
    ahead: deque[tuple[list, Future]] = deque()
    bar = tqdm(total=0, unit="tile", desc="  tiles", leave=False, disable=not progress)

    def drain(final: bool):
        while True:
            while len(ahead) < 2 and (len(queue) >= opts.batch_size or (final and queue)):
                chunk, queue[:] = queue[:opts.batch_size], queue[opts.batch_size:]
                ahead.append((chunk, reader.submit(_read_batch, chunk)))
            if not ahead:
                break
            chunk, tiles = ahead.popleft()
            _infer_batch(model, chunk, tiles.result())
            bar.update(len(chunk))
        while jobs and jobs[0].left == 0:
            yield jobs.popleft().result()

    try:
        for source in sources:
            job = _Job(model, source, opts, scale_for(source) if scale_for else opts.scale)
            bar.total += len(job.windows)
            bar.refresh()
            jobs.append(job)
            queue.extend((job, w) for w in job.windows)
            yield from drain(False)
        yield from drain(True)
    finally:  # no read may outlive the generator: the caller closes the sources next
        reader.shutdown(wait=True, cancel_futures=True)
        bar.close()


def detect_source(model, source, options: TileOptions = DEFAULT_TILES, *, progress: bool = False,
                  scale: float | None = None) -> dict:
    """Detections for one source in its pixel coordinates (see :func:`detect_many`)."""
    return next(detect_many(model, [source], options, progress=progress,
                            scale_for=None if scale is None else (lambda _: scale)))


def detect_image(model, image: np.ndarray, options: TileOptions = DEFAULT_TILES) -> dict:
    """:func:`detect_source` for an RGB uint8 array ``[H, W, 3]``."""
    return detect_source(model, ArraySource(image, channels=model.model_config.input_bands), options)
