"""Bottom-up pathways returning C2, C3, C4, C5 (strides 4, 8, 16, 32), and freezing.

- ResNet-50/101/152 and MobileNetV2 come from ``keras.applications`` (which
  downloads and caches ImageNet weights); ResNet-18/34 are built here (basic
  blocks, no ImageNet weights in keras.applications, so a local file or
  random initialisation).
- Layer names follow keras.applications (``conv1_*``, ``conv2_block1_*`` ...)
  so stage freezing is one rule for every ResNet.
- Each backbone expects its own input normalisation; :func:`normalization_for`
  names it and :class:`ImageNormalization` applies it inside the model, so
  users always pass RGB in [0, 255].
"""

from __future__ import annotations

import os
import re

import keras
import tensorflow as tf

from detect.config import ModelConfig

_RESNET_APPS = {
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
    "resnet152": keras.applications.ResNet152,
}
_BASIC_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
#: Every backbone built here, by name. ``config.BACKBONES`` lists the same names
#: so a config validates without TensorFlow; a test keeps the two equal.
BUILT_HERE = (*_BASIC_BLOCKS, *_RESNET_APPS, "mobilenetv2")
# MobileNetV2 feature taps at strides 4, 8, 16, 32 (inputs of the stride-2 blocks).
_MOBILENET_TAPS = ("block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu")


def normalization_for(backbone: str) -> str:
    """The input normalisation a backbone's weights were trained with."""
    if backbone in _RESNET_APPS:
        return "caffe"  # BGR, ImageNet mean subtracted, no scaling
    if backbone == "mobilenetv2":
        return "tf"  # [-1, 1]
    return "torch"  # RGB, (x / 255 - mean) / std


@keras.saving.register_keras_serializable(package="detect")
class ImageNormalization(keras.layers.Layer):
    """RGB [0, 255] -> what the backbone expects. ``mode``: caffe | tf | torch."""

    _MEAN_RGB = (0.485, 0.456, 0.406)
    _STD_RGB = (0.229, 0.224, 0.225)
    _CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "tf", "torch"):
            raise ValueError(f"unknown normalisation mode {mode!r}")
        self.mode = mode

    def call(self, images):
        x = tf.cast(images, self.compute_dtype)
        if self.mode == "caffe":
            return x[..., ::-1] - tf.constant(self._CAFFE_MEAN_BGR, x.dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        mean = tf.constant([m * 255 for m in self._MEAN_RGB], x.dtype)
        std = tf.constant([s * 255 for s in self._STD_RGB], x.dtype)
        return (x - mean) / std

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def _weights_arg(weights: str, load: bool):
    if not load or weights in ("none", "", None):
        return None
    if weights == "imagenet":
        return "imagenet"
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"backbone weights file {weights!r} does not exist")
    return weights


def _offline_hint(backbone: str, err: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not download ImageNet weights for {backbone} ({type(err).__name__}: {err}). "
        f"If this machine is offline, either copy the keras.applications weights file "
        f"(…_weights_tf_dim_ordering_tf_kernels_notop.h5) here and pass its path as "
        f"backbone_weights, or use backbone_weights=none for random initialisation."
    )


def _keras_app(builder, weights, backbone, **kwargs) -> keras.Model:
    try:
        return builder(include_top=False, weights=weights, input_shape=(None, None, 3), **kwargs)
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


def _basic_resnet(depths, width: int, name: str) -> keras.Model:
    """ResNet-18/34 (v1, basic blocks); channel widths width * (1, 2, 4, 8)."""
    inputs = keras.Input((None, None, 3))
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


def build_backbone(config: ModelConfig, *, load_weights: bool = True) -> keras.Model:
    """A model mapping normalised images ``[B, H, W, 3]`` to ``[C2, C3, C4, C5]``.

    C2 (stride 4) feeds the FPN only when ``anchors.min_level`` is 2 (small
    objects); it is computed on the way to C3 anyway, so returning it is free.

    ``load_weights=False`` skips pretrained weights (used when restoring a
    saved detector, whose file already holds every weight).
    """
    name = config.backbone
    weights = _weights_arg(config.backbone_weights, load_weights)
    if name in _RESNET_APPS:
        base = _keras_app(_RESNET_APPS[name], weights, name)
        taps = [_last_layer(base, rf"conv{s}_block\d+_out") for s in (2, 3, 4, 5)]
    elif name == "mobilenetv2":
        if weights == "imagenet" and config.mobilenet_alpha not in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4):
            raise ValueError(f"no ImageNet MobileNetV2 weights for alpha={config.mobilenet_alpha}")
        base = _keras_app(keras.applications.MobileNetV2, weights, name, alpha=config.mobilenet_alpha)
        taps = list(_MOBILENET_TAPS)
    else:
        if weights == "imagenet":
            raise ValueError(
                f"keras.applications has no ImageNet weights for {name}; pass a local weights "
                f"file as backbone_weights, use backbone_weights=none, or pick resnet50/101/152 "
                f"or mobilenetv2 for ImageNet weights"
            )
        base = _basic_resnet(_BASIC_BLOCKS[name], config.backbone_width, name)
        if weights:
            base.load_weights(weights)
        taps = [_last_layer(base, rf"conv{s}_block\d+_out") for s in (2, 3, 4, 5)]
    if config.resolved_backbone_norm == "group" or config.zero_init_residual:
        base = _renormalize(base, group=config.resolved_backbone_norm == "group",
                            zero_init=config.zero_init_residual and not weights)
    outputs = [base.get_layer(t).output for t in taps]
    return keras.Model(base.inputs, outputs, name=f"{name}_backbone")


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


def stage_of(layer_name: str) -> int | None:
    """Backbone stage a layer belongs to: 1 = stem, 2..5 = conv2..conv5."""
    m = re.match(r"conv(\d)_", layer_name)
    if m:
        return int(m.group(1))
    if layer_name.startswith("pool1") or layer_name.startswith(("Conv1", "bn_Conv1", "expanded_conv")):
        return 1
    m = re.match(r"block_(\d+)_", layer_name)
    if m:  # MobileNetV2 blocks by output stride
        b = int(m.group(1))
        return 2 if b <= 2 else 3 if b <= 5 else 4 if b <= 12 else 5
    if layer_name in ("Conv_1", "Conv_1_bn", "out_relu"):
        return 5
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
