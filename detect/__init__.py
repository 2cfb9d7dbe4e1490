"""detect: RetinaNet object detection for TensorFlow 2 / Keras 3, built for aerial imagery.

The Python API mirrors the ``detect`` command (each command is a thin shell
around one of these functions)::

    import detect

    model = detect.load_model("run/model.keras")
    results = detect.predict(model, "scene.tif")          # -> Results, one Detections per image
    report = detect.evaluate(model, "gt.json", images="images/")
    run = detect.train("train.json", "images/", "run/", config="aerial-cpu")
    detect.export(model, "saved_model/")

``import detect`` also registers every class a model file written by
``detect`` refers to, so ``keras.models.load_model(path)`` works for
``model.keras`` and ``checkpoint.keras`` alike.
"""

from __future__ import annotations

import os
import sys

__version__ = "0.1.0"

__all__ = ["Detections", "Report", "Results", "Run", "evaluate", "export", "load_model", "predict", "train"]

_API = {"load_model": "detect.api", "predict": "detect.api", "evaluate": "detect.api", "train": "detect.api",
        "export": "detect.api", "Detections": "detect.structures", "Results": "detect.structures",
        "Report": "detect.inference.evaluate", "Run": "detect.api"}


def _register_keras_classes() -> None:
    """Import the modules whose classes saved models name (``detect>RetinaNet``,
    ``detect>WarmupSchedule``, the backbone and FPN layers): importing them registers them."""
    import detect.models  # noqa: F401  RetinaNet, backbones, FPN
    import detect.training.schedules  # noqa: F401  the optimizer's schedule in checkpoints


def _started_as_cli() -> bool:
    """True while the ``detect`` command (console script or ``python -m detect``) imports us,
    or a script that drives it says so with ``DETECT_DEFER_IMPORT=1`` (``tools/demo.py``).

    The command answers ``--help`` and refuses missing files before
    TensorFlow loads (seconds on a small machine), and hides TensorFlow's
    native start-up lines, which must not print before that filter is set;
    its handlers import the model modules, which registers them, whenever a
    model is touched.
    """
    argv0 = os.path.basename(sys.argv[0]) if sys.argv else ""
    return argv0 in {"detect", "detect.exe", "-m"} or os.environ.get("DETECT_DEFER_IMPORT") == "1"


if not _started_as_cli():
    _register_keras_classes()


def __getattr__(name: str):
    # the API's modules load on first use (PEP 562), so `detect.cli.main` stays light
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'detect' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
