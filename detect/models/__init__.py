"""Keras layers and the RetinaNet model."""

from detect.models.detector import Detector, load_detector
from detect.models.factory import build_retinanet, inference_copy
from detect.models.retinanet import RetinaNet

#: The one loader of model files, by its short name (``detect.load_model`` is the same one).
load_model = load_detector

__all__ = ["Detector", "RetinaNet", "build_retinanet", "inference_copy", "load_detector", "load_model"]
