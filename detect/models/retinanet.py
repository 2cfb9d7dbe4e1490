"""The RetinaNet ``keras.Model``: one artefact from training to serving.

- ``call(images)`` returns raw outputs ``{"cls_logits" [B, N, K],
  "box_deltas" [B, N, 4]}`` for images padded (bottom/right) to a multiple of
  the largest stride; ``N`` matches :meth:`anchors`.
- ``train_step`` / ``test_step`` take ``(images, {"boxes" [B, M, 4] xyxy
  pixels, "labels" [B, M] int, -1 padding, -2 ignore regions})`` so that
  ``model.fit(dataset)`` just works.
- ``predict`` / :meth:`detect` return decoded detections in input pixels.
- The :class:`~detect.config.ModelConfig` (anchors, class names, thresholds,
  normalisation) is the model's Keras config, so ``model.save("x.keras")``
  and ``keras.models.load_model`` round-trip everything.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from detect.config import ModelConfig
from detect.models.backbones import (
    ImageNormalization,
    apply_freezing,
    build_backbone,
    normalization_affine,
)
from detect.models.fpn import build_fpn
from detect.models.heads import build_heads
from detect.models.losses import detection_losses
from detect.models.postprocess import postprocess
from detect.ops.anchors import AnchorGenerator
from detect.ops.matcher import assign_targets

LOSS_NAMES = ("loss", "cls_loss", "box_loss")


def _build_network(config: ModelConfig, load_weights: bool, graph: dict | None = None):
    """``(network, backbone, config)``: network = normalised images -> (cls, box) and the
    backbone as functional models; ``config`` with the backbone source's normalisation resolved."""
    backbone, config = build_backbone(config, load_weights=load_weights, graph=graph)
    apply_freezing(backbone, freeze_stages=config.freeze_stages,
                   freeze_batchnorm=config.batchnorm_frozen)
    inputs = keras.Input((None, None, config.input_bands), name="normalized_images")
    a = config.anchors
    taps = backbone(inputs)
    if len(taps) == 3:  # a source giving C3..C5
        if a.min_level == 2:
            raise ValueError("anchors.min_level 2 (P2) needs C2: the backbone source gives C3..C5 only "
                             "(name four layers in model.backbone_layers, or use min_level 3)")
        taps = [None, *taps]
    features = build_fpn(*taps, channels=config.fpn_channels, p6_from=config.p6_from,
                         min_level=a.min_level, max_level=a.max_level)
    cls, box = build_heads(
        features, num_classes=config.num_classes,
        num_anchors=a.num_scales * len(a.aspect_ratios), channels=config.fpn_channels,
        convs=config.head_convs, norm=config.resolved_head_norm, prior_bias=config.prior_bias)
    return keras.Model(inputs, [cls, box], name="retinanet_network"), backbone, config


@keras.saving.register_keras_serializable(package="detect")
class RetinaNet(keras.Model):
    """RetinaNet detector. Build with :func:`detect.models.factory.build_retinanet`."""

    def __init__(self, config: ModelConfig | dict, *, load_backbone_weights: bool = True,
                 backbone_graph: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = ModelConfig.from_dict(config)
        self.network, self.backbone, config = _build_network(config, load_backbone_weights, backbone_graph)
        self.model_config = config
        reverse, mean, std = normalization_affine(config)
        self.normalize = ImageNormalization(mean, std, reverse, name="normalize")
        self.anchor_generator = AnchorGenerator.from_config(config.anchors)
        self.size_multiple = config.pad_multiple or 2 ** config.anchors.max_level
        self._trackers = {n: keras.metrics.Mean(name=n) for n in LOSS_NAMES}
        # Discriminative learning rates: when set (by the training engine), the
        # backbone's variables are updated by this optimizer (usually the same
        # kind with a smaller learning rate) and everything else by
        # ``self.optimizer``.
        self.backbone_optimizer = None
        self.built = True  # every variable exists now; inputs may have any size

    # ---- configuration ----------------------------------------------------

    def get_config(self):
        config = {"name": self.name, "config": self.model_config.to_dict()}
        if self.model_config.backbone == "source":  # its architecture is not ours to rebuild
            from detect.models.backbone_sources import graph_of

            config["backbone_graph"] = graph_of(self.backbone)
        return config

    @classmethod
    def from_config(cls, config):
        # Restoring a saved model: every weight comes from the file, so the
        # backbone's pretrained weights are not fetched again.
        return cls(config["config"], load_backbone_weights=False, name=config.get("name"),
                   backbone_graph=config.get("backbone_graph"))

    def digest(self, postprocess: bool = True) -> str:
        """SHA-256 of the config (post-processing included unless ``postprocess`` is False) and
        every weight, hex: equal for equal detectors, whatever file they came from."""
        import hashlib

        h = hashlib.sha256(self.model_config.canonical_bytes(postprocess))
        for w in self.weights:
            h.update(w.path.encode())
            h.update(np.ascontiguousarray(w.numpy()).tobytes())
        return h.hexdigest()

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.model_config.labels

    def set_postprocess(self, **changes) -> None:
        """Change post-processing for this model object (``score_threshold``,
        ``iou_threshold``, ``max_detections``, ``pre_nms_top_k``, ``agnostic``,
        ``clip_boxes``, ``vote_iou``; ``None`` keeps a value).

        The NMS step is rebuilt, so a score threshold below the trained
        model's works exactly. ``pre_nms_top_k`` grows with ``max_detections``.
        """
        from dataclasses import replace

        self.model_config = replace(self.model_config, postprocess=self.model_config.postprocess.changed(**changes))
        self.predict_function = None  # re-trace predict with the new settings

    # ---- forward ----------------------------------------------------------

    def padded_size(self, images):
        """Height and width after padding to a multiple of ``pad_multiple`` (2**max_level by default)."""
        h, w = images.shape[1], images.shape[2]
        if h is None or w is None:
            shape = tf.shape(images)
            h, w = shape[1], shape[2]
        m = self.size_multiple
        return (h + m - 1) // m * m, (w + m - 1) // m * m

    def anchors(self, images) -> tf.Tensor:
        """``[N, 4]`` anchors for a batch of (unpadded) images."""
        return self.anchor_generator(self.padded_size(images))

    def call(self, images, training=False):
        hp, wp = self.padded_size(images)
        shape = tf.shape(images)
        x = tf.pad(self.normalize(images), [[0, 0], [0, hp - shape[1]], [0, wp - shape[2]], [0, 0]])
        cls, box = self.network(x, training=training)
        return {"cls_logits": tf.cast(cls, tf.float32), "box_deltas": tf.cast(box, tf.float32)}

    def compute_detection_losses(self, images, targets, training=False) -> dict[str, tf.Tensor]:
        """Focal + box loss of a batch with padded ground truth (see module doc).

        Under a multi-replica strategy each replica returns its share of the
        global-batch loss (normalised by the positive anchors of all
        replicas), so summing over replicas gives the single-device loss and
        the gradients sum to the single-device gradient.
        """
        outputs = self(images, training=training)
        size = self.padded_size(images)
        anchors = self.anchor_generator(size)
        c = self.model_config
        t = assign_targets(
            anchors, targets["boxes"], targets["labels"],
            positive_iou=c.matcher.positive_iou, negative_iou=c.matcher.negative_iou,
            allow_low_quality_matches=c.matcher.allow_low_quality_matches,
            variances=c.box_variances, trim_padding=not self.jit_compile,
            anchor_iou=lambda boxes, valid: self.anchor_generator.pairwise_iou(size, boxes, valid))
        normalizer = None
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            local = tf.reduce_sum(tf.cast(t.positive, tf.float32))
            normalizer = tf.maximum(ctx.all_reduce(tf.distribute.ReduceOp.SUM, local), 1.0)
        return detection_losses(
            t, outputs["cls_logits"], outputs["box_deltas"], anchors,
            alpha=c.loss.focal_alpha, gamma=c.loss.focal_gamma, box_loss=c.loss.box_loss,
            smooth_l1_beta=c.loss.smooth_l1_beta, box_loss_weight=c.loss.box_loss_weight,
            variances=c.box_variances, normalizer=normalizer)

    def detect(self, images, *, static_shapes: bool = False) -> dict[str, tf.Tensor]:
        """Decoded detections for ``images [B, H, W, 3]`` RGB in [0, 255]."""
        outputs = self(images, training=False)
        shape = tf.shape(images)
        return postprocess(
            outputs["cls_logits"], outputs["box_deltas"], self.anchors(images),
            (shape[1], shape[2]), self.model_config.postprocess,
            variances=self.model_config.box_variances, static_shapes=static_shapes)

    # ---- Keras steps ------------------------------------------------------

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _record(self, losses):
        # Mean trackers average over replicas; each replica holds its share of
        # the global loss, so scale by the replica count to report the total.
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        for name, tracker in self._trackers.items():
            tracker.update_state(losses[name] * replicas)
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    def train_step(self, data):
        images, targets = data[0], data[1]
        with tf.GradientTape() as tape:
            losses = self.compute_detection_losses(images, targets, training=True)
            total = losses["loss"]
            if self.losses:  # weight decay / regularisers
                total = total + tf.add_n([tf.cast(v, tf.float32) for v in self.losses])
            scaled = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        if self.backbone_optimizer is None:
            self.optimizer.apply(grads, variables)
        else:
            in_backbone = {id(v) for v in self.backbone.trainable_variables}
            split = ([], [], [], [])
            for g, v in zip(grads, variables):
                k = 2 if id(v) in in_backbone else 0
                split[k].append(g)
                split[k + 1].append(v)
            self.optimizer.apply(split[0], split[1])
            if split[3]:
                self.backbone_optimizer.apply(split[2], split[3])
        return {**self._record(losses), "lr": self.optimizer.learning_rate}

    def test_step(self, data):
        images, targets = data[0], data[1]
        return self._record(self.compute_detection_losses(images, targets, training=False))

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        # Under XLA (jit_compile) every shape must be static.
        return self.detect(images, static_shapes=bool(self.jit_compile))
