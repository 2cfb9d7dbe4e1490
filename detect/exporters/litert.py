"""LiteRT (TFLite) export: the network as a flatbuffer, with the model config as metadata.

A ``.tflite`` file written by :func:`export_tflite` holds the network only:
normalised images ``[1, H, W, bands]`` -> ``box_deltas [1, N, 4]`` and
``cls_logits [1, N, K]``, H and W free (the interpreter resizes to each
input). Decoding and NMS stay on our side (:class:`detect.models.litert_model.LiteRTModel`
runs such a file), so outputs match the Keras model's path exactly. The model
config (class names, input rule, anchors, post-processing) is embedded in the
flatbuffer's metadata, so the file alone is enough.

Group normalisation is traced as 4-D ops for export (per-channel moments,
averaged within groups by a constant 1x1 convolution): Keras' 5-D reshape
form aborts the int8 quantiser. The result equals Keras' to float32 rounding.

Also here: the calibration set for int8 and the parity report (AP of the
Keras model and of the export on the same labelled images).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import types
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from detect.config import defaults
from detect.config.sections import tile_rule_problems
from detect.models.litert_model import (
    FORMAT,
    METADATA_NAME,
    Normalization,
    normalized_padded,
)
from detect.util import atomic

QUANTIZATIONS = defaults.QUANTIZATIONS


def _group_norm_4d(self, inputs, mask=None):
    """Keras GroupNormalization's result from 4-D ops only (see module doc)."""
    import tensorflow as tf

    channels = inputs.shape[-1]
    per_group = channels // self.groups
    # [1, 1, C, C]: averages the channels of each group, a constant 1x1 convolution
    average = np.kron(np.eye(self.groups), np.full((per_group, per_group), 1.0 / per_group))
    average = tf.constant(average[None, None], inputs.dtype)
    mean = tf.nn.conv2d(tf.reduce_mean(inputs, [1, 2], keepdims=True), average, 1, "VALID")
    centered = inputs - mean
    # centered * centered, not tf.square: the converter turns square(x - mean) into
    # SQUARED_DIFFERENCE, which has no int8 XNNPACK kernel; its reference kernel made
    # an int8 GroupNorm model slower than float32 (light config: 116 vs 33 ms a tile).
    var = tf.nn.conv2d(tf.reduce_mean(centered * centered, [1, 2], keepdims=True), average, 1, "VALID")
    factor = tf.math.rsqrt(var + self.epsilon)
    if self.scale:
        factor = factor * tf.cast(self.gamma, inputs.dtype)
    out = centered * factor
    return out + tf.cast(self.beta, inputs.dtype) if self.center else out


@contextlib.contextmanager
def _four_d_group_norms(network):
    """Within the block, every GroupNormalization of ``network`` computes with 4-D ops."""
    import keras

    layers = [la for la in network._flatten_layers() if isinstance(la, keras.layers.GroupNormalization)]
    for layer in layers:
        layer.call = types.MethodType(_group_norm_4d, layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.call


def normalized_tiles(model, images: Iterable[Path], tile: int, limit: int) -> Iterator[np.ndarray]:
    """Up to ``limit`` tiles ``[1, h, w, bands]`` (normalised and padded as the model does) cut
    from ``images`` by the model's input rule, taken round-robin so every image contributes."""
    from detect.imagery.images import BandRule
    from detect.imagery.rasters import open_source
    from detect.imagery.tiling import tile_windows
    from detect.inference.predictor import read_tile

    rule = model.model_config.input
    band_rule = BandRule.of(model.model_config, None)
    normalize = Normalization(model.model_config)
    per_image = []
    for path in images:
        source = open_source(Path(path), band_rule)
        h, w = max(1, round(source.height * rule.scale)), max(1, round(source.width * rule.scale))
        per_image.append((source, list(tile_windows(h, w, tile, rule.overlap))))
    taken = 0
    while taken < limit and any(wins for _, wins in per_image):
        for source, wins in per_image:
            if wins and taken < limit:
                patch = read_tile(source, wins.pop(0), rule.scale).astype(np.float32)
                yield normalized_padded(normalize, patch[None], model.size_multiple)
                taken += 1
    for source, _ in per_image:
        source.close()


def export_tflite(model, out: str | Path, *, quantize: str = "none", calibration: list[Path] | None = None,
                  calibration_tiles: int = 32, tile: int | None = None, overwrite: bool = False) -> Path:
    """Write ``model``'s network as a LiteRT flatbuffer to ``out`` (atomically).

    ``quantize``: "none" (float32), "float16" (weights), "dynamic" (int8
    weights, float activations) or "int8" (full-integer post-training
    quantisation with float input/output, calibrated on ``calibration_tiles``
    tiles cut from the ``calibration`` images by the model's input rule).
    ``tile``: the tile side of the input rule stored in the file (default:
    the model's); calibration tiles are cut at it. The file takes any size.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    out = Path(out)
    for name, problem in tile_rule_problems(tile):
        raise ValueError(f"{name} {problem}")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if quantize == "int8" and not calibration:
        raise ValueError("int8 quantisation needs calibration images (--calibration DIR): "
                         "activation ranges are measured on them")
    config = model.model_config
    tile = int(tile or config.input.tile)
    bands = config.input_bands

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, bands], tf.float32, name="images")])
    def network(x):
        cls, box = model.network(x, training=False)
        return tf.cast(box, tf.float32), tf.cast(cls, tf.float32)  # output_0, output_1

    with _four_d_group_norms(model.network):
        frozen = convert_variables_to_constants_v2(network.get_concrete_function())
    # Frozen first: the converter's own freezing left READ_VARIABLE ops (NaN outputs) in TF 2.21.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], tf.Module())
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        tiles = list(normalized_tiles(model, calibration, tile, calibration_tiles))
        if not tiles:
            raise ValueError("no calibration tiles: the calibration images are empty")
        print(f"calibrating int8 on {len(tiles)} tiles from {len(calibration)} images", flush=True)
        converter.representative_dataset = lambda: ([t] for t in tiles)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    flatbuffer = converter.convert()
    stored = dataclasses.replace(config, input=dataclasses.replace(config.input, tile=tile))
    meta = {"format": FORMAT, "config": stored.to_dict(), "tile": tile,
            "quantize": quantize, "outputs": ["box_deltas", "cls_logits"], "size_multiple": model.size_multiple}
    return atomic.write_bytes(out, with_metadata(flatbuffer, meta))


def with_metadata(flatbuffer: bytes, meta: dict) -> bytes:
    """``flatbuffer`` with ``meta`` (JSON) stored as metadata entry :data:`METADATA_NAME`."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def calibration_set(folder: str | Path, ann: str | Path | None = None) -> tuple[list[Path], Path | None]:
    """``(images, annotations or None)`` of a calibration folder: a dataset folder
    (``annotations.json`` + ``images/``, as ``data/sample_val``) or a folder of images
    (then ``ann``, a COCO file naming them, is optional)."""
    from detect.imagery.inputs import expand_sources

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder not found: {folder}")
    if ann is None and (folder / "annotations.json").is_file() and (folder / "images").is_dir():
        ann, folder = folder / "annotations.json", folder / "images"
    images = expand_sources([str(folder)])
    if not images:
        raise ValueError(f"no images in calibration folder {folder}")
    return images, Path(ann) if ann else None


def parity(reference, exported, ann: str | Path, images: str | Path) -> dict:
    """COCO AP and AP50 of ``reference`` (the Keras model) and ``exported`` (a
    :class:`LiteRTModel`) on the same annotated images, through the one inference path."""
    from detect.evaluation.coco_eval import evaluate, load_ground_truth
    from detect.inference.coco_dataset import predict_coco
    from detect.inference.predictor import TileOptions

    gt = load_ground_truth(ann)
    out = {}
    for name, model in (("keras", reference), ("tflite", exported)):
        dets = predict_coco(model, gt, images, options=TileOptions(tile=exported.tile).resolved(model))
        stats = evaluate(gt, dets).stats if dets else [0.0] * 12
        out[name] = {"AP": float(stats[0]), "AP50": float(stats[1]), "detections": len(dets)}
    return out
