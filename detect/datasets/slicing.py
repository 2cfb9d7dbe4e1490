"""``detect slice``: a training set of fixed-size chips cut from large images or rasters.

Chips are the windows :func:`~detect.imagery.tiling.tile_windows` lays out
for prediction (``size`` x ``size``, stepped by ``size * (1 - overlap)``, the
last row and column ending at the edge), read window by window (a raster
is never loaded whole). For each chip, every box is clipped to it:

- at least ``min_visible`` of its area inside: kept, clipped;
- some of it inside, but less: written as an ignore region (COCO
  ``iscrowd`` 1; training neither rewards nor punishes detections there),
  since the pixels of a cut object are in the chip and must not teach
  "background";
- crowd / ignore regions of the source stay ignore regions.

Chips with no kept box are "empty": ``keep_empty`` of them are kept, chosen
by a generator seeded with ``seed``. Chips of a raster holding only nodata
(see ``RasterSource.read_or_none``) are skipped. Chips are PNG, or GeoTIFF
carrying the chip's affine transform when the scene is georeferenced (so
training still reads the ground sample distance).
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from detect.config.sections import tile_rule_problems
from detect.imagery.rasters import open_source
from detect.imagery.tiling import tile_windows
from detect.util import atomic


@dataclass
class SliceSummary:
    """Counts of what :func:`slice_dataset` wrote and left out."""

    counts: Counter = field(default_factory=Counter)
    per_class: Counter = field(default_factory=Counter)
    failed: list = field(default_factory=list)
    out: Path | None = None

    def table(self) -> str:
        c = self.counts
        rows = [("scenes", c["scenes"]), ("chips laid out", c["chips"]),
                ("  written with objects", c["chips_with_objects"]), ("  written empty", c["empty_kept"]),
                ("  empty, left out", c["empty_dropped"]), ("  nodata, skipped", c["nodata"]),
                ("boxes in the scenes", c["boxes_in"]), ("box instances in chips", c["boxes_out"]),
                ("  cut below --min-visible (ignore regions)", c["boxes_cut"]),
                ("  clipped at a chip edge (kept)", c["boxes_clipped"])]
        lines = [f"{name:<44}{n:>8}" for name, n in rows]
        lines += [f"  {name[:40]:<42}{n:>8}" for name, n in sorted(self.per_class.items())]
        if self.failed:
            lines.append(f"scenes that could not be read ({len(self.failed)}): {', '.join(self.failed[:3])}")
        if self.out is not None:
            lines.append(f"wrote {self.out / 'annotations.json'} and {self.out / 'images'}/")
        return "\n".join(lines)


def chip_targets(boxes: np.ndarray, crowd: np.ndarray, window, min_visible: float):
    """Boxes of one chip: ``(kept [K, 4], their indices, ignore [G, 4], their indices, cut count,
    clipped count)``.

    ``boxes`` ``[N, 4]`` xyxy scene pixels, ``crowd`` ``[N]`` bool; returned
    boxes are in chip pixels. A box counts as inside when its clipped part
    has positive width and height.
    """
    x0, y0, x1, y1 = window
    c = np.stack([np.clip(boxes[:, 0], x0, x1), np.clip(boxes[:, 1], y0, y1),
                  np.clip(boxes[:, 2], x0, x1), np.clip(boxes[:, 3], y0, y1)], 1) if len(boxes) else \
        np.zeros((0, 4))
    inside = (c[:, 2] > c[:, 0]) & (c[:, 3] > c[:, 1])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    visible = np.where(area > 0, (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1]) / np.maximum(area, 1e-12), 0.0)
    keep = inside & ~crowd & (visible >= min_visible)
    cut = inside & ~crowd & (visible < min_visible)
    ignore = inside & (crowd | cut)
    offset = np.array([x0, y0, x0, y0], np.float64)
    clipped = int((keep & (visible < 1 - 1e-9)).sum())
    return c[keep] - offset, np.flatnonzero(keep), c[ignore] - offset, np.flatnonzero(ignore), int(cut.sum()), clipped


def slice_dataset(ann, images, out, *, size: int = 512, overlap: float = 0.2, min_visible: float = 0.5,
                  keep_empty: float = 0.1, seed: int = 0, overwrite: bool = False,
                  progress: bool = True) -> SliceSummary:
    """Write chips and their COCO file to ``out`` (see module doc); returns the summary."""
    for name, problem in tile_rule_problems(size, overlap):
        raise ValueError(f"--{'size' if name == 'tile' else name} {problem}")
    if not 0 < min_visible <= 1:
        raise ValueError(f"--min-visible must be in (0, 1], got {min_visible}")
    if not 0 <= keep_empty <= 1:
        raise ValueError(f"--keep-empty must be in [0, 1], got {keep_empty}")
    from detect.evaluation.coco_eval import load_ground_truth

    gt = load_ground_truth(ann)
    images, out = Path(images), Path(out)
    if not images.is_dir():
        raise FileNotFoundError(f"--images {images}: no such folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"--out {out} exists and is not empty (--overwrite replaces it)")
        shutil.rmtree(out / "images", ignore_errors=True)
    (out / "images").mkdir(parents=True, exist_ok=True)

    by_image: dict[int, list] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    rng = np.random.default_rng(seed)
    summary = SliceSummary(out=out)
    coco = {"images": [], "annotations": [], "categories": gt["categories"]}
    for im in tqdm(gt["images"], desc="slice", unit="scene", disable=not progress):
        anns = [a for a in by_image.get(im["id"], []) if len(a.get("bbox", [])) == 4]
        xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
        cats = np.array([a["category_id"] for a in anns], np.int64)
        summary.counts["boxes_in"] += int((~crowd).sum())
        path = images / im["file_name"]
        try:
            source = open_source(path)
        except (OSError, ValueError) as err:
            summary.failed.append(f"{path} ({err})")
            continue
        summary.counts["scenes"] += 1
        try:
            _slice_scene(source, path, im, boxes, crowd, cats, names, coco, summary, out, size, overlap,
                         min_visible, keep_empty, rng)
        finally:
            source.close()
    atomic.write_json(out / "annotations.json", coco)
    return summary


def _slice_scene(source, path, im, boxes, crowd, cats, names, coco, summary, out, size, overlap,
                 min_visible, keep_empty, rng) -> None:
    georef = getattr(source, "transform", None) is not None
    stem = Path(im["file_name"]).with_suffix("").as_posix().replace("/", "__")
    for window in tile_windows(source.height, source.width, size, overlap):
        x0, y0, x1, y1 = (int(v) for v in window)
        summary.counts["chips"] += 1
        kept, idx, ignore, ignore_idx, cut, clipped = chip_targets(boxes, crowd, (x0, y0, x1, y1), min_visible)
        empty = len(kept) == 0
        if empty and rng.random() >= keep_empty:
            summary.counts["empty_dropped"] += 1
            continue
        chip = source.read_or_none(x0, y0, x1, y1)
        if chip is None:
            summary.counts["nodata"] += 1
            continue
        name = f"{stem}_{x0}_{y0}{'.tif' if georef else '.png'}"
        _write_chip(out / "images" / name, chip, source.transform * source.transform.translation(x0, y0)
                    if georef else None, source.crs if georef else None)
        image_id = len(coco["images"]) + 1
        coco["images"].append({"id": image_id, "file_name": name, "width": x1 - x0, "height": y1 - y0,
                               "source": im["file_name"], "window": [x0, y0, x1, y1]})
        for box, cat, is_crowd in [(b, cats[i], 0) for b, i in zip(kept, idx)] + \
                [(b, cats[i], 1) for b, i in zip(ignore, ignore_idx)]:
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": int(cat), "iscrowd": is_crowd,
                                        "bbox": [round(float(box[0]), 3), round(float(box[1]), 3),
                                                 round(w, 3), round(h, 3)], "area": round(w * h, 3)})
            if not is_crowd:
                summary.per_class[names.get(int(cat), str(cat))] += 1
        summary.counts["boxes_out"] += len(kept)
        summary.counts["boxes_cut"] += cut
        summary.counts["boxes_clipped"] += clipped
        summary.counts["empty_kept" if empty else "chips_with_objects"] += 1


def _write_chip(path: Path, chip: np.ndarray, transform, crs) -> None:
    if transform is None:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(chip), cv2.COLOR_RGB2BGR))
        atomic.write_bytes(path, buf.tobytes())
        return
    import rasterio

    def write(tmp):
        with rasterio.open(tmp, "w", driver="GTiff", width=chip.shape[1], height=chip.shape[0],
                           count=chip.shape[2], dtype="uint8", transform=transform, crs=crs) as dst:
            dst.write(np.moveaxis(chip, -1, 0))

    atomic.write_with(path, write)

