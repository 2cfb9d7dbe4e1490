"""Typed, frozen configuration: the single description a model is built from.

A :class:`ModelConfig` travels inside every saved model (``model.keras``), so
no command needs the anchor or class settings passed again. Configs load from
and dump to plain dicts / YAML, and ``with_overrides`` applies dotted
``key=value`` strings (``anchors.anchor_size=2``) with type checking.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from detect.config import backbones as backbone_registry
from detect.config.plain import (  # noqa: F401  load_yaml, dump_yaml: part of this module's API
    _check,
    _dotted_keys,
    _from_plain,
    _set_dotted,
    _split_assignment,
    _to_plain,
    dump_yaml,
    load_yaml,
)
from detect.config.sections import (  # noqa: F401  the model's sections, re-exported
    PRE_NMS_PER_DETECTION,
    AnchorConfig,
    InputConfig,
    LossConfig,
    MatcherConfig,
    PostprocessConfig,
)

#: Backbone names: the registry's (detect.config.backbones, which imports no TensorFlow).
#: ``"source"``: the network comes from ``backbone_weights`` (see :func:`is_model_source`).
BACKBONES = backbone_registry.NAMES
# "lite": (x - 127) / 128, TensorFlow's EfficientNet-Lite preprocessing.
NORMALIZATIONS = ("auto", "caffe", "tf", "torch", "lite", "unit", "raw", "custom", "bands")


def is_model_source(weights: str | None) -> bool:
    """True when ``backbone_weights`` names a model that brings its own network:
    ``keras_hub:PRESET``, a keras-hub preset folder (``config.json`` + ``metadata.json``),
    a ``.keras`` file or a SavedModel folder (``saved_model.pb``). The ``keras_hub:``
    prefix and the ``.keras`` suffix decide by name alone; a folder is looked at.

    A folder that is neither (no such folder here) is not a source: a saved
    model's config is checked where it is loaded, where its folder may not exist."""
    if not weights or weights in ("none", "imagenet"):
        return False
    if weights.startswith("keras_hub:") or weights.endswith(".keras"):
        return True
    p = Path(weights)
    return p.is_dir() and ((p / "saved_model.pb").is_file() or (p / "config.json").is_file())


class _Section:
    """dict / YAML round trip and dotted overrides for a config dataclass."""

    def to_dict(self) -> dict:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: dict):
        return _from_plain(cls, data, "")

    def with_overrides(self, assignments):
        """Apply ``["a.b=value", ...]`` or ``{"a.b": value}``; values are YAML-parsed."""
        data = self.to_dict()
        items = assignments.items() if isinstance(assignments, dict) else map(_split_assignment, assignments)
        for key, value in items:
            _set_dotted(data, key, value)
        return type(self).from_dict(data)


@dataclass(frozen=True)
class ModelConfig(_Section):
    """Everything needed to rebuild a RetinaNet and use it."""

    num_classes: int = 80  # excludes background
    class_names: tuple[str, ...] = ()
    backbone: str = "resnet50"
    # "imagenet", "none", a Keras weights file, or a model that brings its own
    # network (backbone = "source"): "keras_hub:PRESET", a keras-hub preset
    # folder, a .keras feature extractor or a SavedModel folder (see
    # detect.models.backbone_sources and the README's table of backbone sources).
    backbone_weights: str = "none"
    # Layers (or, for a SavedModel, output names) of a source network giving
    # C3, C4, C5, or C2..C5; () = the source's own pyramid outputs / outputs.
    backbone_layers: tuple[str, ...] = ()
    backbone_width: int = 64  # base channels of resnet18/34 (narrow models for tests)
    mobilenet_alpha: float = 1.0
    # Input bands: 3 = RGB; another count (RGB+NIR = 4, SAR/pan = 1, ...) makes
    # the first convolution take that many channels (see detect.models.backbones.inflate_kernel).
    input_bands: int = 3
    bands: tuple[int, ...] = ()  # 1-based bands read from the files, in order; () = the default rule
    # How images are normalised inside the model: "auto" (the backbone's own
    # rule; per-band statistics for an input_bands != 3 model), "caffe",
    # "tf", "torch", "unit" (x / 255), "raw", "custom" (input_mean/std, 3
    # values in 0..255 units) or "bands" (band_mean/band_std).
    input_normalization: str = "auto"
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()
    # Per-band mean / std (0..255 units) of the training data, computed by
    # detect train for an input_bands != 3 model and stored in the model.
    band_mean: tuple[float, ...] = ()
    band_std: tuple[float, ...] = ()
    freeze_batchnorm: bool | None = None  # None: frozen iff pretrained weights are used
    freeze_stages: int = 0  # 0 = none, 1 = stem, 2..5 = stem and stages conv2..conv5
    # Normalisation layers. "auto": frozen batch norm with pretrained weights,
    # GroupNorm (backbone and heads) from random initialisation, where batch
    # statistics of 2-8 images are unreliable and frozen initial statistics
    # are no normalisation at all. See the README's "Training from scratch".
    backbone_norm: str = "auto"  # "auto", "batch" or "group"
    zero_init_residual: bool = True  # last norm of each residual branch starts at gamma 0
    fpn_channels: int = 256
    # Images are padded (bottom / right) to a multiple of this before the network;
    # 0 = the largest anchor stride, 2 ** anchors.max_level. Imported models use
    # their source's rule (32: P6 / P7 then see the same odd sizes they saw there).
    pad_multiple: int = 0
    p6_from: str = "p5"  # "p5" (torchvision, 34.0M params) or "c5" (paper / detectron2)
    head_convs: int = 4
    # "auto" (= group when the backbone uses GroupNorm), "none", "group" (GroupNorm: statistics of the
    # whole feature map, so of the tile's content) or "layer" (LayerNorm over the channels of each
    # position: a detection does not depend on what else its tile holds)
    head_norm: str = "auto"
    prior_probability: float = 0.01
    box_variances: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    input: InputConfig = field(default_factory=InputConfig)

    def __post_init__(self):
        if self.backbone != "source" and is_model_source(self.backbone_weights):
            # the source brings its own network; training says so when it builds it
            object.__setattr__(self, "backbone", "source")
        self.validate()

    @property
    def labels(self) -> tuple[str, ...]:
        """One name per class: ``class_names``, or the class indices as text when it has none."""
        return self.class_names or tuple(str(i) for i in range(self.num_classes))

    @property
    def pretrained(self) -> bool:
        return self.backbone_weights not in ("none", "", None)

    @property
    def normalization(self) -> str:
        """The resolved ``input_normalization`` (never "auto")."""
        if self.input_normalization != "auto":
            return self.input_normalization
        if self.input_bands != 3:
            return "bands"
        if self.backbone == "source":
            return "unit"  # TF-Hub's convention for image models: RGB in [0, 1]
        return backbone_registry.spec(self.backbone).normalization

    @property
    def resolved_backbone_norm(self) -> str:
        """"batch" or "group" (see ``backbone_norm``)."""
        if self.backbone_norm != "auto":
            return self.backbone_norm
        return "batch" if self.pretrained else "group"

    @property
    def resolved_head_norm(self) -> str:
        if self.head_norm != "auto":
            return self.head_norm
        return "group" if self.resolved_backbone_norm == "group" else "none"

    @property
    def batchnorm_frozen(self) -> bool:
        return self.pretrained if self.freeze_batchnorm is None else bool(self.freeze_batchnorm)

    def canonical_bytes(self, postprocess: bool = True) -> bytes:
        """This config as canonical JSON, for a detector's ``digest``; ``postprocess=False`` puts
        the default post-processing in place of its own."""
        import json

        config = self if postprocess else dataclasses.replace(self, postprocess=PostprocessConfig())
        return json.dumps(config.to_dict(), sort_keys=True, default=str).encode()

    def validate(self) -> None:
        _check(self.num_classes >= 1, "num_classes", f"must be >= 1, got {self.num_classes}")
        _check(not self.class_names or len(self.class_names) == self.num_classes, "class_names",
               f"has {len(self.class_names)} names for num_classes={self.num_classes}")
        _check(self.backbone in (*BACKBONES, "source"), "backbone",
               f"must be one of {BACKBONES} or 'source', got {self.backbone!r}")
        _check(self.backbone == "source" or self.backbone_weights != "imagenet"
               or backbone_registry.spec(self.backbone).imagenet, "backbone_weights",
               f"no ImageNet weights for {self.backbone}; those with ImageNet weights: "
               f"{', '.join(n for n, s in backbone_registry.SPECS.items() if s.imagenet)} "
               f"(or a weights file, or none)")
        _check(self.backbone != "source" or self.backbone_weights not in ("none", "imagenet", ""),
               "backbone_weights", "backbone 'source' needs backbone_weights naming the source model")
        _check(1 <= self.input_bands <= 64, "input_bands", f"must be in 1..64, got {self.input_bands}")
        _check(not self.bands or (len(self.bands) == self.input_bands and min(self.bands) >= 1), "bands",
               f"needs input_bands={self.input_bands} band numbers >= 1, got {list(self.bands)}")
        _check(self.input_normalization in NORMALIZATIONS, "input_normalization",
               f"must be one of {NORMALIZATIONS}, got {self.input_normalization!r}")
        _check(self.normalization != "custom" or (len(self.input_mean) == len(self.input_std) == 3
                                                   and min(self.input_std) > 0),
               "input_mean/input_std", "'custom' normalisation needs 3 means and 3 positive stds")
        _check(not self.band_mean or (len(self.band_mean) == len(self.band_std) == self.input_bands
                                      and min(self.band_std) > 0),
               "band_mean/band_std", f"need {self.input_bands} means and positive stds, got "
               f"{list(self.band_mean)} / {list(self.band_std)}")
        _check(0 <= self.freeze_stages <= 5, "freeze_stages", f"must be in 0..5, got {self.freeze_stages}")
        _check(self.p6_from in ("p5", "c5"), "p6_from", f"must be 'p5' or 'c5', got {self.p6_from!r}")
        _check(self.head_norm in ("auto", "none", "group", "layer"), "head_norm",
               f"must be 'auto', 'none', 'group' or 'layer', got {self.head_norm!r}")
        _check(self.backbone_norm in ("auto", "batch", "group"), "backbone_norm",
               f"must be 'auto', 'batch' or 'group', got {self.backbone_norm!r}")
        _check(not (self.backbone_weights == "imagenet" and self.backbone_norm == "group"), "backbone_norm",
               "'group' cannot use imagenet weights, which come with batch norm")
        _check(0 < self.prior_probability < 1, "prior_probability", f"must be in (0, 1), got {self.prior_probability}")
        _check(len(self.box_variances) == 4 and min(self.box_variances) > 0, "box_variances",
               f"need 4 positive values, got {self.box_variances}")
        _check(self.pad_multiple >= 0, "pad_multiple", f"must be >= 0, got {self.pad_multiple}")
        _check(self.fpn_channels >= 1 and self.head_convs >= 0, "fpn_channels/head_convs", "must be positive")
        _check(not self.postprocess.class_thresholds or len(self.postprocess.class_thresholds) == self.num_classes,
               "postprocess.class_thresholds",
               f"has {len(self.postprocess.class_thresholds)} values for num_classes={self.num_classes}")
        _check(not self.input.category_ids or len(self.input.category_ids) == self.num_classes,
               "input.category_ids", f"has {len(self.input.category_ids)} ids for num_classes={self.num_classes}")
        for sub in (self.anchors, self.matcher, self.loss, self.postprocess, self.input):
            sub.validate()

    @property
    def prior_bias(self) -> float:
        """Classification bias so that sigmoid(bias) == prior_probability."""
        return -math.log((1 - self.prior_probability) / self.prior_probability)

@dataclass(frozen=True)
class DataConfig(_Section):
    """How images become training batches."""

    # "none": native pixels (aerial chips; the model's input.scale is 1);
    # "scale": native pixels resampled by data.scale (1.5 upsamples small objects);
    # "fixed": image_size x image_size; "shorter_side": paper-style.
    resize: str = "fixed"
    image_size: int = 512
    min_side: int = 800
    max_side: int = 1333
    scale: float = 1.0  # resize "scale": model pixels per image pixel
    # > 0 (px): with resize "none" or "scale" and data.scale not set, `detect train` upsamples
    # small-object data (resize "scale", at most x2: fit.MAX_UPSAMPLE) until the objects' median side
    # reaches this many pixels (detect.datasets.fit); 0: off
    target_object_side: float = 0.0
    max_boxes: int = 100  # ground truth per image is padded to this (raised to the data's largest count unless set)
    hflip: bool = True
    vflip: bool = True  # aerial imagery has no "up"
    rot90: bool = True
    scale_jitter: tuple[float, ...] = (0.75, 1.25)  # [] or [1, 1] turns it off
    color_jitter: bool = True
    crop_size: int = 0  # > 0: train on random crop_size x crop_size windows (more, cheaper steps)

    def validate(self) -> None:
        _check(self.crop_size == 0 or self.crop_size >= 32, "data.crop_size",
               f"must be 0 (off) or >= 32 px, got {self.crop_size}")
        _check(self.resize in ("none", "scale", "fixed", "shorter_side"), "data.resize",
               f"must be 'none', 'scale', 'fixed' or 'shorter_side', got {self.resize!r}")
        _check(0 < self.scale <= 8, "data.scale", f"must be > 0 and <= 8, got {self.scale}")
        _check(self.scale == 1.0 or self.resize == "scale", "data.scale",
               f"{self.scale:g} needs data.resize: scale (got {self.resize!r})")
        _check(self.target_object_side >= 0, "data.target_object_side",
               f"must be >= 0 px (0: off), got {self.target_object_side}")
        _check(self.image_size >= 32 and 32 <= self.min_side <= self.max_side, "data.image_size/min_side/max_side",
               "need image_size >= 32 and 32 <= min_side <= max_side")
        _check(self.max_boxes >= 1, "data.max_boxes", f"must be >= 1, got {self.max_boxes}")
        _check(len(self.scale_jitter) in (0, 2) and all(v > 0 for v in self.scale_jitter),
               "data.scale_jitter", f"must be [] or [low, high] > 0, got {self.scale_jitter}")

    def __post_init__(self):
        self.validate()


@dataclass(frozen=True)
class TrainConfig(_Section):
    """Optimisation and run control."""

    epochs: int = 12
    batch_size: int = 4
    optimizer: str = "sgd"  # or "adamw"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    schedule: str = "cosine"  # "cosine", "step" or "constant"
    step_epochs: tuple[int, ...] = (8, 11)  # for "step": x0.1 at each
    clipnorm: float = 10.0  # 0 turns clipping off
    freeze_backbone_epochs: int = 0  # two-stage fine-tuning: backbone frozen this long
    finetune_lr_factor: float = 0.1  # LR multiplier once the backbone is unfrozen
    backbone_lr_multiplier: float = 1.0  # discriminative LR: backbone LR = LR x this
    ema: bool = False
    ema_momentum: float = 0.999
    seed: int = 0
    steps_per_epoch: int = 0  # 0: one pass over the data

    def validate(self) -> None:
        _check(self.epochs >= 1 and self.batch_size >= 1, "train.epochs/batch_size", "must be >= 1")
        _check(self.optimizer in ("sgd", "adamw"), "train.optimizer",
               f"must be 'sgd' or 'adamw', got {self.optimizer!r}")
        _check(self.schedule in ("cosine", "step", "constant"), "train.schedule",
               f"must be cosine, step or constant, got {self.schedule!r}")
        _check(self.learning_rate > 0, "train.learning_rate", f"must be > 0, got {self.learning_rate}")
        _check(self.backbone_lr_multiplier >= 0, "train.backbone_lr_multiplier",
               f"must be >= 0, got {self.backbone_lr_multiplier}")
        _check(0 <= self.freeze_backbone_epochs < self.epochs or self.freeze_backbone_epochs == 0,
               "train.freeze_backbone_epochs", "must be smaller than train.epochs")

    def __post_init__(self):
        self.validate()


@dataclass(frozen=True)
class DetectConfig(_Section):
    """A whole run: model, data and training (what ``--config`` files hold).

    ``explicit`` holds the dotted keys the user set (in the YAML / dict or an
    override); ``detect train`` fits the other settings that depend on the
    data (``data.max_boxes``, anchors, ``postprocess.max_detections``, the
    input rule) to the training set, and never touches an explicit one.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    explicit: frozenset = field(default=frozenset(), compare=False, repr=False,
                                metadata={"plain": False})

    @classmethod
    def from_dict(cls, data: dict):
        cfg = _from_plain(cls, data, "")
        return dataclasses.replace(cfg, explicit=frozenset(_dotted_keys(data)))

    def with_overrides(self, assignments):
        out = super().with_overrides(assignments)
        keys = assignments.keys() if isinstance(assignments, dict) else (
            _split_assignment(a)[0] for a in assignments)
        return dataclasses.replace(out, explicit=self.explicit | frozenset(keys))

    def is_explicit(self, key: str) -> bool:
        """True when ``key`` (dotted) or a section containing it was set by the user."""
        parts = key.split(".")
        return any(".".join(parts[:i]) in self.explicit for i in range(1, len(parts) + 1))
