"""Detections over the images of a COCO dataset -> COCO results list.

Images run through :func:`detect.inference.predictor.detect_many`, the same
path as ``detect predict`` (the model's input rule: scale, tiles, merging),
so an image gives the same detections in ``detect evaluate --model``, in
validation during training and in ``detect predict``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from detect.imagery.images import BandRule, read_image
from detect.imagery.rasters import ArraySource
from detect.inference.predictor import DEFAULT_TILES, CapCount, TileOptions, detect_many
from detect.ops.boxes import xyxy_to_xywh


def label_to_category(model, gt: dict) -> list[int]:
    """Category id for each model class index: by class name, else by sorted id order."""
    cats = gt["categories"]
    by_name = {c["name"]: c["id"] for c in cats}
    names = model.model_config.class_names
    if names and all(n in by_name for n in names):
        return [by_name[n] for n in names]
    ids = sorted(c["id"] for c in cats)
    if len(ids) != model.model_config.num_classes:
        raise ValueError(
            f"model has {model.model_config.num_classes} classes {list(names) or ''} but the "
            f"ground truth has {len(ids)} categories {[c['name'] for c in cats]}; class names "
            f"must match category names, or the counts must match (sorted category ids)")
    return ids


def to_coco_results(det: dict, image_id: int, category_ids) -> list[dict]:
    """One image's detections (xyxy source pixels) as COCO results entries (xywh)."""
    cat_of = np.asarray(category_ids)
    xywh = np.asarray(xyxy_to_xywh(np.asarray(det["boxes"], np.float64).reshape(-1, 4)))
    return [{"image_id": int(image_id), "category_id": int(cat_of[label]),
             "bbox": [round(float(v), 2) for v in box], "score": round(float(score), 5)}
            for box, label, score in zip(xywh, det["labels"], det["scores"])]


def predict_arrays(model, images, options: TileOptions = DEFAULT_TILES) -> list[dict]:
    """Detections for RGB arrays ``[H, W, 3]`` (see :func:`detect_many`)."""
    channels = model.model_config.input_bands
    return list(detect_many(model, (ArraySource(img, channels=channels) for img in images), options))


def predict_images(model, items, category_ids, *, options: TileOptions = DEFAULT_TILES,
                   progress: bool = True, stats: CapCount | None = None) -> list[dict]:
    """Detections as a COCO results list (xywh pixels of the original images).

    ``items``: ``[(image_id, path), ...]``; ``category_ids[k]`` is the id of
    class ``k``. Warns with counts when tiles reached a post-processing cap,
    unless ``stats`` (a :class:`~detect.inference.predictor.CapCount`) is
    given: then the counts are added there for the caller to report.
    """
    results, caps = [], CapCount()
    rule = BandRule.of(model.model_config)
    sources = (ArraySource(read_image(path, rule), str(path), rule.count) for _, path in items)
    dets = detect_many(model, sources, options)
    for (image_id, _), det in tqdm(zip(items, dets), total=len(items), desc="predict", unit="image",
                                   disable=not progress):
        results += to_coco_results(det, image_id, category_ids)
        caps.add(det)
    if stats is not None:
        stats += caps
    elif caps.warning(model.model_config.postprocess):
        print(caps.warning(model.model_config.postprocess), file=sys.stderr)
    return results


def predict_coco(model, gt: dict, images_dir, *, options: TileOptions = DEFAULT_TILES,
                 progress: bool = True) -> list[dict]:
    """Detections for every image listed in ``gt`` (see :func:`predict_images`)."""
    images_dir = Path(images_dir)
    items = [(im["id"], images_dir / im["file_name"]) for im in gt["images"]]
    return predict_images(model, items, label_to_category(model, gt), options=options,
                          progress=progress)


def predict_samples(model, dataset, *, options: TileOptions = DEFAULT_TILES,
                    stats: CapCount | None = None) -> list[dict]:
    """Detections for a checked :class:`~detect.datasets.coco.CocoDataset` (validation)."""
    items = [(s.image_id, s.path) for s in dataset.samples]
    return predict_images(model, items, dataset.category_ids, options=options, progress=False,
                          stats=stats)
