"""The one place a config becomes objects."""

from __future__ import annotations

from pathlib import Path

import keras

from detect.config import ModelConfig
from detect.models.retinanet import RetinaNet
from detect.util.files import check_model_file


def build_retinanet(config: ModelConfig | dict | None = None, **overrides) -> RetinaNet:
    """Build a RetinaNet from a :class:`ModelConfig` (or dict), with keyword overrides.

    ``build_retinanet(num_classes=3, backbone="resnet18")`` is shorthand for
    ``build_retinanet(ModelConfig(num_classes=3, backbone="resnet18"))``.
    """
    if config is None:
        config = ModelConfig()
    elif isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    if overrides:
        config = config.with_overrides(overrides)
    return RetinaNet(config)


def load_keras_model(path: str | Path) -> RetinaNet:
    """Load a RetinaNet saved with ``model.save("x.keras")``; clear error if it is not one.
    (Model files of any kind: :func:`detect.models.detector.load_detector`.)"""
    path = check_model_file(path)
    model = keras.models.load_model(path, compile=False)
    if not isinstance(model, RetinaNet):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a detect RetinaNet")
    return model


def inference_copy(model: RetinaNet) -> RetinaNet:
    """The same detector without training state: no optimizer, no compile settings.

    ``detect train`` saves this as the run's final ``model.keras`` (the
    inference artefact: smaller, and it loads without the training
    schedule's class); the checkpoints keep the optimizer for ``--resume``.
    Weights are copied by path, so a mismatch fails here, not at prediction.
    """
    fresh = RetinaNet.from_config(model.get_config())
    theirs = {w.path: w for w in model.weights}
    if sorted(theirs) != sorted(w.path for w in fresh.weights):
        raise ValueError("inference_copy: the rebuilt model's weights differ from the trained model's")
    for w in fresh.weights:
        w.assign(theirs[w.path])
    from detect.models.backbone_sources import share_saved_models

    share_saved_models(model, fresh)
    return fresh
