"""keras-hub ``RetinaNetObjectDetector`` -> :class:`ImportPlan`.

What keras-hub does, and how ``detect`` expresses it:

- backbone: ``detector.backbone.image_encoder`` (e.g. ResNet-50), tapped at its
  ``pyramid_outputs`` ``P{min_level}..P5``; its layers are copied as they are.
- FPN (``FeaturePyramid``): 1x1 laterals, 2x nearest upsampling, 3x3
  outputs, P6 by a stride-2 conv on the smoothed P5 (``use_p5=False``) or on
  C5 (``use_p5=True``), P7 on ReLU(P6): ``p6_from`` "p5" / "c5". Batch norm
  in the FPN (``use_fpn_batch_norm``) is not expressible: refused.
- heads: ``pre_logits_num_conv_layers`` 3x3 convs (+ GroupNorm(32) without
  conv bias when ``use_prediction_head_norm``), then the prediction conv.
- anchors: keras-hub's generator (``anchors.convention: keras_hub``); its
  per-location order is ratio-major (``ratio * S + scale``), ours scale-major:
  the prediction convs' output channels are permuted.
- boxes: deltas ``(dx, dy, dw, dh)`` on centre-size boxes, variances 1.
- input: the preprocessor's image converter ``x * scale + offset`` becomes
  ``input_mean`` / ``input_std``; its ``image_size`` becomes the tile.
- decoding: sigmoid, class-agnostic NMS (max over classes) on unclipped
  boxes with the decoder's thresholds; a box with no coordinate above 0 is
  no detection (the padded NMS reads it as padding: ``drop_nonpositive``).
"""

from __future__ import annotations

from detect.models.backbone_sources import converter_normalization
from detect.models.importers.plan import ImportPlan, head_permutation


def plan_keras_hub(detector, source: str) -> ImportPlan:
    import keras

    bb = detector.backbone
    if getattr(bb, "use_fpn_batch_norm", False):
        raise ValueError(f"{source}: the FPN uses batch norm (use_fpn_batch_norm=True), which detect's FPN "
                         f"does not have; nothing was written")
    enc = bb.image_encoder
    levels = range(bb.min_level, min(5, bb.max_level) + 1)
    pyramid = getattr(enc, "pyramid_outputs", None) or {}
    if any(f"P{lv}" not in pyramid for lv in levels) or bb.max_level < 5:
        raise ValueError(f"{source}: detect needs the image encoder's P{bb.min_level}..P5 and pyramid levels "
                         f"up to P5 or more; found encoder outputs {sorted(pyramid)} and levels "
                         f"P{bb.min_level}..P{bb.max_level}")
    extractor = keras.Model(enc.inputs, [pyramid[f"P{lv}"] for lv in levels], name="source_backbone")
    fpn, k = bb.feature_pyramid, detector.num_classes
    ag = detector.anchor_generator
    ratios = tuple(float(r) for r in ag.aspect_ratios)
    S, R = int(ag.num_scales), len(ratios)
    decoder = detector.prediction_decoder
    if type(decoder).__name__ != "NonMaxSuppression" or not getattr(decoder, "from_logits", False):
        raise ValueError(f"{source}: the prediction decoder is {type(decoder).__name__} "
                         f"(from_logits={getattr(decoder, 'from_logits', None)}); detect imports keras-hub's "
                         f"NonMaxSuppression on logits")
    norm = detector.use_prediction_head_norm
    config = {
        "num_classes": int(k), "backbone": "source", "backbone_weights": source,
        "fpn_channels": int(fpn.num_filters), "p6_from": "c5" if bb.use_p5 else "p5",
        "head_convs": int(detector.pre_logits_num_conv_layers), "head_norm": "group" if norm else "none",
        "box_variances": [1.0, 1.0, 1.0, 1.0], "pad_multiple": 32,
        "anchors": {"min_level": int(bb.min_level), "max_level": int(bb.max_level),
                    "anchor_size": float(ag.anchor_size), "num_scales": S, "aspect_ratios": list(ratios),
                    "convention": "keras_hub"},
        "postprocess": {"score_threshold": float(decoder.confidence_threshold),
                        "iou_threshold": float(decoder.iou_threshold),
                        "max_detections": int(decoder.max_detections), "agnostic": True, "clip_boxes": False,
                        "drop_nonpositive": True},
    }
    notes = []
    converter = getattr(getattr(detector, "preprocessor", None), "image_converter", None)
    rule = converter_normalization(converter)
    if rule is None:
        notes.append("input: the source has no image converter scaling its input: images go in as 0..255 "
                     "(model.input_normalization raw)")
    config.update(rule or {"input_normalization": "raw"})
    if converter is not None and getattr(converter, "image_size", None):
        config["input"] = {"tile": int(max(converter.image_size))}
    # ours: anchor a = scale * R + ratio; keras-hub's: ratio * S + scale
    hub_anchor = lambda a: (a % R) * S + a // R  # noqa: E731
    layers = []
    for lv in levels:
        layers.append((f"fpn_lateral{lv}", fpn.lateral_conv_layers[f"P{lv}"], None))
        layers.append((f"fpn_output{lv}", fpn.output_conv_layers[f"P{lv}"], None))
    for lv in range(6, bb.max_level + 1):
        layers.append((f"fpn_p{lv}", fpn.output_conv_layers[f"P{lv}"], None))
    for ours, head, per in (("cls", detector.classification_head, k), ("box", detector.box_head, 4)):
        for i, conv in enumerate(head.conv_layers):
            layers.append((f"{ours}_conv{i}", conv, None))
            if norm:
                layers.append((f"{ours}_gn{i}", head.group_norm_layers[i], None))
        layers.append((f"{ours}_predict", head.prediction_layer, head_permutation(S * R, per, hub_anchor)))
    used = {id(v): v for v in detector.weights}
    notes.append(f"keras-hub RetinaNet: {len(levels)} backbone taps, FPN P{bb.min_level}..P{bb.max_level} "
                 f"(P6 from {'C5' if bb.use_p5 else 'P5'}), heads of {config['head_convs']} convs"
                 f"{' + GroupNorm' if norm else ''}, {S * R} anchors per location (keras-hub convention)")
    return ImportPlan("keras-hub", config, extractor, layers, used, notes)
