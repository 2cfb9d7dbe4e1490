"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant of 2020) built in Keras, and its
PyTorch checkpoint mapped onto it.

Lite drops squeeze-and-excite, uses ReLU6 instead of swish and keeps the
stem (32) and head (1280) widths fixed: a mobile network that quantises
well. Inverted-residual blocks, as in the checkpoint's EfficientNet-PyTorch
layout (``_blocks.N``):

====  ======  ======  ======  =====  ======  =========================
row   blocks  kernel  stride  expand  out     detect stage (out stride)
====  ======  ======  ======  =====  ======  =========================
stem  conv    3       2       -      32      1 (2)
1     0       3       1       1      16      1 (2)
2     1-2     3       2       6      24      2 (4)   -> C2 = block 2
3     3-4     5       2       6      40      3 (8)   -> C3 = block 4
4     5-7     3       2       6      80      4 (16)
5     8-10    5       1       6      112     4 (16)  -> C4 = block 10
6     11-14   5       2       6      192     5 (32)
7     15      3       1       6      320     5 (32)  -> C5 = block 15
head  conv    1       1       -      1280    (classifier only)
====  ======  ======  ======  =====  ======  =========================

Conventions that must match the checkpoint's network exactly (a wrong one
fails the ImageNet classification test in ``tests/models/test_pretrained.py``):
TensorFlow "same" padding (stride-2 convolutions pad 0 before and 1 after on
even sizes; Keras' ``padding="same"`` is the same rule), batch-norm epsilon
1e-3, ReLU6, a residual add only where stride is 1 and the width is kept.
The checkpoint was trained on RGB normalised as ``(x - 127) / 128``
(TensorFlow's EfficientNet-Lite preprocessing), which the registry records.
"""

from __future__ import annotations

import keras
import numpy as np

from detect.config import backbones as backbone_registry

#: (repeats, kernel, stride, expand ratio, output channels) per row of the table above.
ROWS = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
        (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD = 32, 1280
BN_EPSILON = 1e-3
#: Feature taps C2, C3, C4, C5: the last block at strides 4, 8, 16, 32 (the registry's entry).
TAPS = backbone_registry.SPECS["efficientnet_lite0"].taps
#: detect's stage (1 = stem .. 5 = stride 32) of each block, by block index.
BLOCK_STAGE = (1, 2, 2, 3, 3, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5)


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, *, depthwise: bool = False,
             relu: bool = True):
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                         name=name + "_conv")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                                name=name + "_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name + "_bn")(x)
    return keras.layers.ReLU(6.0, name=name + "_relu")(x) if relu else x


def _features(inputs):
    """The feature trunk: inputs -> block 15's output, every block's output named ``blockN_out``."""
    x = _conv_bn(inputs, STEM, 3, 2, "stem")
    index = 0
    for repeats, kernel, stride, expand, out in ROWS:
        for r in range(repeats):
            p = f"block{index}"
            channels_in = int(x.shape[-1])
            y = x
            if expand != 1:
                y = _conv_bn(y, channels_in * expand, 1, 1, p + "_expand")
            y = _conv_bn(y, 0, kernel, stride if r == 0 else 1, p + "_dw", depthwise=True)
            y = _conv_bn(y, out, 1, 1, p + "_project", relu=False)
            if (stride if r == 0 else 1) == 1 and channels_in == out:
                y = keras.layers.Add(name=p + "_add")([x, y])
            x = keras.layers.Identity(name=p + "_out")(y)
            index += 1
    return x


def build_efficientnet_lite0(channels: int = 3) -> keras.Model:
    """The feature trunk ``[B, H, W, channels]`` (normalised) -> block 15 (stride 32); taps: :data:`TAPS`."""
    inputs = keras.Input((None, None, channels))
    return keras.Model(inputs, _features(inputs), name="efficientnet_lite0")


def build_backbone(config, weights, channels: int) -> keras.Model:
    """The registry's builder: the trunk (taps: :data:`TAPS`); ``weights`` None or a Keras weights
    file (ImageNet and PyTorch checkpoints are loaded by :func:`load_state_dict` through the registry)."""
    base = build_efficientnet_lite0(channels)
    if weights:
        base.load_weights(weights)
    return base


def build_efficientnet_lite0_classifier() -> keras.Model:
    """The whole ImageNet network (trunk, 1280-wide head, average pool, 1000 logits), for
    checking a conversion: images ``[B, H, W, 3]`` normalised ``(x - 127) / 128`` -> logits."""
    inputs = keras.Input((None, None, 3))
    x = _conv_bn(_features(inputs), HEAD, 1, 1, "head")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    logits = keras.layers.Dense(1000, name="predictions")(x)
    return keras.Model(inputs, logits, name="efficientnet_lite0_classifier")


def stage_of(layer_name: str) -> int | None:
    """detect's stage of a layer of this network (see the table in the module docstring)."""
    if layer_name.startswith("stem_"):
        return 1
    if layer_name.startswith("block"):
        digits = layer_name[5:].split("_", 1)[0]
        if digits.isdigit() and int(digits) < len(BLOCK_STAGE):
            return BLOCK_STAGE[int(digits)]
    if layer_name.startswith("head_"):
        return 5
    return None


# ---- the PyTorch checkpoint ------------------------------------------------

def torch_names(model: keras.Model) -> dict[str, tuple[str, str]]:
    """``{keras layer name: (checkpoint prefix, kind)}`` for every layer with weights;
    kind is "conv", "depthwise", "bn" or "dense". The checkpoint's names are
    EfficientNet-PyTorch's (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``,
    ``_blocks.N._bn0``, ``._depthwise_conv``, ``._bn1``, ``._project_conv``,
    ``._bn2``, ``_conv_head``, ``_bn1``, ``_fc``)."""
    table = {"stem_conv": ("_conv_stem", "conv"), "stem_bn": ("_bn0", "bn"),
             "head_conv": ("_conv_head", "conv"), "head_bn": ("_bn1", "bn"),
             "predictions": ("_fc", "dense")}
    parts = {"expand_conv": ("_expand_conv", "conv"), "expand_bn": ("_bn0", "bn"),
             "dw_conv": ("_depthwise_conv", "depthwise"), "dw_bn": ("_bn1", "bn"),
             "project_conv": ("_project_conv", "conv"), "project_bn": ("_bn2", "bn")}
    out = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name in table:
            out[layer.name] = table[layer.name]
            continue
        block, _, part = layer.name.partition("_")
        if block.startswith("block") and part in parts:
            prefix, kind = parts[part]
            out[layer.name] = (f"_blocks.{block[5:]}.{prefix}", kind)
    return out


#: Checkpoint suffixes of each kind, in the order of the Keras layer's weights.
_SUFFIXES = {"conv": ("weight",), "depthwise": ("weight",), "dense": ("weight", "bias"),
             "bn": ("weight", "bias", "running_mean", "running_var")}
#: Entries a checkpoint may carry that no Keras weight takes (bookkeeping, not parameters).
_IGNORED_SUFFIXES = (".num_batches_tracked",)


def keras_value(kind: str, suffix: str, value: np.ndarray) -> np.ndarray:
    """A checkpoint tensor in Keras' layout: convolutions ``[out, in, kh, kw] -> [kh, kw, in, out]``,
    depthwise ``[C, 1, kh, kw] -> [kh, kw, C, 1]``, dense ``[out, in] -> [in, out]``."""
    if suffix != "weight" or kind == "bn":
        return value
    if kind == "conv":
        return value.transpose(2, 3, 1, 0)
    if kind == "depthwise":
        return value.transpose(2, 3, 0, 1)
    return value.T  # dense


def weights_from_state_dict(model: keras.Model, state: dict[str, np.ndarray], where: str,
                            *, optional_prefixes: tuple[str, ...] = ("_conv_head", "_bn1", "_fc")
                            ) -> dict[str, list[np.ndarray]]:
    """``{layer name: [values in Keras order]}`` for every weighted layer of ``model``.

    Raises ValueError naming the first checkpoint key that maps to no layer
    (another architecture), the first layer whose key is missing, or a shape
    that differs. Keys under ``optional_prefixes`` (the classifier head, which
    a feature extractor does not have) may go unused.
    """
    names = torch_names(model)
    unnamed = [layer.name for layer in model.layers if layer.weights and layer.name not in names]
    if unnamed:
        raise ValueError(f"{where}: layer {unnamed[0]} of {model.name} has no checkpoint name")
    wanted = {f"{prefix}.{s}": (layer, i) for layer, (prefix, kind) in names.items()
              for i, s in enumerate(_SUFFIXES[kind])}
    for key in state:
        if key in wanted or key.endswith(_IGNORED_SUFFIXES) or key.startswith(optional_prefixes):
            continue
        raise ValueError(f"{where}: checkpoint key {key!r} maps to no layer of {model.name}: the file "
                         f"holds another architecture (detect reads EfficientNet-PyTorch's layout here)")
    out: dict[str, list[np.ndarray]] = {}
    for layer in model.layers:
        if layer.name not in names:
            continue
        prefix, kind = names[layer.name]
        values = []
        for suffix, w in zip(_SUFFIXES[kind], layer.weights):
            key = f"{prefix}.{suffix}"
            if key not in state:
                raise ValueError(f"{where}: checkpoint has no {key!r} (for layer {layer.name} of "
                                 f"{model.name}): it holds another architecture or a part of one")
            v = keras_value(kind, suffix, np.asarray(state[key], np.float32))
            if v.shape != tuple(w.shape):
                raise ValueError(f"{where}: {key!r} has shape {list(state[key].shape)}, layer {layer.name} "
                                 f"needs {list(w.shape)} in Keras' layout: another width or variant")
            values.append(v)
        out[layer.name] = values
    return out


def load_state_dict(model: keras.Model, state: dict[str, np.ndarray], where: str, **kwargs) -> None:
    """Set ``model``'s weights from a checkpoint's state dict (see :func:`weights_from_state_dict`);
    nothing is set unless every layer maps."""
    values = weights_from_state_dict(model, state, where, **kwargs)
    for name, v in values.items():
        model.get_layer(name).set_weights(v)
