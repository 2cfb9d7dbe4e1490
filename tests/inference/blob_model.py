"""A test double of a detector that finds bright squares exactly, so tests of tiling,
shards and mosaics know every true box. It has what the inference path uses of a
model: ``model_config``, ``class_names``, ``predict_on_batch``, ``set_postprocess``, ``digest``."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from tests.models.conftest import tiny_config

#: Class = which channel is bright (> 200), as in ``square_scenes``.
BRIGHT = 200


class BlobModel:
    def __init__(self, tile=96, overlap=0.25, max_detections=50):
        self.model_config = tiny_config(input={"tile": tile, "overlap": overlap},
                                        postprocess={"max_detections": max_detections,
                                                     "pre_nms_top_k": 10 * max_detections})
        self.tiles_seen = 0

    @property
    def class_names(self):
        return self.model_config.class_names

    def set_postprocess(self, **changes):
        self.model_config = replace(self.model_config,
                                    postprocess=self.model_config.postprocess.changed(**changes))

    def digest(self, postprocess: bool = True) -> str:
        return "blob-model"

    def predict_on_batch(self, batch):
        """Each connected bright blob -> its exact box; score from its visible area (deterministic)."""
        batch = np.asarray(batch)
        k = self.model_config.postprocess.max_detections
        out = {"boxes": np.zeros((len(batch), k, 4), np.float32), "scores": np.zeros((len(batch), k), np.float32),
               "labels": np.zeros((len(batch), k), np.int32), "num_detections": np.zeros(len(batch), np.int32),
               "num_candidates": np.zeros(len(batch), np.int32)}
        for b, img in enumerate(batch):
            self.tiles_seen += 1
            found = []
            for cls in range(3):
                mask = (img[:, :, cls] > BRIGHT).astype(np.uint8)
                n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
                for x, y, w, h, area in stats[1:]:
                    found.append((0.5 + 0.49 * min(1.0, area / 2000.0), cls, [x, y, x + w, y + h]))
            found.sort(key=lambda t: -t[0])
            found = found[:k]
            for j, (s, cls, box) in enumerate(found):
                out["boxes"][b, j], out["scores"][b, j], out["labels"][b, j] = box, s, cls
            out["num_detections"][b] = out["num_candidates"][b] = len(found)
        return out
