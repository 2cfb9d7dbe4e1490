"""Read and check a COCO instances dataset for training.

Problems are reported, never left to crash inside TensorFlow. Each one has a
kind, a message naming the file and annotation id, and a consequence:

- refused (always an error): duplicate image ids; a ``file_name`` that
  escapes the image folder (absolute, or with ``..``); a malformed file.
- warnings (``strict=True`` turns them into errors), one kind each in
  :data:`PROBLEM_KINDS`: missing, unreadable, truncated or corrupt image
  files (image skipped; every image is decode-checked here, so nothing fails
  later inside tf.data); a file whose size differs from the listed
  width/height (the real size is used, boxes are checked against it);
  annotations on unknown images or with unknown category ids, values that
  are not numbers, NaN / inf, or non-positive width or height (annotation
  dropped); boxes partly outside the image (clipped and counted; dropped if
  nothing is left).

Categories map to contiguous class indices in sorted-id order; the names
travel into the model. Images without annotations stay, as negatives.
``iscrowd=1`` boxes become ignore regions (label ``-2``).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from detect.evaluation.ground_truth import DataError, check_ground_truth
from detect.imagery.images import inspect_image
from detect.ops.matcher import IGNORE_REGION_LABEL

#: Every kind of data problem and what ``load_coco`` does about it (``strict=True``:
#: any of them is an error instead). The summary and the README table use these.
PROBLEM_KINDS = {
    "missing_image": "image file does not exist: image skipped",
    "unreadable_image": "not an image OpenCV reads, truncated or corrupt: image skipped",
    "size_mismatch": "file size differs from the listed width/height: the file's size is used",
    "unknown_image": "annotation on an image id not listed: annotation dropped",
    "unknown_category": "annotation with a category id not listed: annotation dropped",
    "malformed_box": "bbox not 4 numbers: annotation dropped",
    "nan_box": "bbox with NaN or inf: annotation dropped",
    "empty_box": "bbox with width or height <= 0: annotation dropped",
    "outside_box": "bbox entirely outside its image: annotation dropped",
    "clipped_box": "bbox partly outside its image: clipped to it and kept",
    "duplicate_annotation_id": "annotation id used more than once: all kept (tools keyed by id keep one)",
    "duplicate_category_name": "two category ids with one name: both kept (outputs cannot tell them apart)",
    "no_annotations": "the file holds no annotations: every image is a negative",
}

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

    def add(self, kind: str, message: str) -> None:
        self.problems.append((kind, message))

    def counts(self) -> Counter:
        return Counter(kind for kind, _ in self.problems)

    @property
    def clipped(self) -> int:
        """Boxes partly outside their image, clipped to it and kept."""
        return self.counts()["clipped_box"]


@dataclass
class CocoDataset:
    samples: list[Sample]
    category_ids: list[int]
    class_names: list[str]
    report: DataReport

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)




def _safe_path(root: Path, file_name: str) -> Path | None:
    p = PurePosixPath(str(file_name).replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return None
    return root / Path(*p.parts)


def _check_images(images: dict[int, dict], report: DataReport) -> None:
    """Decode-check every image (in parallel); drop the unreadable, take each file's real size."""
    def inspect(item):
        try:
            return item, inspect_image(item[1]["path"]), None
        except (OSError, ValueError) as err:
            return item, None, err

    items = list(images.items())
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        checked = tqdm(pool.map(inspect, items), total=len(items), desc="checking images", unit="image",
                       disable=len(items) < 500, leave=False)
        for (iid, im), size, err in checked:
            if err is not None:
                if isinstance(err, FileNotFoundError):
                    report.add("missing_image", f"image {iid}: {im['path']} does not exist (skipped)")
                else:
                    report.add("unreadable_image", f"image {iid}: {err} (skipped)")
                del images[iid]
                continue
            listed = (im.get("width"), im.get("height"))
            if listed != size:
                report.add("size_mismatch", f"image {iid}: {im['path']} is {size[0]}x{size[1]} but the "
                                            f"annotations say {listed[0]}x{listed[1]} (the real size is used)")
            im["width"], im["height"] = size


def _checked_box(a: dict, im: dict, where: str, cat_index: dict, report: DataReport):
    """Annotation ``a``'s box as ``(x0, y0, x1, y1)`` clipped to image ``im``, or None when it is
    dropped; every drop and every clip is counted in ``report`` under its kind."""
    if a.get("category_id") not in cat_index:
        report.add("unknown_category", f"{where}: unknown category id {a.get('category_id')} (dropped)")
        return None
    bbox = a.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        report.add("malformed_box", f"{where}: bbox {bbox!r} is not [x, y, w, h] (dropped)")
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        report.add("malformed_box", f"{where}: bbox {bbox!r} has a value that is not a number (dropped)")
        return None
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        report.add("nan_box", f"{where}: bbox {bbox} has NaN/inf (dropped)")
        return None
    if w <= 0 or h <= 0:
        report.add("empty_box", f"{where}: bbox {bbox} has non-positive width/height (dropped)")
        return None
    W, H = float(im["width"]), float(im["height"])
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, W), min(y + h, H)
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
        if x1 <= x0 or y1 <= y0:
            report.add("outside_box", f"{where}: bbox {bbox} lies outside the {W:g}x{H:g} image (dropped)")
            return None
        report.add("clipped_box", f"{where}: bbox {bbox} extends past the {W:g}x{H:g} image "
                                  f"(clipped to it)")
    return x0, y0, x1, y1


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
    for kind, message in check_ground_truth(data, ann_file):
        report.add(kind, message)
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
        images[im["id"]] = {**im, "path": path}
    if check_files:
        _check_images(images, report)

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
        box = _checked_box(a, im, where, cat_index, report)
        if box is None:
            continue
        x0, y0, x1, y1 = box
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
    lines.append(problem_block(ds.report))
    return "\n".join(line for line in lines if line)


def problem_block(report: DataReport, examples: int = 3) -> str:
    """Every problem kind with its count and consequence, and a few of its messages ('' if none)."""
    counts = report.counts()
    if not counts:
        return ""
    lines = [f"data problems: {sum(counts.values())} (--strict makes any of them an error)"]
    for kind in sorted(counts, key=list(PROBLEM_KINDS).index):
        lines.append(f"  {kind:<18}{counts[kind]:>6}  {PROBLEM_KINDS[kind]}")
        shown = [m for k, m in report.problems if k == kind][:examples]
        lines += [f"      {m}" for m in shown]
        if counts[kind] > len(shown):
            lines.append(f"      ... and {counts[kind] - len(shown)} more")
    return "\n".join(lines)
