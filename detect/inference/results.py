"""What :func:`detect.predict` returns: one :class:`Detections` per image, frame or raster.

Plain NumPy, in the source's own pixels (``xyxy``, float32), so a result can
be filtered, drawn, written as COCO results or turned into a GeoDataFrame
without TensorFlow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from detect.structures import xywh


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
        from detect.inference.outputs import DrawStyle, draw

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
        from detect.inference.outputs import MAX_DRAW_PIXELS

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
    from detect.inference.outputs import image_ids_by_file_name

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
