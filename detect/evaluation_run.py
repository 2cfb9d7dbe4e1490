"""The ``detect evaluate`` flow: detections (from a results file, or from a model
run over the images) -> COCO statistics, operating point, report and plots.

It sits above :mod:`detect.inference` and :mod:`detect.evaluation` because it
uses both; the CLI only parses arguments and prints what this returns.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from detect.evaluation import evaluate, operating_points, parse_area_ranges
from detect.evaluation.coco_eval import EvalResult, load_ground_truth, load_results, parse_max_dets
from detect.evaluation.report import report_dict, write_json


@dataclass
class Evaluation:
    """What one evaluation produced."""

    result: EvalResult  # the COCO statistics, per class and per size bucket
    points: dict  # operating point per class and overall (see operating_points)
    detections: list[dict]  # the COCO results evaluated
    written: dict  # what was written where: {"predictions", "report", "plots"}


def run_evaluation(ann, *, predictions=None, model=None, images=None, options=None,
                   score_threshold: float | None = None, backend: str = "faster-coco-eval",
                   area_ranges: str | None = None, max_dets: str | tuple | None = None,
                   operating_point_at: float | None = None, save_predictions="detections.json",
                   report=None, plots=None) -> Evaluation:
    """Evaluate ``predictions`` (a COCO results file) or ``model`` run over ``images``
    against the ground truth ``ann``.

    ``model``: a loaded detector whose post-processing is already set
    (``set_postprocess``); it runs through the one inference path with
    ``options`` (:class:`~detect.inference.predictor.TileOptions`, default: the
    model's input rule), and its detections are written to ``save_predictions``.
    ``score_threshold`` filters a results file (a model applies its own).
    ``area_ranges`` ``"name:min:max,..."`` and ``max_dets`` ``"1,10,100"`` as
    on the command line. ``report`` / ``plots``: a JSON file / a folder to write.
    """
    if (predictions is None) == (model is None):
        raise ValueError("give either predictions (a results file) or a model")
    ranges = parse_area_ranges(area_ranges or "")
    max_dets = parse_max_dets(max_dets or (1, 10, 100))
    gt = load_ground_truth(ann)
    written = {}
    if model is not None:
        if not images:
            raise ValueError("--model needs --images (the folder the ground truth's file_name values are in)")
        from detect.inference.coco_dataset import predict_coco
        from detect.inference.predictor import DEFAULT_TILES

        detections = predict_coco(model, gt, images, options=options or DEFAULT_TILES)
        written["predictions"] = write_json(detections, save_predictions)
    else:
        detections = load_results(predictions, gt)
        if score_threshold is not None:
            detections = [r for r in detections if r["score"] > score_threshold]
    if not detections:
        print("warning: no detections to evaluate; all statistics are 0", file=sys.stderr)
    result = evaluate(gt, detections, backend=backend, area_ranges=ranges, max_dets=max_dets)
    points = operating_points(gt, detections, result.category_ids, score_threshold=operating_point_at,
                              max_dets=max_dets[-1])
    if report:
        meta = {"ground_truth": str(ann), "predictions": str(predictions or written["predictions"]),
                "backend": backend, "max_dets": list(max_dets)}
        written["report"] = write_json(report_dict(result, points, **meta), report)
    if plots:
        from detect.evaluation.plots import write_pr_curves

        written["plots"] = (Path(plots), write_pr_curves(result, plots))
    return Evaluation(result, points, detections, written)
