"""Detection over whole images of any size: optional rescale, tiles, batches, merge."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from detect.inference.tiling import merge_detections, tile_windows


@dataclass(frozen=True)
class TileOptions:
    tile: int = 512  # tile side in (rescaled) pixels; images no larger are one tile
    overlap: float = 0.2
    batch_size: int = 4
    scale: float = 1.0  # resample the imagery first (ground-resolution mismatch)


def detect_image(model, image: np.ndarray, options: TileOptions = TileOptions()) -> dict:
    """Detections for one RGB uint8 image ``[H, W, 3]`` in its own pixel coordinates.

    Returns ``{"boxes" [N, 4] xyxy, "scores" [N], "labels" [N], "tiles": T}``.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected an RGB image [H, W, 3] with H, W > 0, got shape {image.shape}")
    h0, w0 = image.shape[:2]
    if options.scale != 1.0:
        if options.scale <= 0:
            raise ValueError(f"--scale must be > 0, got {options.scale}")
        image = cv2.resize(image, (max(1, round(w0 * options.scale)), max(1, round(h0 * options.scale))),
                           interpolation=cv2.INTER_AREA if options.scale < 1 else cv2.INTER_LINEAR)
    h, w = image.shape[:2]
    windows = tile_windows(h, w, options.tile, options.overlap)
    all_boxes, all_scores, all_labels, origin = [], [], [], []
    for start in range(0, len(windows), options.batch_size):
        chunk = windows[start:start + options.batch_size]
        th = int(max(y1 - y0 for _, y0, _, y1 in chunk))
        tw = int(max(x1 - x0 for x0, _, x1, _ in chunk))
        batch = np.zeros((len(chunk), th, tw, 3), np.float32)
        for b, (x0, y0, x1, y1) in enumerate(chunk):
            batch[b, : y1 - y0, : x1 - x0] = image[y0:y1, x0:x1]
        det = model.predict_on_batch(batch)
        for b, win in enumerate(chunk):
            n = int(det["num_detections"][b])
            boxes = np.asarray(det["boxes"][b, :n], np.float64)
            x0, y0, x1, y1 = win
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, x1 - x0) + x0
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, y1 - y0) + y0
            all_boxes.append(boxes)
            all_scores.append(det["scores"][b, :n])
            all_labels.append(det["labels"][b, :n])
            origin.append(np.repeat(win[None], n, axis=0))
    boxes, scores, labels = merge_detections(
        np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_labels),
        np.concatenate(origin), height=h, width=w,
        iou_threshold=model.model_config.postprocess.iou_threshold)
    if options.scale != 1.0:
        boxes = boxes / np.array([w / w0, h / h0, w / w0, h / h0], np.float32)
    return {"boxes": boxes, "scores": scores, "labels": labels, "tiles": len(windows)}
