"""``detect view``: one self-contained HTML page of detections over their images.

The page (``template.html``: inline CSS and JavaScript, no server, no CDN)
holds every image as an embedded JPEG (large rasters as an overview read
from the file at most ``max_side`` px on the long side) and the boxes in the
image's own pixels, drawn as SVG over it: zoom with the wheel, pan by
dragging, filter by class and by score with a slider, labels and scores on
hover (never overlapping text on dense scenes). With ground truth each
detection is a true or false positive by pycocotools' rule at IoU 0.5 (the
operating point's matching; a detection on a crowd region is neither), and
objects whose matching detection is below the slider show as missed: the
matching of the detections above any threshold is the matching of all,
restricted to them, so one matching serves every slider position.

``#image=N&score=S`` in the page's address opens image N with the slider at
S.
"""

from __future__ import annotations

import base64
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detect.config import defaults
from detect.imagery.images import CLASS_COLOURS
from detect.imagery.inputs import RASTER_SUFFIXES
from detect.util import atomic

TEMPLATE = Path(__file__).with_name("template.html")
#: Long side of the embedded images, pixels.
MAX_SIDE = 1600


@dataclass
class ViewItem:
    """One image: its detections (``[N, 4]`` xyxy px, class index, score) and optional ground truth."""

    name: str
    path: Path | None
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    gt_boxes: np.ndarray | None = None
    gt_labels: np.ndarray | None = None
    gt_crowd: np.ndarray | None = None  # [M] bool: crowd / ignore regions (not drawn)
    image: np.ndarray | None = None  # pixels in memory instead of a file


def match(boxes, labels, scores, gt_boxes, gt_labels, gt_crowd=None):
    """pycocotools' matching at IoU 0.5 (:func:`~detect.evaluation.operating_point.match_image`),
    per class: ``(status [N]: 1 TP, 0 FP, -1 matched a crowd region; gt_score [M]: the score of the
    detection matching each object, -1 if none)``."""
    from detect.evaluation.operating_point import CROWD, match_image

    boxes, scores = np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64)
    labels, gt_labels = np.asarray(labels), np.asarray(gt_labels)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    crowd = np.zeros(len(gt_labels), bool) if gt_crowd is None else np.asarray(gt_crowd, bool)
    status, gt_score = np.zeros(len(scores), np.int64), -np.ones(len(gt_labels), np.float64)
    xywh = lambda b: np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1)  # noqa: E731
    for c in np.unique(labels):
        d = np.flatnonzero(labels == c)
        d = d[np.argsort(-scores[d], kind="stable")]
        g = np.flatnonzero(gt_labels == c)
        g = g[np.argsort(crowd[g], kind="stable")]  # objects before crowd regions
        matched = match_image(xywh(boxes[d]), xywh(gt_boxes[g]), crowd[g])
        for i, m in zip(d, matched):
            if m == CROWD:
                status[i] = -1
            elif m >= 0:
                status[i], gt_score[g[m]] = 1, scores[i]
    return status, gt_score


def overview(item: ViewItem, max_side: int) -> tuple[bytes, float]:
    """JPEG bytes of the image at most ``max_side`` px on its long side, and that scale."""
    scale = min(1.0, max_side / max(item.width, item.height))
    if item.image is not None:
        rgb = item.image
    elif item.path is not None and item.path.suffix.lower() in RASTER_SUFFIXES:
        rgb = _raster_overview(item.path, scale)
    else:
        from detect.imagery.images import read_image

        rgb = read_image(item.path)
    h, w = max(1, round(item.height * scale)), max(1, round(item.width * scale))
    if rgb.shape[:2] != (h, w):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    from detect.imagery.images import display_rgb

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(display_rgb(rgb)), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 85])
    return buf.tobytes(), scale


def _raster_overview(path: Path, scale: float) -> np.ndarray:
    """A decimated read of bands 1-3 (or band 1 as grey), stretched like prediction stretches."""
    import rasterio
    from rasterio.enums import Resampling

    from detect.imagery.images import stretch, stretch_levels

    with rasterio.open(path) as ds:
        bands = [1, 2, 3] if ds.count >= 3 else [1, 1, 1]
        h, w = max(1, round(ds.height * scale)), max(1, round(ds.width * scale))
        data = ds.read(bands, out_shape=(3, h, w), resampling=Resampling.average, masked=True)
        dtype = ds.dtypes[0]
    data = np.moveaxis(data.filled(0), 0, -1)
    return data.astype(np.uint8) if dtype == "uint8" else stretch(data, *stretch_levels(data))


def write_view(items: list[ViewItem], path, class_names, *, title: str = "detect view",
               score: float = defaults.UNCALIBRATED_SCORE_THRESHOLD, max_side: int = MAX_SIDE, progress: bool = True) -> Path:
    """Write the page for ``items`` to ``path`` (atomically); returns ``path``."""
    from tqdm import tqdm

    payload = {"classes": list(class_names), "score": float(score), "items": [],
               "colours": ["#%02x%02x%02x" % c for c in CLASS_COLOURS]}
    for item in tqdm(items, desc="view", unit="image", disable=not progress):
        jpeg, scale = overview(item, max_side)
        dets = [[*(round(float(v), 2) for v in b), int(lab), round(float(s), 4), -1]
                for b, lab, s in zip(item.boxes, item.labels, item.scores)]
        gts = None
        if item.gt_boxes is not None:
            status, gt_score = match(item.boxes, item.labels, item.scores, item.gt_boxes, item.gt_labels,
                                     item.gt_crowd)
            for d, st in zip(dets, status):
                d[6] = int(st)
            crowd = np.zeros(len(gt_score), bool) if item.gt_crowd is None else item.gt_crowd
            gts = [[*(round(float(v), 2) for v in b), int(lab), round(float(s), 4)]
                   for b, lab, s, c in zip(item.gt_boxes, item.gt_labels, gt_score, crowd) if not c]
        payload["items"].append({"name": item.name, "width": int(item.width), "height": int(item.height),
                                 "scale": scale, "dets": dets, "gts": gts,
                                 "image": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()})
    data = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")  # no early </script>
    html = TEMPLATE.read_text().replace("__TITLE__", _escape(title)).replace("__DATA__", data)
    path = Path(path)
    atomic.write_text(path, html)
    print(f"wrote {path} ({len(items)} image(s), {path.stat().st_size / 2**20:.1f} MB): open it in a browser",
          file=sys.stderr)
    return path


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
