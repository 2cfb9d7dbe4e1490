"""Batched inference over the images of a COCO dataset -> COCO results list."""

from __future__ import annotations

from pathlib import Path

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


def predict_coco(model, gt: dict, images_dir, *, batch_size: int = 4,
                 progress: bool = True) -> list[dict]:
    """Detections for every image listed in ``gt`` as a COCO results list (xywh pixels).

    Images of a batch are padded bottom/right to the batch's largest size;
    boxes are clipped to each image's own size afterwards.
    """
    images_dir = Path(images_dir)
    cat_of = np.asarray(label_to_category(model, gt))
    infos = gt["images"]
    results = []
    for start in tqdm(range(0, len(infos), batch_size), desc="evaluate", unit="batch",
                      disable=not progress):
        chunk = infos[start:start + batch_size]
        imgs = [read_image(images_dir / im["file_name"]) for im in chunk]
        h = max(i.shape[0] for i in imgs)
        w = max(i.shape[1] for i in imgs)
        batch = np.zeros((len(imgs), h, w, 3), np.float32)
        for b, img in enumerate(imgs):
            batch[b, : img.shape[0], : img.shape[1]] = img
        det = model.predict_on_batch(batch)
        for b, (info, img) in enumerate(zip(chunk, imgs)):
            n = int(det["num_detections"][b])
            boxes = np.asarray(det["boxes"][b, :n], np.float64)
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, img.shape[1])
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, img.shape[0])
            xywh = np.asarray(xyxy_to_xywh(boxes))
            for box, label, score in zip(xywh, det["labels"][b, :n], det["scores"][b, :n]):
                results.append({"image_id": info["id"], "category_id": int(cat_of[label]),
                                "bbox": [round(float(v), 2) for v in box],
                                "score": round(float(score), 5)})
    return results
