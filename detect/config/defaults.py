"""Defaults and lists of choices of the commands, each written once: the API's keyword defaults,
the CLI's ``default=`` and ``choices=`` and the checks that refuse other values all read these.

The model's own settings (post-processing, input rule) are not here: they live in its
:class:`~detect.config.ModelConfig` and travel with the model file.
"""

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
