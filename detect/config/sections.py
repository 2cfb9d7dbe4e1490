"""The sections of a model's config that need no other: anchors, matcher, loss,
post-processing and the input rule (re-exported by :mod:`detect.config`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from detect.config.plain import _check

ANCHOR_CONVENTIONS = ("detect", "keras_hub")
#: The largest tile side accepted anywhere: a batch of 4 tiles of 4096 px is about 800 MB of
#: float32 input before the network's own activations (models fit their tile at 512-2048).
MAX_TILE = 4096


def tile_rule_problems(tile: int | None = None, overlap: float | None = None) -> list[tuple[str, str]]:
    """``[(field, "must be ..., got X"), ...]`` for a tile side and overlap (None: not checked).

    The one rule for every place that takes a tile or an overlap (the model's input rule,
    ``predict`` / ``evaluate`` options, ``tile_windows``, ``detect slice``); each caller
    words the field its own way (``input.tile``, ``--tile``, ``tile``)."""
    out = []
    if tile is not None and tile < 32:
        out.append(("tile", f"must be at least 32 pixels, got {tile}"))
    elif tile is not None and tile > MAX_TILE:
        out.append(("tile", f"must be at most {MAX_TILE} pixels, got {tile} (memory grows with its square)"))
    if overlap is not None and not 0 <= overlap < 1:
        out.append(("overlap", f"must be in [0, 1), got {overlap}"))
    return out


@dataclass(frozen=True)
class AnchorConfig:
    """Anchor layout; see :mod:`detect.ops.anchors` for the conventions."""

    min_level: int = 3
    max_level: int = 7
    anchor_size: float = 4.0  # base size = anchor_size * stride
    num_scales: int = 3
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # height / width
    # "detect": centres at (i + 0.5) * stride, exact sizes. "keras_hub": keras-hub's
    # AnchorGenerator (imported models): centres at i * (size // cells), sizes
    # truncated to integers and half-sides rounded. See detect.ops.anchors.
    convention: str = "detect"
    clip: bool = False  # clip anchors to the (padded) input, as keras-cv's RetinaNet does

    def validate(self) -> None:
        _check(self.convention in ANCHOR_CONVENTIONS, "anchors.convention",
               f"must be one of {ANCHOR_CONVENTIONS}, got {self.convention!r}")
        # The backbones provide C2..C5 and the FPN builds P2 (small objects) up to P7.
        _check(2 <= self.min_level <= self.max_level <= 7, "anchors.min_level/max_level",
               f"need 2 <= min_level <= max_level <= 7, got {self.min_level}, {self.max_level}")
        _check(self.anchor_size > 0, "anchors.anchor_size", f"must be > 0, got {self.anchor_size}")
        _check(self.num_scales >= 1, "anchors.num_scales", f"must be >= 1, got {self.num_scales}")
        _check(len(self.aspect_ratios) > 0 and min(self.aspect_ratios) > 0,
               "anchors.aspect_ratios", f"must be positive, got {self.aspect_ratios}")


@dataclass(frozen=True)
class MatcherConfig:
    positive_iou: float = 0.5
    negative_iou: float = 0.4
    allow_low_quality_matches: bool = True

    def validate(self) -> None:
        _check(0 < self.negative_iou <= self.positive_iou <= 1, "matcher",
               f"need 0 < negative_iou <= positive_iou <= 1, got {self.negative_iou}, {self.positive_iou}")


@dataclass(frozen=True)
class LossConfig:
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_loss: str = "smooth_l1"  # or "giou"
    smooth_l1_beta: float = 0.1
    box_loss_weight: float = 1.0

    def validate(self) -> None:
        _check(self.box_loss in ("smooth_l1", "giou"), "loss.box_loss",
               f"must be 'smooth_l1' or 'giou', got {self.box_loss!r}")
        _check(0 <= self.focal_alpha <= 1, "loss.focal_alpha", f"must be in [0, 1], got {self.focal_alpha}")


#: ``pre_nms_top_k`` is raised to at least this many times ``max_detections`` (by the data
#: fit and by ``--max-detections``): on dense scenes of small objects every object has many
#: overlapping candidates above the score threshold (measured: over 8,000 per 512 px tile
#: with ~120 objects on P2-P4), and a top-k that cuts them loses objects (AP50 0.79 -> 0.82).
PRE_NMS_PER_DETECTION = 12


@dataclass(frozen=True)
class PostprocessConfig:
    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    max_detections: int = 100
    pre_nms_top_k: int = 1000
    # Class-agnostic NMS: each box keeps its best class only (max over classes) and
    # suppresses boxes of any class (keras-hub's and keras-cv's decoders; on aerial
    # scenes it stops one object from getting two labels). Default: per class.
    agnostic: bool = False
    # Clip decoded boxes to the input before NMS (detections are always clipped to
    # the image afterwards); imported keras-hub / keras-cv models run NMS unclipped.
    clip_boxes: bool = True
    # keras-hub's decoder (a padded NMS) reads a box none of whose coordinates is above 0 as
    # padding: never kept, suppresses nothing. Imported keras-hub models keep that rule so
    # they reproduce their source detection for detection; detect's own models do not.
    drop_nonpositive: bool = False
    # Box voting: 0 (off), or an IoU in (0, 1]: each kept box becomes the score-weighted mean
    # of the candidates of its class overlapping it at least that much (the boxes it
    # suppressed, mostly). Only the boxes change; which detections, scores and labels do not.
    vote_iou: float = 0.0
    # A calibrated operating point: one minimum score per class, applied after NMS to what
    # the model outputs (maps, CSV, pictures, exports); () = none. Set from labelled data
    # (training's validation set, or `detect evaluate --calibrate`): each class's best-F1
    # threshold. `calibration` says which data. Evaluation ignores them (AP needs every
    # detection); an explicit score threshold (--score-threshold) replaces them.
    class_thresholds: tuple[float, ...] = ()
    calibration: str = ""

    def changed(self, **changes) -> "PostprocessConfig":
        """A validated copy with ``changes`` (``None`` keeps a value); ``pre_nms_top_k``
        grows with ``max_detections`` (see :data:`PRE_NMS_PER_DETECTION`)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "max_detections" in changes and "pre_nms_top_k" not in changes:
            changes["pre_nms_top_k"] = max(self.pre_nms_top_k,
                                           PRE_NMS_PER_DETECTION * int(changes["max_detections"]))
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        _check(0 <= self.iou_threshold <= 1, "postprocess.iou_threshold",
               f"must be in [0, 1], got {self.iou_threshold}")
        _check(0 <= self.vote_iou <= 1, "postprocess.vote_iou",
               f"must be 0 (no box voting) or an IoU in (0, 1], got {self.vote_iou}")
        _check(0 <= self.score_threshold < 1, "postprocess.score_threshold",
               f"must be in [0, 1), got {self.score_threshold}")
        _check(self.max_detections >= 1 and self.pre_nms_top_k >= 1, "postprocess",
               "max_detections and pre_nms_top_k must be >= 1")
        _check(all(0 <= t <= 1 for t in self.class_thresholds), "postprocess.class_thresholds",
               f"must be in [0, 1], got {self.class_thresholds}")

    def uncalibrated(self) -> "PostprocessConfig":
        """The same settings without the calibrated per-class thresholds: every detection above
        ``score_threshold`` (what evaluation and training's validation need)."""
        if not self.class_thresholds and not self.calibration:
            return self
        return dataclasses.replace(self, class_thresholds=(), calibration="")


@dataclass(frozen=True)
class InputConfig:
    """The input rule the model was trained with, applied wherever it runs.

    Imagery of any size is resampled by ``scale`` (model pixels per source
    pixel) and cut into ``tile`` x ``tile`` windows overlapping by
    ``overlap`` (a fraction of the tile); see :mod:`detect.inference.predictor`.
    ``gsd``: metres per *model* pixel when the training data told it (GeoTIFF
    transforms or ``--gsd``); a GeoTIFF of another pixel size is resampled to it.
    """

    scale: float = 1.0
    tile: int = 512
    overlap: float = 0.2
    gsd: float | None = None
    category_ids: tuple[int, ...] = ()  # the training set's COCO id of each class

    def validate(self) -> None:
        _check(self.scale > 0, "input.scale", f"must be > 0, got {self.scale}")
        for name, problem in tile_rule_problems(self.tile, self.overlap):
            _check(False, f"input.{name}", problem)
        _check(self.gsd is None or self.gsd > 0, "input.gsd", f"must be > 0, got {self.gsd}")
