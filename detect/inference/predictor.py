"""Detection over whole images or rasters of any size: rescale, tiles, batches, merge.

Tiles are laid out on the *rescaled* image (``--scale``); each tile is read
from the source at the matching source-pixel window and resized, so a raster
is never resampled as a whole. Memory therefore follows the tile batch.
Detections are merged tile by tile against the already-kept detections that
intersect the tile's window, which keeps the merge local (no all-pairs
matrix over a whole scene).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

from detect.inference.sources import ArraySource
from detect.inference.tiling import merge_detections, tile_windows


@dataclass(frozen=True)
class TileOptions:
    tile: int = 512  # tile side in (rescaled) pixels; images no larger are one tile
    overlap: float = 0.2
    batch_size: int = 4
    scale: float = 1.0  # resample the imagery first (ground-resolution mismatch)


def _read_tile(source, window, scale: float) -> np.ndarray:
    x0, y0, x1, y1 = window
    if scale == 1.0:
        return source.read(int(x0), int(y0), int(x1), int(y1))
    sx0, sy0 = int(np.floor(x0 / scale)), int(np.floor(y0 / scale))
    sx1 = min(source.width, max(sx0 + 1, int(np.ceil(x1 / scale))))
    sy1 = min(source.height, max(sy0 + 1, int(np.ceil(y1 / scale))))
    patch = source.read(sx0, sy0, sx1, sy1)
    return cv2.resize(patch, (int(x1 - x0), int(y1 - y0)),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


class _Merger:
    """Keeps merged detections; folds in one tile's detections at a time."""

    def __init__(self, height, width, iou_threshold):
        self.h, self.w, self.iou = height, width, iou_threshold
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
            height=self.h, width=self.w, iou_threshold=self.iou, return_index=True)
        self.boxes = np.concatenate([b[~near], mb])
        self.scores = np.concatenate([self.scores[~near], ms])
        self.labels = np.concatenate([self.labels[~near], ml])
        self.windows = np.concatenate([self.windows[~near], pool_windows[idx]])


def detect_source(model, source, options: TileOptions = TileOptions(), *, progress: bool = False) -> dict:
    """Detections for a source (see :mod:`detect.inference.sources`) in its pixel coordinates.

    Returns ``{"boxes" [N, 4] xyxy, "scores" [N], "labels" [N], "tiles": T}``,
    sorted by descending score.
    """
    if options.scale <= 0:
        raise ValueError(f"--scale must be > 0, got {options.scale}")
    s = options.scale
    h, w = max(1, round(source.height * s)), max(1, round(source.width * s))
    windows = tile_windows(h, w, options.tile, options.overlap)
    merger = _Merger(h, w, model.model_config.postprocess.iou_threshold)
    bar = tqdm(total=len(windows), unit="tile", desc=f"  {getattr(source, 'name', 'image')}"[-40:],
               leave=False, disable=not progress or len(windows) < 2)
    for start in range(0, len(windows), options.batch_size):
        chunk = windows[start:start + options.batch_size]
        tiles = [_read_tile(source, win, s) for win in chunk]
        th, tw = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
        batch = np.zeros((len(tiles), th, tw, 3), np.float32)
        for b, t in enumerate(tiles):
            batch[b, : t.shape[0], : t.shape[1]] = t
        det = model.predict_on_batch(batch)
        for b, win in enumerate(chunk):
            n = int(det["num_detections"][b])
            boxes = np.asarray(det["boxes"][b, :n], np.float64)
            x0, y0, x1, y1 = win
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, x1 - x0) + x0
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, y1 - y0) + y0
            merger.add(win, boxes.astype(np.float32), np.asarray(det["scores"][b, :n]),
                       np.asarray(det["labels"][b, :n]))
        bar.update(len(chunk))
    bar.close()
    order = np.argsort(-merger.scores, kind="stable")
    boxes = merger.boxes[order]
    if s != 1.0:
        boxes = boxes / np.array([w / source.width, h / source.height] * 2, np.float32)
    return {"boxes": boxes, "scores": merger.scores[order], "labels": merger.labels[order],
            "tiles": len(windows)}


def detect_image(model, image: np.ndarray, options: TileOptions = TileOptions()) -> dict:
    """:func:`detect_source` for an RGB uint8 array ``[H, W, 3]``."""
    return detect_source(model, ArraySource(image), options)
