"""Batched inference over the images of a COCO dataset -> COCO results list."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from detect.datasets.images import read_image
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


def _resize_for(img: np.ndarray, data_config):
    """Resize as the training pipeline does; returns (image, x scale, y scale)."""
    if data_config is None:
        return img, 1.0, 1.0
    h, w = img.shape[:2]
    if data_config.resize == "fixed":
        nh = nw = data_config.image_size
    else:
        s = min(data_config.min_side / min(h, w), data_config.max_side / max(h, w))
        nh, nw = round(h * s), round(w * s)
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR), nw / w, nh / h


def predict_images(model, items, category_ids, *, data_config=None, batch_size: int = 4,
                   progress: bool = True) -> list[dict]:
    """Detections as a COCO results list (xywh pixels of the original images).

    ``items``: ``[(image_id, path), ...]``; ``category_ids[k]`` is the id of
    class ``k``. With ``data_config``, images are resized as in training and
    boxes mapped back. Images of a batch are padded bottom/right to the
    batch's largest size; boxes are clipped to each image's own size.
    """
    cat_of = np.asarray(category_ids)
    results = []
    for start in tqdm(range(0, len(items), batch_size), desc="predict", unit="batch",
                      disable=not progress):
        chunk = items[start:start + batch_size]
        imgs, scales = [], []
        for _, path in chunk:
            img = read_image(path)
            resized, sx, sy = _resize_for(img, data_config)
            imgs.append(resized)
            scales.append((sx, sy, img.shape[1], img.shape[0]))
        h = max(i.shape[0] for i in imgs)
        w = max(i.shape[1] for i in imgs)
        batch = np.zeros((len(imgs), h, w, 3), np.float32)
        for b, img in enumerate(imgs):
            batch[b, : img.shape[0], : img.shape[1]] = img
        det = model.predict_on_batch(batch)
        for b, ((image_id, _), (sx, sy, ow, oh)) in enumerate(zip(chunk, scales)):
            n = int(det["num_detections"][b])
            boxes = np.asarray(det["boxes"][b, :n], np.float64) / [sx, sy, sx, sy]
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, ow)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, oh)
            xywh = np.asarray(xyxy_to_xywh(boxes))
            for box, label, score in zip(xywh, det["labels"][b, :n], det["scores"][b, :n]):
                results.append({"image_id": int(image_id), "category_id": int(cat_of[label]),
                                "bbox": [round(float(v), 2) for v in box],
                                "score": round(float(score), 5)})
    return results


def predict_coco(model, gt: dict, images_dir, *, batch_size: int = 4, progress: bool = True,
                 data_config=None) -> list[dict]:
    """Detections for every image listed in ``gt`` (see :func:`predict_images`)."""
    images_dir = Path(images_dir)
    items = [(im["id"], images_dir / im["file_name"]) for im in gt["images"]]
    return predict_images(model, items, label_to_category(model, gt), data_config=data_config,
                          batch_size=batch_size, progress=progress)


def predict_samples(model, dataset, data_config, *, batch_size: int = 4) -> list[dict]:
    """Detections for a checked :class:`~detect.datasets.coco.CocoDataset` (validation)."""
    items = [(s.image_id, s.path) for s in dataset.samples]
    return predict_images(model, items, dataset.category_ids, data_config=data_config,
                          batch_size=batch_size, progress=False)
