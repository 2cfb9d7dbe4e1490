"""Detection over whole images or rasters of any size: rescale, tiles, batches, merge.

Tiles are laid out on the *rescaled* image (``--scale``); each tile is read
from the source at the matching source-pixel window and resized, so a raster
is never resampled as a whole. Memory therefore follows the tile batch.
Detections are merged tile by tile against the already-kept detections that
intersect the tile's window, which keeps the merge local (no all-pairs
matrix over a whole scene).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
from tqdm import tqdm

from detect.inference.sources import ArraySource
from detect.inference.tiling import merge_detections, tile_windows


@dataclass(frozen=True)
class TileOptions:
    """How imagery is cut for the model; ``None`` fields take the model's input rule."""

    tile: int | None = None  # tile side in (rescaled) pixels; images no larger are one tile
    overlap: float | None = None  # fraction of the tile
    batch_size: int = 4
    scale: float | None = None  # model pixels per source pixel (ground-resolution match)

    def resolved(self, model) -> "TileOptions":
        rule = model.model_config.input
        return TileOptions(tile=self.tile or rule.tile,
                           overlap=rule.overlap if self.overlap is None else self.overlap,
                           batch_size=self.batch_size,
                           scale=rule.scale if self.scale is None else self.scale)


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

    def add(self, det: dict) -> None:
        """Add one :func:`detect_many` result."""
        self.tiles += det["tiles"]
        self.at_max += det["capped_tiles"]
        self.at_top_k += det["top_k_capped_tiles"]

    def __iadd__(self, other: "CapCount") -> "CapCount":
        self.tiles += other.tiles
        self.at_max += other.at_max
        self.at_top_k += other.at_top_k
        return self

    def warning(self, model) -> str | None:
        """One line naming the counts and the flag that lifts each cap; None when nothing was cut."""
        pp = model.model_config.postprocess
        parts = []
        if self.at_max:
            parts.append(f"{self.at_max} of {self.tiles} tiles reached the detection cap of "
                         f"max_detections={pp.max_detections} (raise --max-detections)")
        if self.at_top_k:
            parts.append(f"{self.at_top_k} of {self.tiles} tiles had more candidates above the score "
                         f"threshold than pre_nms_top_k={pp.pre_nms_top_k} (raise --max-detections, "
                         f"which raises it, or --score-threshold)")
        return "warning: " + "; ".join(parts) + "; objects beyond a cap are lost there" if parts else None


def read_tile(source, window, scale: float) -> np.ndarray:
    """The ``window`` (x0, y0, x1, y1 on the image rescaled by ``scale``) of ``source``, ``[h, w, C]``."""
    x0, y0, x1, y1 = window
    if scale == 1.0:
        return source.read(int(x0), int(y0), int(x1), int(y1))
    sx0, sy0 = int(np.floor(x0 / scale)), int(np.floor(y0 / scale))
    sx1 = min(source.width, max(sx0 + 1, int(np.ceil(x1 / scale))))
    sy1 = min(source.height, max(sy0 + 1, int(np.ceil(y1 / scale))))
    patch = source.read(sx0, sy0, sx1, sy1)
    out = cv2.resize(patch, (int(x1 - x0), int(y1 - y0)),
                     interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return out.reshape(out.shape[0], out.shape[1], patch.shape[2])  # OpenCV drops a single band's axis


class _Merger:
    """Keeps merged detections; folds in one tile's detections at a time."""

    def __init__(self, height, width, iou_threshold, agnostic=False):
        self.h, self.w, self.iou, self.agnostic = height, width, iou_threshold, agnostic
        self.boxes = np.zeros((0, 4), np.float32)
        self.scores = np.zeros(0, np.float32)
        self.labels = np.zeros(0, np.int32)
        self.windows = np.zeros((0, 4), np.int64)

    def add(self, window, boxes, scores, labels):
        x0, y0, x1, y1 = window
        b = self.boxes
        near = (b[:, 0] < x1) & (b[:, 2] > x0) & (b[:, 1] < y1) & (b[:, 3] > y0)
        pool_boxes = np.concatenate([b[near], boxes])
        pool_windows = np.concatenate([self.windows[near], np.repeat(np.asarray(window)[None], len(boxes), 0)])
        mb, ms, ml, idx = merge_detections(
            pool_boxes, np.concatenate([self.scores[near], scores]),
            np.concatenate([self.labels[near], labels]), pool_windows,
            height=self.h, width=self.w, iou_threshold=self.iou, return_index=True, agnostic=self.agnostic)
        self.boxes = np.concatenate([b[~near], mb])
        self.scores = np.concatenate([self.scores[~near], ms])
        self.labels = np.concatenate([self.labels[~near], ml])
        self.windows = np.concatenate([self.windows[~near], pool_windows[idx]])


class _Job:
    """One source in flight: its tiles (on the rescaled image), merger and cap count."""

    def __init__(self, model, source, options: TileOptions, scale: float):
        if scale <= 0:
            raise ValueError(f"--scale must be > 0, got {scale}")
        self.source, self.scale = source, scale
        self.h, self.w = max(1, round(source.height * scale)), max(1, round(source.width * scale))
        self.windows = tile_windows(self.h, self.w, options.tile, options.overlap)
        pp = model.model_config.postprocess
        self.merger = _Merger(self.h, self.w, pp.iou_threshold, pp.agnostic)
        self.left = len(self.windows)
        self.capped = self.top_k_capped = 0

    def result(self) -> dict:
        m = self.merger
        order = np.argsort(-m.scores, kind="stable")
        boxes = m.boxes[order]
        if self.scale != 1.0:
            boxes = boxes / np.array([self.w / self.source.width, self.h / self.source.height] * 2, np.float32)
        return {"boxes": boxes, "scores": m.scores[order], "labels": m.labels[order],
                "tiles": len(self.windows), "capped_tiles": self.capped,
                "top_k_capped_tiles": self.top_k_capped, "scale": self.scale}


def _run_batch(model, batch_items) -> None:
    tiles = [read_tile(job.source, win, job.scale) for job, win in batch_items]
    th, tw = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    batch = np.zeros((len(tiles), th, tw, tiles[0].shape[2]), np.float32)
    for b, t in enumerate(tiles):
        batch[b, : t.shape[0], : t.shape[1]] = t
    det = model.predict_on_batch(batch)
    pp = model.model_config.postprocess
    for b, (job, win) in enumerate(batch_items):
        n = int(det["num_detections"][b])
        job.capped += n >= pp.max_detections
        job.top_k_capped += n < pp.max_detections and int(det["num_candidates"][b]) > pp.pre_nms_top_k
        boxes = np.asarray(det["boxes"][b, :n], np.float64)
        x0, y0, x1, y1 = win
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, x1 - x0) + x0
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, y1 - y0) + y0
        job.merger.add(win, boxes.astype(np.float32), np.asarray(det["scores"][b, :n]),
                       np.asarray(det["labels"][b, :n]))
        job.left -= 1


def detect_many(model, sources: Iterable, options: TileOptions = DEFAULT_TILES, *,
                scale_for: Callable | None = None, progress: bool = False) -> Iterator[dict]:
    """Detections for each source, in order: the one inference path of ``detect``.

    Every source (see :mod:`detect.inference.sources`) is resampled by the
    input rule's scale (or ``scale_for(source)``), cut into tiles, and the
    tiles of consecutive sources share batches of ``options.batch_size``
    (many small images run as fast as one large one). Each tile's detections
    are merged into its source's (seam-aware). Yields, per source, ``{"boxes"
    [N, 4] xyxy source pixels, "scores" [N], "labels" [N], "tiles",
    "capped_tiles" (tiles that hit ``max_detections``), "top_k_capped_tiles"
    (tiles with fewer, whose candidates exceeded ``pre_nms_top_k``; see
    :class:`CapCount`), "scale"}`` sorted by
    descending score, as soon as the source's last tile is done.
    """
    opts = options.resolved(model)
    jobs: deque[_Job] = deque()
    queue: list[tuple[_Job, tuple]] = []
    bar = tqdm(total=0, unit="tile", desc="  tiles", leave=False, disable=not progress)

    def drain(final: bool):
        while len(queue) >= opts.batch_size or (final and queue):
            chunk, queue[:] = queue[:opts.batch_size], queue[opts.batch_size:]
            _run_batch(model, chunk)
            bar.update(len(chunk))
        while jobs and jobs[0].left == 0:
            yield jobs.popleft().result()

    for source in sources:
        job = _Job(model, source, opts, scale_for(source) if scale_for else opts.scale)
        bar.total += len(job.windows)
        bar.refresh()
        jobs.append(job)
        queue.extend((job, w) for w in job.windows)
        yield from drain(False)
    yield from drain(True)
    bar.close()


def detect_source(model, source, options: TileOptions = DEFAULT_TILES, *, progress: bool = False,
                  scale: float | None = None) -> dict:
    """Detections for one source in its pixel coordinates (see :func:`detect_many`)."""
    return next(detect_many(model, [source], options, progress=progress,
                            scale_for=None if scale is None else (lambda _: scale)))


def detect_image(model, image: np.ndarray, options: TileOptions = DEFAULT_TILES) -> dict:
    """:func:`detect_source` for an RGB uint8 array ``[H, W, 3]``."""
    return detect_source(model, ArraySource(image, channels=model.model_config.input_bands), options)
