"""Exports of a trained detector: a TensorFlow SavedModel and LiteRT (``.tflite``, with
calibration and a parity report). The LiteRT *runtime* model lives in ``models.litert_model``."""
