"""A ``.tflite`` detector run here: LiteRT runs the network, decoding and NMS are ours.

- :class:`LiteRTModel` normalises a batch and pads it (zeros after
  normalising) to the size multiple, exactly as ``RetinaNet.call`` does, and
  runs the interpreter image by image at that size: the same pixels reach the
  same layers (group normalisation, whose statistics see the padding,
  included), then :func:`detect.models.postprocess.postprocess` decodes and runs NMS.
- The model config (class names, input rule, anchors, post-processing) is
  read from the flatbuffer's metadata entry :data:`METADATA_NAME` (written by
  :mod:`detect.exporters.litert`); a file without it is refused with a message.

The interpreter comes from ``ai-edge-litert`` (the ``[lite]`` extra, LiteRT's
own package) when installed, else TensorFlow's deprecated ``tf.lite``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

#: Name of the flatbuffer metadata entry holding the model config (JSON).
METADATA_NAME = "detect"
FORMAT = "detect-tflite-1"


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


class Normalization:
    """The model's input normalisation (``RetinaNet.normalize``), computed here by a numba
    kernel: ``(x[..., order] - mean) / std`` in float32, as the Keras layer does, so the
    values are the same. Numba, because numpy's broadcast over a last axis of 3 bands ran
    at a seventh of the speed (6 ms for four 512 px tiles, more than the decoding)."""

    def __init__(self, config):
        from detect.models.backbones import normalization_affine
        from detect.models.litert_kernels import normalize_into

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


def normalized_padded(normalize: Normalization, batch: np.ndarray, multiple: int) -> np.ndarray:
    """``batch [B, h, w, C]`` raw pixels -> normalised, then zero-padded (bottom/right)
    to a multiple of ``multiple``: what ``RetinaNet.call`` feeds its network."""
    b, h, w, c = batch.shape
    out = np.empty((b, _padded(h, multiple), _padded(w, multiple), c), np.float32)
    for i in range(b):
        normalize.into(batch[i], out[i])
    return out


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
    """A ``.tflite`` detector written by :func:`detect.exporters.litert.export_tflite`, usable wherever a RetinaNet is
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
        self.normalize = Normalization(self.model_config)
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
        return self.model_config.labels

    def set_postprocess(self, **changes) -> None:
        """As ``RetinaNet.set_postprocess``."""
        from dataclasses import replace

        self.model_config = replace(self.model_config,
                                    postprocess=self.model_config.postprocess.changed(**changes))

    def digest(self, postprocess: bool = True) -> str:
        """SHA-256 of the file and the config (see :class:`~detect.models.detector.Detector`)."""
        h = hashlib.sha256(self.path.read_bytes())
        h.update(self.model_config.canonical_bytes(postprocess))
        return h.hexdigest()

    def _postprocess(self):
        """Decode + NMS as a traced function of the current post-processing settings
        (rebuilt when ``set_postprocess`` or ``detect.api.postprocessing`` changed them)."""
        config = self.model_config
        if self._post is None or self._post[0] is not config.postprocess:
            import tensorflow as tf

            from detect.models.postprocess import postprocess

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
