"""Settings fitted to the training data before the model is built.

``detect train`` reads the dataset's object sizes and boxes per image and,
for every setting the user did not pin (:attr:`DetectConfig.explicit`):

- ``data.scale`` (with ``data.target_object_side``): small-object data is
  upsampled (:func:`fit_upsampling`);
- ``model.input.scale``: the resampling the training resize applies to a
  typical image (1 for ``data.resize=none``), so prediction on imagery of
  any size sees objects at the training scale;
- ``model.input.tile`` / ``overlap``: the training input side (at least
  512) and an overlap that holds the largest objects whole;
- ``data.max_boxes``: the largest number of boxes in one image;
- anchors (size, scales, levels): the layout that covers the boxes best,
  as the model sees them (see :mod:`detect.datasets.anchor_fit`);
- ``postprocess.max_detections``: at least 3x the largest count per image,
  scaled to the tile's area; ``pre_nms_top_k`` at least
  :data:`~detect.config.PRE_NMS_PER_DETECTION` (12) times that.
- ``model.band_mean`` / ``band_std``: per-band statistics of the training
  images for a model that normalises per band (``input_bands`` != 3).

Every adjustment and every remaining cap is reported as a line of text;
nothing is cut silently.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from detect.config import PRE_NMS_PER_DETECTION, DataConfig, DetectConfig
from detect.datasets.anchor_fit import (
    COVERAGE_WARNING,
    box_sides,
    check_reachable,
    coverage,
    coverage_table,
    fit_anchors,
)
from detect.datasets.coco import CocoDataset
from detect.imagery.images import BandRule, read_image

#: max_detections is at least this multiple of the densest image's box count.
DETECTIONS_PER_OBJECT = 3
#: ``data.target_object_side`` upsamples by at most this factor (the cost grows with its square).
MAX_UPSAMPLE = 2.0
#: With random crops, ``data.target_object_side`` upsamples only while the largest objects
#: (99th percentile side) stay within this fraction of the crop side: past it a crop cuts
#: most of them, and the fitted anchors leave the finest level.
CROP_FRACTION = 0.5
#: ... and only while a crop still holds this many objects on average. Upsampling with crops
#: of a fixed size shows each step less of the scene, so fewer objects to learn from. Measured
#: (README, 5-minute runs of aerial-pretrained-cpu): the dense set, ~30 objects per 256 px crop
#: at native pixels, gained box precision at x1.41 (15 per crop); the urban set, ~4.8 per crop,
#: fell from AP50 0.82 to 0.27 at x1.3 (2.8 per crop), and every class fell, small roofs too.
#: 8 lies between the two and was not tuned further.
MIN_OBJECTS_PER_CROP = 8.0


def largest_side(sides: np.ndarray) -> float:
    """The largest objects' side, for rules that must hold them whole (tile overlap, upsampling):
    the 99th percentile of ``sides``, so that a few outliers do not rule. ``sides`` non-empty."""
    return float(np.percentile(sides, 99))


def resize_factors(width: float, height: float, data: DataConfig) -> tuple[float, float]:
    """(x, y) scale the training pipeline applies to an image of this size."""
    if data.resize == "none":
        return 1.0, 1.0
    if data.resize == "fixed":
        return data.image_size / width, data.image_size / height
    if data.resize == "scale":
        s = data.scale
    else:
        s = min(data.min_side / min(width, height), data.max_side / max(width, height))
    return round(width * s) / width, round(height * s) / height


def model_boxes(ds: CocoDataset, data: DataConfig) -> list[np.ndarray]:
    """Each sample's object boxes (crowd regions left out) in model-input pixels."""
    out = []
    for s in ds.samples:
        sx, sy = resize_factors(s.width, s.height, data)
        out.append(s.boxes[s.labels >= 0] * np.array([sx, sy, sx, sy], np.float32))
    return out


def fit_upsampling(cfg: DetectConfig, ds: CocoDataset) -> tuple[DataConfig, str | None]:
    """``cfg.data`` resampled for ``data.target_object_side``, and its report line (or None).

    Applies when the target is > 0, ``data.resize`` is "none" or "scale" and
    ``data.scale`` is not set: the factor is ``target / median object side``
    (image pixels, crowd regions left out), at least 1 (never downsampled) and
    at most :data:`MAX_UPSAMPLE`, rounded to 2 decimals. With random crops
    (``data.crop_size``) it is also at most what keeps the largest objects
    (99th percentile side) within :data:`CROP_FRACTION` of the crop side and
    :data:`MIN_OBJECTS_PER_CROP` objects in a crop on average, rounded down:
    small objects are not enlarged at the cost of the large ones, nor of the
    objects a step learns from. Small objects then reach the backbone with
    more pixels; training steps cost about the same (crops keep their size)
    and prediction resamples imagery by the model's ``input.scale``, which
    follows.
    """
    data = cfg.data
    if (data.target_object_side <= 0 or data.resize not in ("none", "scale")
            or cfg.is_explicit("data.scale")):
        return data, None
    boxes = model_boxes(ds, data)  # image pixels: the scale is still 1 here
    flat = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    if not len(flat):
        return data, None
    sides = box_sides(flat)
    median = float(np.median(sides))
    target = data.target_object_side
    if median >= target:
        return data, (
            f"data.scale = 1 (native pixels): the objects' median side {median:.1f} px needs no "
            f"upsampling for data.target_object_side={target:g}")
    factor = round(min(MAX_UPSAMPLE, target / max(median, 1e-6)), 2)
    why = f"the objects' median side {median:.1f} px is below data.target_object_side={target:g}"
    limit = ""
    if data.crop_size:
        crop = data.crop_size
        largest = largest_side(sides)
        area = float(sum(s.width * s.height for s in ds.samples))
        per_crop = len(flat) * crop * crop / area  # objects in a crop at native pixels, on average
        for room, reason in (
                (CROP_FRACTION * crop / max(largest, 1e-6),
                 f"the largest objects (99th percentile side {largest:.1f} px) stay within "
                 f"{CROP_FRACTION:g} x the {crop} px crop side"),
                (math.sqrt(per_crop / MIN_OBJECTS_PER_CROP),
                 f"a {crop} px crop still holds {MIN_OBJECTS_PER_CROP:g} objects on average "
                 f"({per_crop:.1f} at native pixels)")):
            room = math.floor(100 * room) / 100
            if room < factor:
                factor = room
                limit = f"; limited to x{max(room, 1.0):g} so that {reason} (data.crop_size)"
    if factor <= 1.0:
        return data, f"data.scale = 1 (native pixels): {why}{limit}"
    capped = f" (capped at x{MAX_UPSAMPLE:g}; median after it {median * factor:.1f} px)" \
        if factor == MAX_UPSAMPLE and median * factor < target else ""
    return replace(data, resize="scale", scale=factor), (
        f"data.scale = {factor:g}: images upsampled x{factor:g} because {why}{capped}{limit}; "
        f"prediction resamples imagery the same way (set data.scale: 1 to train at native pixels)")


def fit_to_data(cfg: DetectConfig, ds: CocoDataset) -> tuple[DetectConfig, list[str]]:
    """``cfg`` with the data-dependent settings fitted (see module doc), and report lines."""
    lines: list[str] = []
    m = replace(cfg.model, num_classes=ds.num_classes, class_names=tuple(ds.class_names),
                input=replace(cfg.model.input, category_ids=()))
    data, line = fit_upsampling(cfg, ds)
    if line:
        lines.append(line)
    counts = np.array([int((s.labels >= 0).sum()) for s in ds.samples] or [0])
    most = int(counts.max())

    # input rule: scale, tile, overlap
    factors = np.array([resize_factors(s.width, s.height, data) for s in ds.samples] or [(1.0, 1.0)])
    scale = float(np.median(np.sqrt(factors[:, 0] * factors[:, 1])))
    sides = np.array([max(s.width * fx, s.height * fy) for s, (fx, fy) in zip(ds.samples, factors)] or [512])
    inp = m.input
    if not cfg.is_explicit("model.input.scale"):
        inp = replace(inp, scale=round(scale, 6))
    if not cfg.is_explicit("model.input.tile"):
        inp = replace(inp, tile=int(min(2048, max(512, math.ceil(float(np.median(sides)) / 32) * 32))))
    boxes = model_boxes(ds, data)
    flat = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    obj_sides = box_sides(flat)
    if not cfg.is_explicit("model.input.overlap") and len(obj_sides):
        largest = largest_side(obj_sides)
        inp = replace(inp, overlap=round(min(0.5, max(0.2, 1.2 * largest / inp.tile)), 2))
    inp = replace(inp, category_ids=tuple(int(c) for c in ds.category_ids))
    m = replace(m, input=inp)

    # ground truth per image
    if not cfg.is_explicit("data.max_boxes") and most > 0:
        data = replace(data, max_boxes=most)
        lines.append(f"data.max_boxes = {most} (the most boxes in one image)")
    over = counts - data.max_boxes
    if (over > 0).any():
        lines.append(f"warning: data.max_boxes={data.max_boxes} drops {int(over[over > 0].sum())} "
                     f"ground-truth boxes in {int((over > 0).sum())} image(s) (the densest has {most}); "
                     f"raise it or leave it unset")

    # anchors
    anchor_keys = ("anchor_size", "num_scales", "min_level", "max_level")
    pinned = {k for k in anchor_keys if cfg.is_explicit(f"model.anchors.{k}")}
    thr = m.matcher.positive_iou
    if len(flat):
        if len(pinned) < len(anchor_keys):
            anchors, cov = fit_anchors(flat, m.anchors, pinned=pinned, threshold=thr)
            if anchors != m.anchors:
                lines.append(f"anchors fitted to the data: anchor_size {anchors.anchor_size:g}, "
                             f"{anchors.num_scales} scales, levels P{anchors.min_level}-P{anchors.max_level}"
                             + (f" (pinned: {', '.join(sorted(pinned))})" if pinned else ""))
            m = replace(m, anchors=anchors)
        else:
            cov = coverage(flat, m.anchors, thr)
        check_reachable(cov, m.anchors)
        lines.append(coverage_table(cov, m.anchors))
        if cov.share < COVERAGE_WARNING:
            lines.append(f"warning: only {cov.share:.1%} of the boxes have an anchor with IoU >= {thr:g} "
                         f"(below {COVERAGE_WARNING:.0%}); the rest train on their best, weaker anchor")

    # detections per image
    pp = m.postprocess
    train_area = float(np.median(sides)) ** 2
    want = int(math.ceil(DETECTIONS_PER_OBJECT * most * max(1.0, inp.tile**2 / train_area)))
    if not cfg.is_explicit("model.postprocess.max_detections") and want > pp.max_detections:
        pp = replace(pp, max_detections=want)
        lines.append(f"postprocess.max_detections = {want} ({DETECTIONS_PER_OBJECT}x the densest image's "
                     f"{most} boxes, per {inp.tile} px tile)")
    if not cfg.is_explicit("model.postprocess.pre_nms_top_k"):
        pp = replace(pp, pre_nms_top_k=max(pp.pre_nms_top_k, PRE_NMS_PER_DETECTION * pp.max_detections))
    if pp.max_detections < most:
        lines.append(f"warning: postprocess.max_detections={pp.max_detections} is below the densest "
                     f"image's {most} objects: predictions there will be capped")
    m = replace(m, postprocess=pp)

    # per-band input statistics (an N-band model normalises with them)
    if m.normalization == "bands" and not cfg.is_explicit("model.band_mean"):
        mean, std, used = band_statistics(ds, BandRule.of(m, training=True))
        m = replace(m, band_mean=mean, band_std=std)
        lines.append(f"band statistics ({used} images, decimated): mean " + " ".join(f"{v:.1f}" for v in mean)
                     + ", std " + " ".join(f"{v:.1f}" for v in std))
    return replace(cfg, model=m, data=data), lines


#: Images and side length (px) the per-band statistics are computed from.
BAND_SAMPLE_IMAGES, BAND_SAMPLE_SIDE = 32, 256


def band_statistics(ds: CocoDataset, rule: BandRule) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """Per-band mean and std (0..255 units, after the stretch) of up to :data:`BAND_SAMPLE_IMAGES`
    images spread over the dataset, each decimated to about :data:`BAND_SAMPLE_SIDE` px.
    A constant band gets std 1 (it carries nothing; dividing by ~0 would blow it up)."""
    if not ds.samples:
        raise ValueError("band statistics need at least one training image")
    picks = np.unique(np.linspace(0, len(ds.samples) - 1, min(BAND_SAMPLE_IMAGES, len(ds.samples))).astype(int))
    total = np.zeros(rule.count)
    squares = np.zeros(rule.count)
    count = 0
    for i in picks:
        img = read_image(ds.samples[i].path, rule)
        step = max(1, int(math.ceil(max(img.shape[:2]) / BAND_SAMPLE_SIDE)))
        pixels = img[::step, ::step].reshape(-1, rule.count).astype(np.float64)
        total += pixels.sum(0)
        squares += (pixels**2).sum(0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    std = np.where(std < 1e-3, 1.0, std)
    return (tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std), len(picks))
