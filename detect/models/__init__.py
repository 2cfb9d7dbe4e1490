"""Keras layers and the RetinaNet model."""

from detect.models.factory import build_retinanet, inference_copy, load_model
from detect.models.retinanet import RetinaNet

__all__ = ["RetinaNet", "build_retinanet", "inference_copy", "load_model"]
