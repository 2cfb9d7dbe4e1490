#!/usr/bin/env python
"""Imported keras-hub parity on the 12 bundled validation images (data/sample_val): a small
keras-hub RetinaNet built from config (no download), trained a few steps, saved as a preset and
imported; its own eager decoder against ``detect.predict`` of the import. Prints how many of the
source's detections inside the images detect reproduces (same class, score within 1e-4, box within
0.05 px). Needs the [hub] extra.

    python tools/parity_imported.py
"""
import json
import shutil
import sys
from pathlib import Path

import cv2
import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import keras_hub as hub  # noqa: E402

import detect  # noqa: E402
from detect.models.importers import import_detector  # noqa: E402

ROOT = Path(__file__).resolve().parents[1] / "data" / "sample_val"
gt = json.loads((ROOT / "annotations.json").read_text())
imgs = np.stack([cv2.imread(str(ROOT / "images" / im["file_name"]))[..., ::-1] for im in gt["images"]]).astype("float32")
SIZE = imgs.shape[1]
keras.utils.set_random_seed(0)
enc = hub.models.ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 16, 32, 32],
    stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block", use_pre_activation=False)
bb = hub.models.RetinaNetBackbone(image_encoder=enc, min_level=3, max_level=7, use_p5=True)
conv = hub.layers.RetinaNetImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0)
det = hub.models.RetinaNetObjectDetector(backbone=bb, num_classes=3, bounding_box_format="xyxy",
    preprocessor=hub.models.RetinaNetObjectDetectorPreprocessor(image_converter=conv))
det.compile(optimizer=keras.optimizers.Adam(1e-3))
x = imgs[:8]
boxes = np.array([[[10, 10, 50, 60], [60, 60, 120, 100]]] * 8, np.float32)
det.fit(x, {"boxes": boxes, "labels": np.array([[0, 2]] * 8)}, epochs=3, batch_size=4, verbose=0)
det.prediction_decoder = hub.layers.NonMaxSuppression(bounding_box_format="xyxy", from_logits=True,
                                                       confidence_threshold=0.05, iou_threshold=0.5, max_detections=100)
folder = Path("/tmp/detect_parity_imported/preset")
shutil.rmtree(folder, ignore_errors=True)
det.save_to_preset(str(folder))
model = import_detector(str(folder))
xin = conv(imgs)
theirs = det.decode_predictions(det(xin), xin)
ours = detect.predict(model, imgs, max_detections=100, score_threshold=0.05)  # the source decoder's
total = found = 0
for b in range(len(imgs)):
    n = int(theirs["num_detections"][b])
    tb = np.clip(np.asarray(theirs["boxes"][b, :n]), 0, SIZE)  # both sides clipped to the image
    ts = np.asarray(theirs["confidence"][b, :n])
    tl = np.asarray(theirs["labels"][b, :n])
    keep = (tb[:, 2] > tb[:, 0]) & (tb[:, 3] > tb[:, 1])
    d = ours[b]
    for box, score, label in zip(tb[keep], ts[keep], tl[keep]):
        total += 1
        if len(d):
            same = (d.labels == label) & (np.abs(d.scores - score) < 1e-4) & (np.abs(d.boxes - box).max(axis=1) < 0.05)
            found += bool(same.any())
print(f"theirs {total} detections inside the images; detect reproduces {found}; "
      f"detections in all: theirs {int(np.sum(theirs['num_detections']))}, detect {sum(len(d) for d in ours)}")
