"""Result structures shared by every floor above: what :func:`detect.predict` returns (one
:class:`Detections` per image, frame or raster, in :class:`Results`, with their conversions to
COCO results, records and a GeoDataFrame), the per-image detection record ``detect predict``
writes (its rows, and the one reader of it), the typed run summary, and box conversion to COCO.

A record ``OUT/detections/STEM.json`` is one JSON object::

    {"file": "scene.tif", "width": W, "height": H,
     "detections": [{"box": [x0, y0, x1, y1], "label": "car", "label_id": 1, "score": 0.93}, ...],
     "crs": WKT, "transform": [a, b, c, d, e, f]}          # georeferenced inputs only

and for a video ``"frames": [{"frame": N, "detections": [...]}, ...]`` instead of
``"detections"``. Boxes are xyxy pixels rounded to 0.01, scores to 1e-5.
:class:`Detections` is plain NumPy in the source's own pixels (``xyxy``, float32), so a result
can be filtered, drawn, written as COCO results or turned into a GeoDataFrame without
TensorFlow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypedDict

import numpy as np

from detect.imagery.drawing import MAX_DRAW_PIXELS, DrawStyle, draw
from detect.util.files import read_json

#: What a damaged record's message tells the user to do.
_REMEDY = "delete it and rerun detect predict on that image"


def detection_rows(det: dict, names) -> list[dict]:
    """The ``detections`` list of a record from the inference path's dict (``boxes [N, 4]``
    xyxy, ``labels [N]`` class indices, ``scores [N]``) and the class ``names``."""
    return [{"box": [round(float(v), 2) for v in b], "label": names[int(lab)], "label_id": int(lab),
             "score": round(float(s), 5)} for b, lab, s in zip(det["boxes"], det["labels"], det["scores"])]


def xywh(box, ndigits: int | None = None) -> list[float]:
    """COCO ``[x, y, w, h]`` of an xyxy ``box``; ``ndigits`` rounds the width and height (the
    corner is kept as given)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    if ndigits is not None:
        w, h = round(w, ndigits), round(h, ndigits)
    return [x0, y0, w, h]


@dataclass
class Boxes:
    """One image's (or video frame's) detections as arrays: ``boxes [N, 4]`` float64 xyxy
    pixels, ``label_ids [N]`` int64, ``labels`` (class names) and ``scores [N]`` float64."""

    boxes: np.ndarray
    label_ids: np.ndarray
    labels: list[str]
    scores: np.ndarray
    rows: list[dict] = field(repr=False, default_factory=list)  # the record's own rows

    @classmethod
    def from_rows(cls, rows: list[dict]) -> "Boxes":
        return cls(np.array([d["box"] for d in rows], np.float64).reshape(-1, 4),
                   np.array([d["label_id"] for d in rows], np.int64), [d["label"] for d in rows],
                   np.array([d["score"] for d in rows], np.float64), rows)

    def as_det(self) -> dict:
        """The inference path's dict (``boxes``, ``scores``, ``labels`` as lists)."""
        return {"boxes": [d["box"] for d in self.rows], "scores": [d["score"] for d in self.rows],
                "labels": [d["label_id"] for d in self.rows]}


@dataclass
class Record:
    """A per-image record read back: ``detections`` for an image, ``frames`` ``[(frame, Boxes)]``
    for a video (then ``detections`` is None); ``crs`` (WKT) and ``transform`` (6 affine
    coefficients) when the input was georeferenced."""

    file: str
    width: int
    height: int
    detections: Boxes | None
    frames: list[tuple[int, Boxes]] = field(default_factory=list)
    crs: str | None = None
    transform: list[float] | None = None

    @property
    def is_video(self) -> bool:
        return self.detections is None

    def units(self) -> list[tuple[str, Boxes]]:
        """``[(name, Boxes)]``: the image, or each processed frame named ``FILE#frame=N``."""
        if self.is_video:
            return [(f"{self.file}#frame={frame}", boxes) for frame, boxes in self.frames]
        return [(self.file, self.detections)]


def read_record(path: str | Path) -> Record:
    """The record at ``path``; a damaged one is a ValueError naming the file and the remedy."""
    rec = read_json(path, "detection record", _REMEDY)
    try:
        frames = [(int(fr["frame"]), Boxes.from_rows(fr["detections"])) for fr in rec.get("frames", [])]
        return Record(rec["file"], int(rec["width"]), int(rec["height"]),
                      None if "frames" in rec else Boxes.from_rows(rec["detections"]), frames,
                      rec.get("crs"), rec.get("transform"))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a detection record ({type(err).__name__}: {err}); {_REMEDY}") from None


class RunSummary(TypedDict):
    """What a prediction run did (``Results.summary``, and what ``detect predict`` prints).

    ``images``: inputs given; ``skipped_done``: done by an earlier run (read back);
    ``failed``: inputs that could not be read (skipped); ``tiles`` run through the
    network, ``blank_tiles`` of them skipped as nodata; ``capped_tiles`` /
    ``top_k_capped_tiles``: tiles where ``max_detections`` / ``pre_nms_top_k`` may have
    cut detections; ``objects_per_class``: detections written per class (None when
    nothing was written); ``merged``: False for a shard whose job still has
    ``missing_units`` done elsewhere.
    """

    images: int
    skipped_done: int
    failed: list[str]
    tiles: int
    blank_tiles: int
    seconds: float
    objects_per_class: dict[str, int] | None
    capped_tiles: int
    top_k_capped_tiles: int
    merged: bool
    missing_units: int


def run_summary(*, images: int, caps=None, failed=(), skipped_done: int = 0, seconds: float = 0.0,
                objects_per_class=None, merged: bool = True, missing_units: int = 0, **extra) -> RunSummary:
    """The one builder of a :class:`RunSummary`; ``caps`` (a ``CapCount``) gives the tile counts.
    ``extra`` keys (``worker_peak_rss``, ``html``) ride along."""
    out: RunSummary = {
        "images": int(images), "skipped_done": int(skipped_done), "failed": list(failed),
        "tiles": caps.tiles if caps else 0, "blank_tiles": caps.blank if caps else 0, "seconds": float(seconds),
        "objects_per_class": objects_per_class, "capped_tiles": caps.at_max if caps else 0,
        "top_k_capped_tiles": caps.at_top_k if caps else 0, "merged": bool(merged),
        "missing_units": int(missing_units)}
    out.update(extra)  # type: ignore[typeddict-item]
    return out


def image_ids_by_file_name(gt: dict) -> dict[str, list[int]]:
    """Ground-truth image ids per file name (base name; a name may occur in several folders)."""
    by_file: dict[str, list[int]] = {}
    for im in gt["images"]:
        by_file.setdefault(Path(im["file_name"]).name, []).append(im["id"])
    return by_file


# ---- what detect.predict returns ---------------------------------------------------------


@dataclass(frozen=True)
class Detections:
    """Detections of one image, video frame or raster.

    - ``source``: the file (``FILE#frame=N`` for a video frame) or ``array[i]``.
    - ``boxes``: ``[N, 4]`` float32 ``xyxy`` in the source's pixels;
      ``scores``: ``[N]`` float32 in 0..1; ``labels``: ``[N]`` int32 class
      indices into ``names``. Sorted by descending score.
    - ``names``: the model's class names (all of them, index = label).
    - ``width``, ``height``: the source's size in pixels; ``frame``: the
      frame index for a video, else None.
    - ``transform``, ``crs``: a georeferenced raster's affine transform
      (pixel -> map) and CRS (rasterio objects), else None.
    """

    source: str
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    width: int
    height: int
    frame: int | None = None
    transform: object = None
    crs: object = None
    image: np.ndarray | None = field(default=None, repr=False, compare=False)  # the array it came from

    @classmethod
    def from_dict(cls, det: dict, names, source: str, width: int, height: int, **meta) -> "Detections":
        """From the inference path's dict (``boxes``, ``scores``, ``labels``) or a record list."""
        return cls(source=source, boxes=np.asarray(det["boxes"], np.float32).reshape(-1, 4),
                   scores=np.asarray(det["scores"], np.float32).reshape(-1),
                   labels=np.asarray(det["labels"], np.int32).reshape(-1), names=tuple(names),
                   width=int(width), height=int(height), **meta)

    # ---- a sequence of boxes --------------------------------------------------

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index) -> "Detections":
        """Boolean mask, slice, or integer array: the selected boxes (same source)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return replace(self, boxes=self.boxes[index].reshape(-1, 4), scores=self.scores[index].reshape(-1),
                       labels=self.labels[index].reshape(-1))

    @property
    def class_names(self) -> list[str]:
        """One class name per box."""
        return [self.names[int(i)] for i in self.labels]

    def counts(self) -> dict[str, int]:
        """Boxes per class name."""
        return dict(Counter(self.class_names))

    def filter(self, score: float | None = None, classes=None) -> "Detections":
        """Boxes scoring above ``score`` whose class is in ``classes`` (names or indices)."""
        keep = np.ones(len(self), bool)
        if score is not None:
            keep &= self.scores > score
        if classes is not None:
            wanted = set()
            for c in ([classes] if isinstance(classes, (str, int)) else classes):
                if isinstance(c, str):
                    if c not in self.names:
                        raise ValueError(f"unknown class {c!r}; the model's classes are {list(self.names)}")
                    wanted.add(self.names.index(c))
                else:
                    wanted.add(int(c))
            keep &= np.isin(self.labels, sorted(wanted))
        return self[keep]

    # ---- conversions -----------------------------------------------------------

    def to_dicts(self) -> list[dict]:
        """``[{"box": [x0, y0, x1, y1], "label": name, "label_id": i, "score": s}, ...]``."""
        return [{"box": [float(v) for v in b], "label": self.names[int(lab)], "label_id": int(lab),
                 "score": float(s)} for b, lab, s in zip(self.boxes, self.labels, self.scores)]

    def to_coco(self, image_id: int, category_ids=None) -> list[dict]:
        """COCO results (``bbox`` xywh) for ``image_id``; ``category_ids[label]`` maps the
        class indices (default: the indices themselves)."""
        ids = list(category_ids) if category_ids is not None else list(range(len(self.names)))
        return [{"image_id": int(image_id), "category_id": int(ids[int(lab)]),
                 "bbox": xywh(b),
                 "score": float(s)} for b, lab, s in zip(self.boxes, self.labels, self.scores)]

    def plot(self, image: np.ndarray | None = None, *, line_width: int | None = None,
             hide_labels: bool = False, hide_scores: bool = False) -> np.ndarray:
        """An annotated RGB uint8 copy of ``image`` (default: the source, read again), drawn as
        ``detect predict --save-images`` draws (same ``line_width`` / ``hide_*`` options)."""
        if image is None:
            image = self._read_source()
        out = draw(np.asarray(image, np.uint8), {"boxes": self.boxes, "scores": self.scores,
                                                  "labels": self.labels}, self.names,
                   DrawStyle(line_width, labels=not hide_labels, scores=not hide_scores))
        return out[..., ::-1].copy()  # draw returns BGR (OpenCV's order)

    def _read_source(self) -> np.ndarray:
        if self.image is not None:
            return self.image
        path = Path(self.source.split("#frame=")[0])
        if self.frame is not None:
            import cv2

            cap = cv2.VideoCapture(str(path))
            cap.set(cv2.CAP_PROP_POS_FRAMES, self.frame)
            ok, bgr = cap.read()
            cap.release()
            if not ok:
                raise ValueError(f"{path}: frame {self.frame} could not be read")
            return bgr[..., ::-1]
        from detect.imagery.rasters import open_source

        source = open_source(path)
        try:
            if source.width * source.height > MAX_DRAW_PIXELS:
                raise ValueError(f"{path} is too large to draw whole ({source.width}x{source.height}); "
                                 f"pass a window as image=")
            return source.read(0, 0, source.width, source.height)
        finally:
            source.close()

    def to_geodataframe(self):
        """A geopandas GeoDataFrame of box polygons in the raster's CRS (``label``, ``score``).

        Needs a georeferenced source and geopandas (imported only here).
        """
        if self.transform is None:
            raise ValueError(f"{self.source} is not georeferenced (no transform): use to_dicts()")
        try:
            import geopandas
            from shapely.geometry import Polygon
        except ImportError:
            raise ImportError("to_geodataframe needs geopandas: pip install geopandas") from None
        t = self.transform
        polygons = [Polygon([t @ (float(x), float(y)) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))])
                    for x0, y0, x1, y1 in self.boxes]
        return geopandas.GeoDataFrame({"label": self.class_names, "score": self.scores.astype(float)},
                                      geometry=polygons, crs=self.crs.to_string() if self.crs else None)

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts().items())) or "none"
        return f"Detections({self.source!r}, {len(self)} boxes; {counts})"


class Results(Sequence):
    """One :class:`Detections` per image, frame or raster, in source order.

    ``summary`` holds the run's counts (images, skipped_done, failed, tiles,
    seconds, objects_per_class, capped_tiles, top_k_capped_tiles); ``failed``
    lists inputs that could not be read (reported, and left out).
    """

    def __init__(self, items: list[Detections], summary: dict | None = None):
        self._items = list(items)
        self.summary = dict(summary or {})

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Results(self._items[index], self.summary)
        return self._items[index]

    @property
    def failed(self) -> list[str]:
        return list(self.summary.get("failed", []))

    def counts(self) -> dict[str, int]:
        """Boxes per class name over all items."""
        total: Counter = Counter()
        for d in self._items:
            total.update(d.class_names)
        return dict(total)

    def to_coco(self, category_ids=None) -> tuple[list[dict], list[dict]]:
        """(COCO results, images) with image ids 1..N in order, as ``detect predict`` numbers them."""
        results, images = [], []
        for i, d in enumerate(self._items, 1):
            images.append({"id": i, "file_name": d.source, "width": d.width, "height": d.height})
            results += d.to_coco(i, category_ids)
        return results, images

    def __repr__(self) -> str:
        return f"Results({len(self)} items, {sum(len(d) for d in self._items)} boxes)"


def results_to_coco(results: Results, gt: dict) -> list[dict]:
    """COCO results with the ground truth's image ids (by file name) and category ids (by name)."""
    by_file = image_ids_by_file_name(gt)
    by_name = {c["name"]: c["id"] for c in gt["categories"]}
    out = []
    for d in results:
        ids = by_file.get(Path(d.source).name, [])
        if len(ids) != 1:
            raise ValueError(f"{d.source}: {'no' if not ids else len(ids)} ground-truth images named "
                             f"{Path(d.source).name}; cannot evaluate it")
        missing = sorted(set(d.names) - set(by_name))
        if missing and len(d):
            raise ValueError(f"classes {missing} are not categories of the ground truth")
        out += d.to_coco(ids[0], [by_name.get(n, -1) for n in d.names])
    return out
