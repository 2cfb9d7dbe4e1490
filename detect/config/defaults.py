"""Defaults and lists of choices of the commands, each written once: the API's keyword defaults,
the CLI's ``default=`` and ``choices=`` and the checks that refuse other values all read these.

The model's own settings (post-processing, input rule) are not here: they live in its
:class:`~detect.config.ModelConfig` and travel with the model file.
"""

#: The minimum score of what ``predict`` returns and writes (maps, CSV, pictures) for a model
#: without calibrated per-class thresholds, and the viewer's starting slider position. The
#: model's own ``postprocess.score_threshold`` (0.05) stays what NMS and evaluation see: AP
#: needs the low scores, a map does not. Best-F1 thresholds measured on generated and bundled
#: scenes lay between 0.30 and 0.55; a map at 0.3 leans to recall, and its ``score`` field
#: lets a GIS user filter further. Calibrate (``detect evaluate --calibrate``) for per class.
UNCALIBRATED_SCORE_THRESHOLD = 0.3
#: Tiles per ``predict_on_batch`` call (``--batch-size``).
BATCH_SIZE = 4
#: Ray Data worker processes, each holding one model (``--workers``).
WORKERS = 2
#: Where prediction runs (``--engine``): this process, or Ray Data workers.
ENGINES = ("local", "ray")
#: Run-level GIS output of ``predict`` (``--format``).
FORMATS = ("geojson", "gpkg")
#: COCO maxDets of ``evaluate`` (``--max-dets``): the COCO default.
MAX_DETS = (1, 10, 100)
#: COCO evaluators (``--backend``): detect's own (numba, equal to pycocotools), and two references.
EVAL_BACKENDS = ("detect", "faster-coco-eval", "pycocotools")
#: LiteRT export weights (``--quantize``).
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
