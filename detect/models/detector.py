"""What inference needs from a model: the :class:`Detector` protocol, and the one loader of model files.

Two classes satisfy it: :class:`detect.models.retinanet.RetinaNet` (a Keras
model file) and :class:`detect.models.litert_model.LiteRTModel` (a ``.tflite``
exported by ``detect export``). Everything above ``models/`` (tiling,
prediction, evaluation, the API) takes a ``Detector`` and nothing more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Detector(Protocol):
    """A detector as inference uses it.

    - ``model_config``: the :class:`detect.config.ModelConfig` it was built from
      (class names, input bands and rule, anchors, post-processing);
    - ``class_names``: one name per class, ``model_config.labels``;
    - ``predict_on_batch(images [B, h, w, bands], 0..255)``: a dict of padded
      ``boxes [B, M, 4]`` (xyxy pixels), ``scores [B, M]``, ``labels [B, M]`` (-1 padding),
      ``num_detections [B]``, ``num_candidates [B]`` and ``capped [B]``
      (:data:`detect.models.postprocess.DETECTION_KEYS`);
    - ``set_postprocess(**changes)``: change score/IoU thresholds and caps for this object;
    - ``digest(postprocess=True)``: a hex SHA-256 of what decides its detections (weights or
      file, config; with ``postprocess=False`` the post-processing counts as the defaults, so
      a rerun that changed only a threshold can be told apart from another model).
    """

    model_config: object

    @property
    def class_names(self) -> tuple[str, ...]: ...

    def predict_on_batch(self, images: np.ndarray) -> dict: ...

    def set_postprocess(self, **changes) -> None: ...

    def digest(self, postprocess: bool = True) -> str: ...



def load_detector(path: str | Path, *, threads: int | None = None) -> Detector:
    """A detector from ``model.keras`` / ``checkpoint.keras``, a run folder (its ``model.keras``)
    or a ``.tflite`` file written by ``detect export`` (run by LiteRT with ``threads``,
    default all cores).

    Post-processing and the input rule (scale, tile, overlap, GSD) come with
    the file. Raises FileNotFoundError / ValueError for a missing or foreign file.
    """
    path = Path(path)
    if path.suffix.lower() == ".tflite":
        from detect.models.litert_model import LiteRTModel

        return LiteRTModel(path, threads=threads)
    if path.is_dir():
        if not (path / "model.keras").is_file():
            raise FileNotFoundError(f"{path} is a folder without model.keras (a run that has not finished? "
                                    f"its checkpoints are in {path / 'checkpoints'})")
        path = path / "model.keras"
    from detect.models.factory import load_keras_model

    return load_keras_model(path)


def as_detector(model, *, threads: int | None = None) -> Detector:
    """``model`` itself when it is a :class:`Detector`; loaded by :func:`load_detector` when it
    is a path; otherwise a ValueError naming its type."""
    if isinstance(model, (str, Path)):
        return load_detector(model, threads=threads)
    if isinstance(model, Detector):
        return model
    raise ValueError(f"model must be a detect RetinaNet or a path to one, got {type(model).__name__}")
