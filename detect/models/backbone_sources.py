"""Backbones that come from a model file or preset instead of being built here.

``model.backbone_weights`` may name a model that brings its own network
(``model.backbone`` is then ``"source"``):

- ``keras_hub:PRESET`` (e.g. ``keras_hub:resnet_50_imagenet``; downloaded by
  keras-hub into its cache) or a local keras-hub preset folder (written by
  ``backbone.save_to_preset(DIR)``): ``keras_hub.models.Backbone.from_preset``.
  The ``[hub]`` extra; imported only here. Taps default to the backbone's
  ``pyramid_outputs`` (P2..P5); the input normalisation is the preset's image
  converter (``x * scale + offset``), stored in the model as mean / std.
- a ``.keras`` feature extractor: a Keras model whose outputs are C3, C4, C5
  (or C2..C5), or any model with ``model.backbone_layers`` naming the layers.
- a SavedModel folder (TF-Hub style): a callable or ``serving_default``
  signature mapping images ``[B, H, W, 3]`` to feature maps; outputs picked
  by name with ``model.backbone_layers``. Its graph is opaque to Keras, so it
  runs frozen (:class:`SavedModelFeatures`) and travels inside the detector's
  ``.keras`` file as an asset.

Keras sources become a plain functional model of their layers (no keras-hub
class), serialised into the detector's config (``RetinaNet.get_config()``'s
``backbone_graph``), so a saved detector loads without the source file (and
without keras-hub when the source's layers are Keras' own).
Every source's taps are checked to have strides 8, 16, 32 (or 4, 8, 16, 32).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from detect.config import ModelConfig

#: Side of the probe image the taps' strides are measured on.
_PROBE = 64


def _import_keras_hub():
    try:
        import keras_hub
    except ImportError as err:
        raise ImportError("backbone_weights names a keras-hub preset: install the extra with "
                          "pip install 'detect[hub]' (keras-hub)") from err
    return keras_hub


def _preset(weights: str) -> str | None:
    """The keras-hub preset handle named by ``weights``, or None."""
    if weights.startswith("keras_hub:"):
        return weights.split(":", 1)[1]
    p = Path(weights)
    if p.is_dir() and (p / "config.json").is_file() and (p / "metadata.json").is_file():
        return str(p)
    return None


def _check_strides(extractor, where: str) -> None:
    """Refuse taps whose strides (measured on a probe image) are not C3..C5 or C2..C5."""
    outputs = extractor(np.zeros((1, _PROBE, _PROBE, 3), np.float32))
    strides = [_PROBE // int(o.shape[1]) for o in outputs]
    if strides not in ([8, 16, 32], [4, 8, 16, 32]):
        raise ValueError(f"{where}: the backbone's taps have strides {strides}; detect needs C3, C4, C5 "
                         f"(strides 8, 16, 32) or C2..C5 (4, 8, 16, 32): pick them with model.backbone_layers")


def _taps(model: keras.Model, names: tuple[str, ...], where: str) -> list:
    if names:
        known = {layer.name for layer in model.layers}
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"{where}: no layer named {missing} (model.backbone_layers); "
                             f"it has e.g. {[layer.name for layer in model.layers][-8:]}")
        return [model.get_layer(n).output for n in names]
    pyramid = getattr(model, "pyramid_outputs", None)
    if pyramid:  # keras-hub FeaturePyramidBackbone: {"P2": ..., "P5": ...}
        return [pyramid[k] for k in sorted(pyramid, key=lambda k: int(k[1:])) if 2 <= int(k[1:]) <= 5]
    return list(model.outputs)


def load_keras_source(config: ModelConfig) -> tuple[keras.Model, dict]:
    """The source's feature extractor ``images [B, H, W, 3] -> [C2?, C3, C4, C5]`` as a plain
    functional model of its layers, and the ModelConfig fields of the input
    normalisation its weights expect (``{}``: the default rule, TF-Hub's [0, 1])."""
    weights = config.backbone_weights
    preset = _preset(weights)
    if preset is not None:
        hub = _import_keras_hub()
        try:
            source = hub.models.Backbone.from_preset(preset)
        except Exception as err:  # network, missing files, unknown preset: several types
            raise RuntimeError(f"could not load keras-hub preset {preset!r} ({type(err).__name__}: {err}); "
                               f"offline, save it once with Backbone.from_preset(...).save_to_preset(DIR) "
                               f"where the network is reachable and pass DIR") from err
        # a RetinaNet preset's backbone is the encoder + FPN: its encoder is the feature extractor
        source = getattr(source, "image_encoder", source)
        source_norm = _preset_normalization(hub, preset)
    elif weights.endswith(".keras"):
        from detect.util.files import check_model_file

        source = keras.saving.load_model(check_model_file(weights), compile=False)
        source_norm = {}
    else:
        raise ValueError(f"backbone_weights {weights!r} is not a keras-hub preset or a .keras file")
    taps = _taps(source, config.backbone_layers, weights)
    extractor = keras.Model(source.inputs[0], taps, name="source_backbone")
    channels = int(extractor.inputs[0].shape[-1])
    if channels != 3:
        raise ValueError(f"{weights}: the source network takes {channels} input channels; detect adapts "
                         f"3-channel sources to model.input_bands")
    _check_strides(extractor, weights)
    return extractor, source_norm


def _preset_normalization(hub, preset: str) -> dict:
    try:
        converter = hub.layers.ImageConverter.from_preset(preset)
    except Exception:  # a bare backbone preset has no image converter
        converter = None
    rule = converter_normalization(converter)
    if rule is None:
        print(f"backbone {preset}: the preset has no image converter; inputs are normalised with ImageNet's "
              f"mean and std (set model.input_normalization to change)", flush=True)
        return {"input_normalization": "torch"}
    return rule


def converter_normalization(converter) -> dict | None:
    """ModelConfig fields of a keras-hub image converter's ``x * scale + offset`` (None: it has none)."""
    scale = getattr(converter, "scale", None)
    offset = getattr(converter, "offset", None)
    if converter is None or (scale is None and offset is None):
        return None
    scale = np.broadcast_to(np.asarray(1.0 if scale is None else scale, np.float64), 3)
    offset = np.broadcast_to(np.asarray(0.0 if offset is None else offset, np.float64), 3)
    # x * scale + offset == (x - mean) / std  with  std = 1 / scale, mean = -offset / scale
    return {"input_normalization": "custom",
            "input_mean": tuple(round(float(v), 6) for v in -offset / scale),
            "input_std": tuple(round(float(v), 6) for v in 1.0 / scale)}


def graph_of(extractor: keras.Model) -> dict:
    """The extractor's architecture as a serialisable dict (stored with the detector)."""
    return keras.saving.serialize_keras_object(extractor)


def rebuild(graph: dict) -> keras.Model:
    """A functional model from :func:`graph_of`'s dict (fresh weights)."""
    if "'module': 'keras_hub" in str(graph):
        _import_keras_hub()  # registers keras-hub's layer classes
    return keras.saving.deserialize_keras_object(graph)


# ---- SavedModel ------------------------------------------------------------

def _outputs(result, names: tuple[str, ...]) -> list:
    if isinstance(result, dict):
        if names:
            return [result[n] for n in names]
        # unnamed: largest feature map first
        return sorted(result.values(), key=lambda t: -int(t.shape[1]))
    return list(result)


@keras.saving.register_keras_serializable(package="detect")
class SavedModelFeatures(keras.layers.Layer):
    """A frozen SavedModel feature extractor: images ``[B, H, W, 3]`` -> feature maps.

    The SavedModel's files are written into the detector's ``.keras`` file as
    this layer's assets and restored from there, so the detector needs no
    other file. Its variables are not Keras variables: the layer does not
    train (export the source as ``.keras`` to fine-tune its backbone).
    """

    def __init__(self, path: str | None = None, outputs: tuple[str, ...] = (),
                 channels: tuple[int, ...] = (), **kwargs):
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        self.source_path, self.output_names, self.channels = path, tuple(outputs), tuple(channels)
        self._files = self._fn = None
        if path is not None and Path(path, "saved_model.pb").is_file() and not self.channels:
            self._restore(Path(path))
            self.channels = tuple(int(o.shape[-1]) for o in self._run(tf.zeros((1, _PROBE, _PROBE, 3))))

    def _restore(self, folder: Path) -> None:
        # keep a private copy: the folder may be a temporary one (a .keras file's assets)
        files = Path(tempfile.mkdtemp(prefix="detect_savedmodel_"))
        atexit.register(shutil.rmtree, files, True)
        shutil.copytree(folder, files, dirs_exist_ok=True)
        loaded = tf.saved_model.load(str(files))
        fn = loaded if callable(loaded) else loaded.signatures.get("serving_default")
        if fn is None:
            raise ValueError(f"{self.source_path}: the SavedModel is not callable and has no serving_default "
                             f"signature")
        self._files, self._loaded, self._fn = files, loaded, fn

    def _run(self, images):
        if self._fn is None:
            raise RuntimeError("SavedModelFeatures: the SavedModel was not restored (load the detector "
                               "with detect.load_model / keras.saving.load_model)")
        if isinstance(self._fn, tf.types.experimental.ConcreteFunction):
            (arg,) = self._fn.structured_input_signature[1].keys() or ("images",)
            result = self._fn(**{arg: images})
        else:
            result = self._fn(images)
        return _outputs(result, self.output_names)

    def call(self, images):
        return [tf.cast(o, self.compute_dtype) for o in self._run(tf.cast(images, tf.float32))]

    def compute_output_spec(self, images):
        b = images.shape[0]
        return [keras.KerasTensor((b, None, None, c), dtype=self.compute_dtype) for c in self.channels]

    def save_assets(self, dir_path):
        shutil.copytree(self._files, dir_path, dirs_exist_ok=True)

    def load_assets(self, dir_path):
        self._restore(Path(dir_path))

    def get_config(self):
        return {**super().get_config(), "path": self.source_path, "outputs": list(self.output_names),
                "channels": list(self.channels)}


def load_saved_model_source(config: ModelConfig) -> keras.Model:
    """A functional model ``images -> [C2?, C3, C4, C5]`` around a SavedModel folder."""
    path = config.backbone_weights
    layer = SavedModelFeatures(path, config.backbone_layers, name="saved_model_features")
    if config.input_bands != 3:
        raise ValueError(f"{path}: a SavedModel backbone takes the 3 bands it was saved with; "
                         f"model.input_bands={config.input_bands} needs a .keras or keras-hub source")
    inputs = keras.Input((None, None, 3))
    extractor = keras.Model(inputs, layer(inputs), name="source_backbone")
    _check_strides(layer, path)
    return extractor


def share_saved_models(src: keras.Model, dst: keras.Model) -> None:
    """Give ``dst``'s SavedModel backbone layers the SavedModels of ``src``'s (by layer name):
    a detector rebuilt from its config (a copy, a fine-tuned model) has none until then."""
    theirs = {layer.name: layer for layer in src._flatten_layers() if isinstance(layer, SavedModelFeatures)}
    for layer in dst._flatten_layers():
        if isinstance(layer, SavedModelFeatures) and layer.name in theirs and theirs[layer.name]._files:
            layer._restore(theirs[layer.name]._files)


def is_saved_model(weights: str) -> bool:
    return Path(weights, "saved_model.pb").is_file()
