"""Export a detector as a TensorFlow SavedModel with a serving signature.

The signature ``serving_default`` takes ``images``: uint8 ``[B, H, W, 3]`` RGB
(``[B, H, W, N]`` for a model of ``input_bands`` N)
of any size, and returns the same detections as ``RetinaNet.predict``:
``boxes [B, D, 4]`` (xyxy input pixels), ``scores [B, D]``, ``labels [B, D]``
(int32, -1 padding) and ``num_detections [B]``. NMS is inside the graph.

``assets/detect.json`` holds what a consumer needs beside the graph: the
class names (label ``k`` is ``class_names[k]``), the COCO category ids, the
input rule (scale, tile, overlap, GSD) and the whole model config.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from detect.models.retinanet import RetinaNet
from detect.util import atomic


def export_saved_model(model: RetinaNet, out_dir: str | Path) -> Path:
    """Write the SavedModel to ``out_dir`` atomically (temp folder, then rename)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"export --out {str(out_dir)!r} is a file; a SavedModel is a folder: name a "
                              f"new or empty folder (or use --format tflite for a single file)")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"export folder {str(out_dir)!r} exists and is not empty")

    bands = model.model_config.input_bands

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, bands], tf.uint8, name="images")])
    def serve(images):
        return model.detect(tf.cast(images, tf.float32))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve)
    with atomic.folder(out_dir) as tmp:
        archive.write_out(str(tmp), verbose=False)
        (Path(tmp) / "assets").mkdir(exist_ok=True)
        atomic.write_json(Path(tmp) / "assets" / ASSET, asset(model))
    return out_dir


#: The SavedModel asset holding class names, input rule and config.
ASSET = "detect.json"


def asset(model: RetinaNet) -> dict:
    """What :data:`ASSET` holds for ``model``."""
    c = model.model_config
    return {"class_names": list(model.class_names), "category_ids": list(c.input.category_ids),
            "input": {"scale": c.input.scale, "tile": c.input.tile, "overlap": c.input.overlap,
                      "gsd": c.input.gsd, "bands": c.input_bands},
            "config": c.to_dict()}
