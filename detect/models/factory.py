"""The one place a config becomes objects."""

from __future__ import annotations

from pathlib import Path

import keras

from detect.config import ModelConfig
from detect.files import check_model_file
from detect.models.retinanet import RetinaNet


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


def load_model(path: str | Path) -> RetinaNet:
    """Load a detector saved with ``model.save("x.keras")``; clear error if it is not one."""
    path = check_model_file(path)
    model = keras.models.load_model(path, compile=False)
    if not isinstance(model, RetinaNet):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a detect RetinaNet")
    return model
