"""keras-cv (0.9) ``RetinaNet`` -> :class:`ImportPlan`.

What keras-cv does, and how ``detect`` expresses it:

- backbone: ``model.backbone`` tapped at its ``pyramid_level_inputs`` P3..P5;
  ``include_rescaling`` is a Rescaling(1/255) layer inside it, copied with
  the other layers (so the model's own normalisation is ``raw``).
- FPN (fixed, 256 channels): 1x1 laterals, 2x upsampling, 3x3 outputs, P6 by
  a stride-2 conv on C5 (``p6_from: c5``), P7 on ReLU(P6).
- heads: ``num_conv_layers`` 3x3 convs with ReLU (3 by default), then the
  prediction conv; no normalisation.
- anchors: ``sizes[l] = anchor_size * 2**l`` with octave ``scales`` and
  centres at ``(i + 0.5) * stride`` (detect's convention), clipped to the
  image (``anchors.clip``); keras-cv's aspect ratio is width / height, ours
  height / width, so its ratio ``r`` is our ``1 / r`` (same anchor order).
- boxes: deltas ``(dy, dx, dh, dw)`` with variances (0.1, 0.1, 0.2, 0.2):
  the box prediction conv's 4 channels per anchor are reordered to ours.
- decoding: ``NonMaxSuppression`` (keras-cv's default: class-agnostic, max
  over classes) or ``MultiClassNonMaxSuppression`` (per class), unclipped;
  for the first, a box with no coordinate above 0 is no detection (its
  padded NMS reads it as padding).
"""

from __future__ import annotations

import math

from detect.models.importers.plan import ImportPlan, head_permutation

#: keras-cv's decoding variances, in its (y, x, h, w) delta order.
KERAS_CV_VARIANCE = (0.1, 0.1, 0.2, 0.2)


def _anchor_rule(generator, source: str) -> dict:
    """Our AnchorConfig fields for a keras-cv AnchorGenerator (refused when not expressible)."""
    gens = [generator.anchor_generators[k] for k in sorted(generator.anchor_generators)]
    strides = [float(g.stride) for g in gens]
    levels = [round(math.log2(s)) for s in strides]
    base = {float(g.sizes) / float(g.stride) for g in gens}
    scales = [float(s) for s in gens[0].scales]
    ratios = [float(r) for r in gens[0].aspect_ratios]
    n = len(scales)
    ok = (levels == list(range(3, 8)) and strides == [2.0**lv for lv in levels] and len(base) == 1
          and all(abs(s - 2 ** (i / n)) < 1e-6 for i, s in enumerate(scales))
          and all([float(s) for s in g.scales] == scales and [float(r) for r in g.aspect_ratios] == ratios
                  for g in gens))
    if not ok:
        raise ValueError(f"{source}: the anchor generator (strides {strides}, sizes "
                         f"{[float(g.sizes) for g in gens]}, scales {scales}) is not one detect expresses: "
                         f"strides 8..128, sizes = one multiple of the stride, octave scales 2**(k/S)")
    return {"min_level": 3, "max_level": 7, "anchor_size": base.pop(), "num_scales": n,
            "aspect_ratios": [1.0 / r for r in ratios], "clip": bool(gens[0].clip_boxes)}


def plan_keras_cv(model, source: str) -> ImportPlan:
    import keras

    expected = {"FeaturePyramid": model.feature_pyramid, "PredictionHead": model.box_head}
    for name, layer in expected.items():
        if type(layer).__name__ != name:
            raise ValueError(f"{source}: a custom {type(layer).__name__} where keras-cv's {name} was expected; "
                             f"detect maps keras-cv's own layers only")
    bb = model.backbone
    names = getattr(bb, "pyramid_level_inputs", {})
    if not all(f"P{lv}" in names for lv in (3, 4, 5)):
        raise ValueError(f"{source}: the backbone has no pyramid_level_inputs P3..P5 (found {sorted(names)})")
    extractor = keras.Model(bb.inputs, [bb.get_layer(names[f"P{lv}"]).output for lv in (3, 4, 5)],
                            name="source_backbone")
    decoder = model.prediction_decoder
    kind = type(decoder).__name__
    if kind not in ("NonMaxSuppression", "MultiClassNonMaxSuppression") or not decoder.from_logits:
        raise ValueError(f"{source}: the prediction decoder is {kind} (from_logits="
                         f"{getattr(decoder, 'from_logits', None)}); detect imports keras-cv's "
                         f"NonMaxSuppression / MultiClassNonMaxSuppression on logits")
    anchors = _anchor_rule(model.anchor_generator, source)
    k = int(model.num_classes)
    heads = (("cls", model.classification_head, k, None), ("box", model.box_head, 4, lambda c: (1, 0, 3, 2)[c]))
    convs = {len(h.conv_layers) for _, h, _, _ in heads}
    if len(convs) != 1:
        raise ValueError(f"{source}: the class and box heads have different depths {sorted(convs)}")
    config = {
        "num_classes": k, "backbone": "source", "backbone_weights": source,
        "fpn_channels": 256, "p6_from": "c5", "head_convs": convs.pop(), "head_norm": "none",
        # (dy, dx, dh, dw) * (0.1, 0.1, 0.2, 0.2) is (dx, dy, dw, dh) * (0.1, 0.1, 0.2, 0.2)
        "box_variances": [KERAS_CV_VARIANCE[i] for i in (1, 0, 3, 2)], "pad_multiple": 32,
        "input_normalization": "raw", "anchors": anchors,
        "postprocess": {"score_threshold": float(decoder.confidence_threshold),
                        "iou_threshold": float(decoder.iou_threshold),
                        "max_detections": int(decoder.max_detections),
                        "agnostic": kind == "NonMaxSuppression", "clip_boxes": False,
                        # TensorFlow's padded NMS (NonMaxSuppression's) reads a box with no
                        # coordinate above 0 as padding
                        "drop_nonpositive": kind == "NonMaxSuppression"},
    }
    fpn = model.feature_pyramid
    layers = []
    for lv in (3, 4, 5):
        layers.append((f"fpn_lateral{lv}", getattr(fpn, f"conv_c{lv}_1x1"), None))
        layers.append((f"fpn_output{lv}", getattr(fpn, f"conv_c{lv}_3x3"), None))
    layers += [("fpn_p6", fpn.conv_c6_3x3, None), ("fpn_p7", fpn.conv_c7_3x3, None)]
    a = anchors["num_scales"] * len(anchors["aspect_ratios"])
    for ours, head, per, channel_of in heads:
        for i, conv in enumerate(head.conv_layers):
            layers.append((f"{ours}_conv{i}", conv, None))
        layers.append((f"{ours}_predict", head.prediction_layer, head_permutation(a, per, lambda i: i, channel_of)))
    used = {id(v): v for layer in (model.feature_extractor, fpn, model.classification_head, model.box_head)
            for v in layer.weights}
    unknown = [layer.name for layer in model.layers if layer.weights and layer not in
               (model.feature_extractor, fpn, model.classification_head, model.box_head)]
    if unknown:
        raise ValueError(f"{source}: layers the mapping does not know: {unknown}; nothing was written")
    per_class = getattr(decoder, "max_detections_per_class", None)
    if per_class is not None and per_class < decoder.max_detections:
        raise ValueError(f"{source}: the decoder keeps at most {per_class} detections per class (of "
                         f"{decoder.max_detections}); detect has no per-class cap")
    rescaling = any(type(layer).__name__ == "Rescaling" for layer in extractor.layers)
    notes = [f"keras-cv RetinaNet: backbone P3..P5{' (with its 1/255 rescaling)' if rescaling else ''}, FPN "
             f"P3..P7 (P6 from C5), heads of {config['head_convs']} convs, {a} anchors per location"
             f"{' clipped to the image' if anchors['clip'] else ''}, "
             f"{'class-agnostic' if config['postprocess']['agnostic'] else 'per-class'} NMS"]
    return ImportPlan("keras-cv", config, extractor, layers, used, notes)
