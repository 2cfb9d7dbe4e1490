"""What a view shows: the items of a ``detect predict`` output folder, or of an evaluation
(ground truth, detections and the image folder)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from detect.structures import read_record
from detect.util.atomic import is_temporary
from detect.util.files import read_json
from detect.view import ViewItem


def _gt_by_name(gt: dict, class_names, by_id: bool = False) -> dict:
    """{base file name (or image id): (boxes [M, 4] xyxy, class indices [M], crowd [M])} of the
    classes shown."""
    index = {n: i for i, n in enumerate(class_names)}
    cats = {c["id"]: index.get(c["name"]) for c in gt["categories"]}
    files = {im["id"]: im["id"] if by_id else Path(im["file_name"]).name for im in gt["images"]}
    out = {key: ([], [], []) for key in files.values()}
    if len(out) < len(files):  # by file name: images of other folders with the same name
        print(f"warning: {len(files) - len(out)} ground-truth image(s) share a file name with another; "
              f"their objects are pooled under that name in the view", file=sys.stderr)
    for a in gt["annotations"]:
        if cats.get(a["category_id"]) is None or a["image_id"] not in files:
            continue
        x, y, w, h = a["bbox"]
        boxes, labels, crowd = out[files[a["image_id"]]]
        boxes.append([x, y, x + w, y + h])
        labels.append(cats[a["category_id"]])
        crowd.append(bool(a.get("iscrowd", 0)))
    return {k: (np.array(b, np.float64).reshape(-1, 4), np.array(lab, np.int64), np.array(c, bool))
            for k, (b, lab, c) in out.items()}


def items_from_output(out_dir, gt: dict | None = None) -> tuple[list[ViewItem], list[str]]:
    """Items of a predict output folder (its per-image records), with ``gt`` matched by file name."""
    out_dir = Path(out_dir)
    meta = out_dir / "images.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{out_dir} has no images.json: not a finished 'detect predict --out' folder")
    class_names = [c["name"] for c in read_json(meta, "images.json of a predict run")["categories"]]
    truth = _gt_by_name(gt, class_names) if gt is not None else None
    items, videos = [], 0
    for rec_path in sorted((out_dir / "detections").glob("*.json")):
        if is_temporary(rec_path):  # a record being written, or a killed writer's leftover
            continue
        rec = read_record(rec_path)
        if rec.is_video:
            videos += 1
            continue
        d = rec.detections
        item = ViewItem(Path(rec.file).name, Path(rec.file), rec.width, rec.height, d.boxes, d.label_ids,
                        d.scores)
        if truth is not None:
            found = truth.get(Path(rec.file).name, (np.zeros((0, 4)), np.zeros(0, int), np.zeros(0, bool)))
            item.gt_boxes, item.gt_labels, item.gt_crowd = found
        if not item.path.is_file():
            print(f"warning: {item.path} is gone; its detections are shown without the image", file=sys.stderr)
            item.image = np.full((max(1, min(item.height, 64)), max(1, min(item.width, 64)), 3), 60, np.uint8)
        items.append(item)
    if videos:
        print(f"note: {videos} video(s) left out of the view (their annotated videos are in images/ with "
              f"--save-images)", file=sys.stderr)
    return items, class_names


def items_from_evaluation(gt: dict, results: list[dict], images) -> tuple[list[ViewItem], list[str]]:
    """Items of every ground-truth image, with the COCO ``results`` on it."""
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    class_names = [c["name"] for c in cats]
    index = {c["id"]: i for i, c in enumerate(cats)}
    truth = _gt_by_name(gt, class_names, by_id=True)
    by_image: dict[int, list] = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    items = []
    for im in gt["images"]:
        rows = [r for r in by_image.get(im["id"], []) if r["category_id"] in index]
        xywh = np.array([r["bbox"] for r in rows], np.float64).reshape(-1, 4)
        boxes, labels, crowd = truth[im["id"]]
        items.append(ViewItem(im["file_name"], Path(images) / im["file_name"], im["width"], im["height"],
                              np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
                              np.array([index[r["category_id"]] for r in rows], np.int64),
                              np.array([r["score"] for r in rows], np.float64), boxes, labels, crowd))
    return items, class_names
