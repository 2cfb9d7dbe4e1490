"""Read and check a COCO instances dataset for training.

Problems are reported, never left to crash inside TensorFlow. Each one has a
kind, a message naming the file and annotation id, and a consequence:

- refused (always an error): duplicate image ids; a ``file_name`` that
  escapes the image folder (absolute, or with ``..``); a malformed file.
- warnings (``strict=True`` turns them into errors): missing or unreadable
  image files (image skipped); annotations on unknown images or with unknown
  category ids, NaN / non-finite coordinates, or non-positive width or
  height (annotation dropped); boxes partly outside the image (clipped and
  counted; dropped if nothing is left).

Categories map to contiguous class indices in sorted-id order; the names
travel into the model. Images without annotations stay, as negatives.
``iscrowd=1`` boxes become ignore regions (label ``-2``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from detect.datasets.images import is_readable
from detect.ops.matcher import IGNORE_REGION_LABEL

#: Side-length buckets (px) of the summary's object size histogram.
SIZE_BUCKETS = (0, 8, 16, 32, 64, 128, math.inf)


@dataclass
class Sample:
    path: Path
    image_id: int
    width: int
    height: int
    boxes: np.ndarray  # [M, 4] float32 xyxy pixels
    labels: np.ndarray  # [M] int32: class index, or -2 for crowd / ignore regions


@dataclass
class DataReport:
    problems: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)
    clipped: int = 0

    def add(self, kind: str, message: str) -> None:
        self.problems.append((kind, message))

    def counts(self) -> Counter:
        return Counter(kind for kind, _ in self.problems)


@dataclass
class CocoDataset:
    samples: list[Sample]
    category_ids: list[int]
    class_names: list[str]
    report: DataReport

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)


class DataError(ValueError):
    """A dataset that cannot be used as it is (the message lists why)."""


def _safe_path(root: Path, file_name: str) -> Path | None:
    p = PurePosixPath(str(file_name).replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return None
    return root / Path(*p.parts)


def load_coco(ann_file: str | Path, images_dir: str | Path, *, strict: bool = False,
              check_files: bool = True, max_messages: int = 20) -> CocoDataset:
    """Read ``ann_file``, check everything listed in the module doc, return samples."""
    ann_file, root = Path(ann_file), Path(images_dir)
    if not ann_file.is_file():
        raise FileNotFoundError(f"annotation file {str(ann_file)!r} does not exist")
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    try:
        data = json.loads(ann_file.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{ann_file}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise DataError(f"{ann_file}: not a COCO instances file (needs images, annotations, categories lists)")

    report = DataReport()
    errors: list[str] = []
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    if not cats:
        errors.append("no categories")

    images: dict[int, dict] = {}
    for im in data["images"]:
        if im["id"] in images:
            errors.append(f"duplicate image id {im['id']} ({im.get('file_name')})")
            continue
        path = _safe_path(root, im.get("file_name", ""))
        if path is None:
            errors.append(f"image {im['id']}: file_name {im.get('file_name')!r} escapes {root} "
                          f"(absolute or '..' paths are refused)")
            continue
        if check_files and not is_readable(path):
            report.add("missing_image", f"image {im['id']}: {path} is missing or not a readable image (skipped)")
            continue
        images[im["id"]] = {**im, "path": path}

    listed = {im["id"] for im in data["images"]}
    per_image: dict[int, tuple[list, list]] = {i: ([], []) for i in images}
    for a in data["annotations"]:
        aid, iid = a.get("id"), a.get("image_id")
        im = images.get(iid)
        where = f"annotation {aid} (image {iid}"
        if im is None:
            if iid not in listed:  # (annotations of skipped images were reported there)
                report.add("unknown_image", f"{where}): no such image (dropped)")
            continue
        where += f", {im['path'].name})"
        if a.get("category_id") not in cat_index:
            report.add("unknown_category", f"{where}: unknown category id {a.get('category_id')} (dropped)")
            continue
        bbox = a.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            report.add("malformed_box", f"{where}: bbox {bbox!r} is not [x, y, w, h] (dropped)")
            continue
        x, y, w, h = (float(v) if isinstance(v, (int, float)) else math.nan for v in bbox)
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            report.add("nan_box", f"{where}: bbox {bbox} has NaN/inf (dropped)")
            continue
        if w <= 0 or h <= 0:
            report.add("empty_box", f"{where}: bbox {bbox} has non-positive width/height (dropped)")
            continue
        W, H = float(im["width"]), float(im["height"])
        x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, W), min(y + h, H)
        if (x0, y0, x1, y1) != (x, y, x + w, y + h):
            report.clipped += 1
            if x1 <= x0 or y1 <= y0:
                report.add("outside_box", f"{where}: bbox {bbox} lies outside the {W:g}x{H:g} image (dropped)")
                continue
        label = IGNORE_REGION_LABEL if a.get("iscrowd", 0) else cat_index[a["category_id"]]
        per_image[iid][0].append((x0, y0, x1, y1))
        per_image[iid][1].append(label)

    if errors:
        raise DataError(f"{ann_file}: " + "; ".join(errors[:max_messages])
                        + (f" (and {len(errors) - max_messages} more)" if len(errors) > max_messages else ""))
    if strict and report.problems:
        shown = [m for _, m in report.problems[:max_messages]]
        raise DataError(f"{ann_file}: {len(report.problems)} problem(s) with --strict:\n  " + "\n  ".join(shown))

    samples = [
        Sample(path=im["path"], image_id=iid, width=int(im["width"]), height=int(im["height"]),
               boxes=np.asarray(per_image[iid][0], np.float32).reshape(-1, 4),
               labels=np.asarray(per_image[iid][1], np.int32))
        for iid, im in images.items()
    ]
    return CocoDataset(samples, [c["id"] for c in cats], [c.get("name", str(c["id"])) for c in cats], report)


def summary(ds: CocoDataset) -> str:
    """Images, boxes per class, object-size histogram and problem counts, as a table."""
    n_neg = sum(1 for s in ds.samples if not (s.labels >= 0).any())
    lines = [f"images: {len(ds.samples)} ({n_neg} without objects)"]
    counts = Counter(int(v) for s in ds.samples for v in s.labels)
    lines.append(f"{'class':<20}{'boxes':>8}")
    for i, name in enumerate(ds.class_names):
        lines.append(f"{name[:19]:<20}{counts.get(i, 0):>8}")
    if counts.get(IGNORE_REGION_LABEL):
        lines.append(f"{'(crowd / ignore)':<20}{counts[IGNORE_REGION_LABEL]:>8}")
    sides = np.concatenate([np.sqrt((s.boxes[:, 2] - s.boxes[:, 0]) * (s.boxes[:, 3] - s.boxes[:, 1]))
                            for s in ds.samples] or [np.zeros(0)])
    hist, _ = np.histogram(sides, bins=np.array(SIZE_BUCKETS[:-1] + (1e9,)))
    labels = [f"{int(a)}-{int(b)}" if math.isfinite(b) else f">={int(a)}"
              for a, b in zip(SIZE_BUCKETS[:-1], SIZE_BUCKETS[1:])]
    lines.append("object size (sqrt(area), px): " + "  ".join(f"{lab}: {n}" for lab, n in zip(labels, hist)))
    problems = ds.report.counts()
    if problems or ds.report.clipped:
        lines.append("problems: " + ", ".join(f"{k} {v}" for k, v in sorted(problems.items()))
                     + (f", clipped_boxes {ds.report.clipped}" if ds.report.clipped else ""))
    return "\n".join(lines)
