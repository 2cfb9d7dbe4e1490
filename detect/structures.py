"""Result structures shared by every floor above: the per-image detection record
``detect predict`` writes (its rows, and the one reader of it), and box conversion to COCO.

A record ``OUT/detections/STEM.json`` is one JSON object::

    {"file": "scene.tif", "width": W, "height": H,
     "detections": [{"box": [x0, y0, x1, y1], "label": "car", "label_id": 1, "score": 0.93}, ...],
     "crs": WKT, "transform": [a, b, c, d, e, f]}          # georeferenced inputs only

and for a video ``"frames": [{"frame": N, "detections": [...]}, ...]`` instead of
``"detections"``. Boxes are xyxy pixels rounded to 0.01, scores to 1e-5.
The Python API's richer :class:`~detect.inference.results.Detections` is built from
the same detections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np

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
