"""What an importer produces, and how it becomes a ``detect`` model.

An importer (keras-hub, keras-cv) reads a source detector and returns an
:class:`ImportPlan`: the :class:`~detect.config.ModelConfig` fields that
express the source's architecture and conventions, its backbone as a plain
functional feature extractor, and weight assignments by structure (a source
layer object -> one of our layer names, with the channel permutation the
conventions need). :func:`assemble` builds the RetinaNet, assigns every
weight and checks that every weight of both sides was used exactly once: a
source layer the mapping does not know fails loudly, naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np


@dataclass
class ImportPlan:
    """A source detector, described in ``detect``'s terms.

    config: ModelConfig fields (as a dict; ``num_classes`` and the
      conventions: anchors, variances, normalisation, post-processing).
    extractor: ``images [B, H, W, 3] -> [C3, C4, C5]`` (or C2..C5), the
      source's own backbone layers (their weights are copied by layer name).
    layers: ``(our_layer_name, source_layer, permutation or None)``: the
      source layer's weights go to ours; a permutation reorders the output
      channels of a prediction layer (the last axis of kernel and bias).
    used: every source variable the source's forward pass uses (by id);
      :func:`assemble` fails when one is left over.
    notes: lines printed by the importer (what was mapped, what differs).
    """

    kind: str
    config: dict
    extractor: keras.Model
    layers: list = field(default_factory=list)
    used: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


def head_permutation(num_anchors: int, per_anchor: int, anchor_of, channel_of=None) -> np.ndarray:
    """Output-channel permutation of a prediction conv: ``ours[i] = theirs[perm[i]]``.

    Both sides lay out ``[H, W, A * C]`` as ``anchor * C + channel``;
    ``anchor_of(a)`` / ``channel_of(c)`` give the source's anchor / channel
    index of our anchor ``a`` / channel ``c``.
    """
    channel_of = channel_of or (lambda c: c)
    return np.array([anchor_of(a) * per_anchor + channel_of(c)
                     for a in range(num_anchors) for c in range(per_anchor)], np.int64)


def assemble(plan: ImportPlan):
    """The RetinaNet of ``plan`` with every source weight assigned (see module doc)."""
    from detect.config import ModelConfig
    from detect.models.backbone_sources import graph_of
    from detect.models.retinanet import RetinaNet

    config = ModelConfig.from_dict(plan.config)
    model = RetinaNet(config, load_backbone_weights=False, backbone_graph=graph_of(plan.extractor))
    assigned: set[int] = set()
    consumed: set[int] = set()

    def put(ours, values, sources):
        if len(ours) != len(values):
            raise ValueError(f"{plan.kind} import: layer {ours and ours[0].path} has {len(ours)} weights, "
                             f"the source's has {len(values)}")
        for var, value in zip(ours, values):
            if tuple(var.shape) != tuple(np.shape(value)):
                raise ValueError(f"{plan.kind} import: {var.path} has shape {tuple(var.shape)}, the source's "
                                 f"{np.shape(value)}")
            var.assign(value)
            assigned.add(id(var))
        consumed.update(id(v) for v in sources)

    for layer in plan.extractor.layers:
        if layer.weights:
            put(model.backbone.get_layer(layer.name).weights, [w.numpy() for w in layer.weights], layer.weights)
    for name, source_layer, perm in plan.layers:
        ours = model.network.get_layer(name)
        values = [w.numpy() for w in source_layer.weights]
        if perm is not None:
            values = [v[..., perm] for v in values]
        if len(values) == 1 and len(ours.weights) == 2:  # a bias-free conv (before GroupNorm): zero bias
            values.append(np.zeros(ours.weights[1].shape, np.float32))
        put(ours.weights, values, source_layer.weights)
    left = [v.path for v in plan.used.values() if id(v) not in consumed]
    if left:
        raise ValueError(f"{plan.kind} import: the source has weights the mapping does not know: {left[:6]}"
                         f"{' ...' if len(left) > 6 else ''}; nothing was written")
    missing = [v.path for v in model.weights if id(v) not in assigned]
    if missing:
        raise ValueError(f"{plan.kind} import: no source weights for {missing[:6]}; nothing was written")
    return model
