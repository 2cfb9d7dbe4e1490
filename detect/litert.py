"""LiteRT (TFLite) export and inference: the network as a flatbuffer, decoding and NMS as ever.

A ``.tflite`` file written by :func:`export_tflite` holds the network only:
normalised images ``[1, H, W, bands]`` -> ``box_deltas [1, N, 4]`` and
``cls_logits [1, N, K]``, H and W free (the interpreter resizes to each
input). Everything else stays on our side, so outputs match the Keras
model's path exactly:

- :class:`LiteRTModel` normalises a batch and pads it (zeros after
  normalising) to the size multiple, exactly as ``RetinaNet.call`` does, and
  runs the interpreter image by image at that size: the same pixels reach the
  same layers (group normalisation, whose statistics see the padding,
  included), then :func:`detect.postprocess.postprocess` decodes and runs NMS.
- The model config (class names, input rule, anchors, post-processing) is
  embedded in the flatbuffer's metadata under :data:`METADATA_NAME`, so the
  file alone is enough; a file without it is refused with a message.

Group normalisation is traced as 4-D ops for export (per-channel moments,
averaged within groups by a constant 1x1 convolution): Keras' 5-D reshape
form aborts the int8 quantiser. The result equals Keras' to float32 rounding.

The interpreter comes from ``ai-edge-litert`` (the ``[lite]`` extra, LiteRT's
own package) when installed, else TensorFlow's deprecated ``tf.lite``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import types
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from detect import atomic

#: Name of the flatbuffer metadata entry holding the model config (JSON).
METADATA_NAME = "detect"
FORMAT = "detect-tflite-1"
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")


# ---- export -------------------------------------------------------------------


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
    from detect.datasets.images import BandRule
    from detect.inference.predictor import read_tile
    from detect.inference.sources import open_source
    from detect.inference.tiling import tile_windows

    rule = model.model_config.input
    band_rule = BandRule.of(model.model_config, None)
    normalize = _Normalization(model.model_config)
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
                yield _normalized_padded(normalize, patch[None], model.size_multiple)
                taken += 1
    for source, _ in per_image:
        source.close()


class _Normalization:
    """The model's input normalisation (``RetinaNet.normalize``), computed here by a numba
    kernel: ``(x[..., order] - mean) / std`` in float32, as the Keras layer does, so the
    values are the same. Numba, because numpy's broadcast over a last axis of 3 bands ran
    at a seventh of the speed (6 ms for four 512 px tiles, more than the decoding)."""

    def __init__(self, config):
        from detect.litert_kernels import normalize_into
        from detect.models.backbones import normalization_affine

        self._kernel = normalize_into  # bound once: into() runs per tile

        reverse, mean, std = normalization_affine(config)
        n = len(mean)
        self.order = np.array([2, 1, 0, *range(3, n)] if reverse else range(n), np.int64)
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    def into(self, image: np.ndarray, out: np.ndarray) -> None:
        """Normalise ``image [h, w, C]`` (any dtype) into the top-left of ``out [hp, wp, C]``
        float32 and zero the rest (the padding ``RetinaNet.call`` adds after normalising)."""
        self._kernel(image, self.order, self.mean, self.std, out)


def _padded(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def _normalized_padded(normalize: _Normalization, batch: np.ndarray, multiple: int) -> np.ndarray:
    """``batch [B, h, w, C]`` raw pixels -> normalised, then zero-padded (bottom/right)
    to a multiple of ``multiple``: what ``RetinaNet.call`` feeds its network."""
    b, h, w, c = batch.shape
    out = np.empty((b, _padded(h, multiple), _padded(w, multiple), c), np.float32)
    for i in range(b):
        normalize.into(batch[i], out[i])
    return out


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


def read_metadata(path: Path) -> dict | None:
    """The :data:`METADATA_NAME` entry of a ``.tflite`` file as a dict; None when it has none."""
    from tensorflow.lite.python import schema_py_generated as schema

    data = Path(path).read_bytes()
    try:
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() == METADATA_NAME.encode():
                return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    except Exception as e:  # not a flatbuffer at all
        raise ValueError(f"{path} is not a TFLite flatbuffer ({e})") from None
    return None


def calibration_set(folder: str | Path, ann: str | Path | None = None) -> tuple[list[Path], Path | None]:
    """``(images, annotations or None)`` of a calibration folder: a dataset folder
    (``annotations.json`` + ``images/``, as ``data/sample_val``) or a folder of images
    (then ``ann``, a COCO file naming them, is optional)."""
    from detect.inference.run import expand_sources

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
        dets = predict_coco(model, gt, images, options=TileOptions(tile=exported.tile))
        stats = evaluate(gt, dets).stats if dets else [0.0] * 12
        out[name] = {"AP": float(stats[0]), "AP50": float(stats[1]), "detections": len(dets)}
    return out


# ---- inference ----------------------------------------------------------------


def _interpreter(path: Path, threads: int | None):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # TensorFlow's copy (deprecated there, same API)
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())


class LiteRTModel:
    """A ``.tflite`` detector written by :func:`export_tflite`, usable wherever a RetinaNet is
    (``detect_many``, ``detect.predict`` / ``evaluate``): ``model_config``, ``class_names``,
    ``set_postprocess`` and ``predict_on_batch`` behave as the Keras model's."""

    def __init__(self, path: str | Path, *, threads: int | None = None):
        from detect.config import ModelConfig
        from detect.ops.anchors import AnchorGenerator

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        meta = read_metadata(self.path)
        if meta is None or meta.get("format") != FORMAT:
            raise ValueError(f"{self.path} was not exported by 'detect export --format tflite': it has no "
                             f"'{METADATA_NAME}' metadata (class names, input rule), so it cannot be run here")
        self.meta = meta
        self.model_config = ModelConfig.from_dict(meta["config"])
        self.tile, self.size_multiple = int(meta["tile"]), int(meta["size_multiple"])
        self.anchor_generator = AnchorGenerator.from_config(self.model_config.anchors)
        self.normalize = _Normalization(self.model_config)
        self.interpreter = _interpreter(self.path, threads)
        self._input = self.interpreter.get_input_details()[0]
        outputs = self.interpreter.get_signature_runner().get_output_details()
        self._outputs = (outputs["output_1"]["index"], outputs["output_0"]["index"])  # cls, box
        bands = int(self._input["shape_signature"][-1])
        if bands != self.model_config.input_bands:
            raise ValueError(f"{self.path}: the network takes {bands} bands, its metadata says "
                             f"{self.model_config.input_bands}")
        self._shape = None  # the input size the interpreter is allocated for
        self._post = None

    def __repr__(self) -> str:
        return f"LiteRTModel({str(self.path)!r}, quantize={self.meta['quantize']!r})"

    @property
    def class_names(self) -> tuple[str, ...]:
        c = self.model_config
        return c.class_names or tuple(str(i) for i in range(c.num_classes))

    def set_postprocess(self, **changes) -> None:
        """As ``RetinaNet.set_postprocess``."""
        from dataclasses import replace

        self.model_config = replace(self.model_config,
                                    postprocess=self.model_config.postprocess.changed(**changes))

    def digest(self) -> str:
        """SHA-256 of the file and the current post-processing (what a rerun must match)."""
        h = hashlib.sha256(self.path.read_bytes())
        h.update(json.dumps(self.model_config.to_dict(), sort_keys=True, default=str).encode())
        return h.hexdigest()

    def _postprocess(self):
        """Decode + NMS as a traced function of the current post-processing settings
        (rebuilt when ``set_postprocess`` or ``detect.api.postprocessing`` changed them)."""
        config = self.model_config
        if self._post is None or self._post[0] is not config.postprocess:
            import tensorflow as tf

            from detect.postprocess import postprocess

            @tf.function(reduce_retracing=True)
            def run(cls, box, anchors, height, width):
                return postprocess(cls, box, anchors, (height, width), config.postprocess,
                                   variances=config.box_variances)

            self._post = (config.postprocess, run)
        return self._post[1]

    def raw_outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
        """``(cls_logits [B, N, K], box_deltas [B, N, 4], hp, wp)`` for raw ``batch [B, h, w, C]``;
        ``hp x wp`` is the padded size the network ran at (N anchors).

        Each image is normalised straight into the interpreter's input tensor and each
        output copied once into the batch's arrays (the signature runner's copies of
        both, then stacking them, cost about a tenth of an int8 tile's time)."""
        it = self.interpreter
        if batch.ndim != 4 or batch.shape[3] != self.model_config.input_bands:
            raise ValueError(f"{self.path} takes images [B, h, w, {self.model_config.input_bands}], "
                             f"got an array of shape {batch.shape}")
        b, h, w = batch.shape[:3]
        shape = (1, _padded(h, self.size_multiple), _padded(w, self.size_multiple), batch.shape[3])
        if shape != self._shape:
            it.resize_tensor_input(self._input["index"], shape)
            it.allocate_tensors()
            self._shape = shape
        cls = box = None
        for i in range(b):
            self.normalize.into(batch[i], it.tensor(self._input["index"])()[0])
            it.invoke()
            out_cls, out_box = (it.tensor(k)()[0] for k in self._outputs)
            if cls is None:
                cls = np.empty((b, *out_cls.shape), np.float32)
                box = np.empty((b, *out_box.shape), np.float32)
            cls[i], box[i] = out_cls, out_box
            del out_cls, out_box  # views into the interpreter: none may outlive the next invoke
        return cls, box, shape[1], shape[2]

    def predict_on_batch(self, batch) -> dict:
        """Detections for raw ``batch [B, h, w, C]`` (0..255), as ``RetinaNet.predict_on_batch``."""
        import tensorflow as tf

        batch = np.asarray(batch)
        cls, box, hp, wp = self.raw_outputs(batch)
        anchors = self.anchor_generator((hp, wp))
        h, w = batch.shape[1:3]
        det = self._postprocess()(tf.constant(cls), tf.constant(box), anchors, tf.constant(h), tf.constant(w))
        return {k: v.numpy() for k, v in det.items()}
