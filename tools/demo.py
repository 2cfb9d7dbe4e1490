#!/usr/bin/env python
"""The main job on the bundled sample data (``make demo``).

Runs the detection ops end to end on ``data/sample``: anchors for each scene,
anchor matching against the ground truth, a simulated detector output
(positive anchors' boxes decoded from noisy regression deltas, with noisy
scores, plus false-positive noise) and exact class-aware NMS. Writes annotated
images and a summary JSON under ``--out``, and prints how many ground-truth
boxes NMS recovers (IoU >= 0.5, right class).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from detect.ops import box_coder  # noqa: E402
from detect.ops.anchors import AnchorGenerator  # noqa: E402
from detect.ops.boxes import pairwise_iou, xywh_to_xyxy  # noqa: E402
from detect.ops.matcher import assign_targets  # noqa: E402
from detect.ops.nms import batched_nms  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "data" / "sample")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    p.add_argument("--images", type=int, default=8, help="scenes to process")
    args = p.parse_args(argv)

    coco = json.loads((args.data / "annotations.json").read_text())
    cats = {c["id"]: i for i, c in enumerate(coco["categories"])}
    names = [c["name"] for c in coco["categories"]]
    args.out.mkdir(parents=True, exist_ok=True)
    gen = AnchorGenerator()
    rng = np.random.default_rng(0)
    total_gt = recovered = 0
    summary = []
    for info in coco["images"][: args.images]:
        anns = [a for a in coco["annotations"] if a["image_id"] == info["id"]]
        h, w = info["height"], info["width"]
        anchors = gen((h, w))
        gt = xywh_to_xyxy(tf.constant([a["bbox"] for a in anns] or np.zeros((0, 4)), tf.float32))
        labels = tf.constant([cats[a["category_id"]] for a in anns], tf.int32)
        t = assign_targets(anchors, gt[None], labels[None], allow_low_quality_matches=True)
        pos = t.positive[0].numpy()

        # Simulated raw detector output: noisy deltas and scores on positives,
        # low random scores everywhere else.
        deltas = t.box_targets[0].numpy() + rng.normal(0, 0.3, (len(pos), 4)) * pos[:, None]
        scores = rng.uniform(0, 0.08, (len(pos), len(names)))
        cls = np.maximum(t.cls_targets[0].numpy(), 0)
        scores[pos, cls[pos]] = rng.uniform(0.4, 0.95, pos.sum())
        boxes = box_coder.decode(anchors, tf.constant(deltas, tf.float32))
        r = batched_nms(boxes[None], tf.constant(scores[None], tf.float32),
                        iou_threshold=0.5, score_threshold=0.3, max_detections=100)
        n = int(r.num_detections[0])
        det, det_lab = r.boxes[0, :n], r.labels[0, :n].numpy()
        hit = 0
        if len(anns) and n:
            iou = pairwise_iou(gt, det).numpy()
            same = labels.numpy()[:, None] == det_lab[None, :]
            hit = int(((iou >= 0.5) & same).any(axis=1).sum())
        total_gt += len(anns)
        recovered += hit
        summary.append({"file_name": info["file_name"], "ground_truth": len(anns),
                        "positive_anchors": int(pos.sum()),
                        "detections_after_nms": n, "recovered": hit})

        img = cv2.imread(str(args.data / "images" / info["file_name"]))
        for (x0, y0, x1, y1), lab, s in zip(det.numpy(), det_lab, r.scores[0, :n].numpy()):
            cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), (0, 255, 255), 1)
            cv2.putText(img, f"{names[lab]} {s:.2f}", (int(x0), max(8, int(y0) - 2)),
                        cv2.FONT_HERSHEY_PLAIN, 0.6, (0, 255, 255), 1)
        cv2.imwrite(str(args.out / info["file_name"].replace(".jpg", "_nms.jpg")), img)
        print(f"{info['file_name']}: {len(anns)} objects, {int(pos.sum())} positive anchors, "
              f"{n} detections after NMS, {hit} recovered")

    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nrecovered {recovered}/{total_gt} ground-truth boxes; outputs in {args.out}")


if __name__ == "__main__":
    main()
