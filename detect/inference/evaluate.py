"""The ``detect evaluate`` flow: detections (from a results file, or from a model
run over the images) -> COCO statistics, operating point, report and plots.

It sits above :mod:`detect.inference` and :mod:`detect.evaluation` because it
uses both; the CLI only parses arguments and prints what this returns.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from detect.config import defaults
from detect.evaluation import evaluate, operating_points, parse_area_ranges
from detect.evaluation.coco_eval import EvalResult, load_ground_truth, load_results, parse_max_dets
from detect.evaluation.report import report_dict, write_json


@dataclass
class Report:
    """What one evaluation produced (``detect.evaluate`` returns it; the CLI prints it).

    - ``stats``: pycocotools' 12 numbers in its order (``stat_names`` says
      which is which; the maxDets used are in ``max_dets``).
    - ``per_class``: per category ``{"category_id", "name", "AP", "AP50",
      "AP75", "num_gt", ...}``; ``area_ranges``: the size buckets' AP/AP50.
    - ``operating_point``: at IoU 0.5, overall and per category: score
      threshold, precision, recall, F1, predicted and true counts.
    - ``detections``: the COCO results evaluated; ``written``: what was
      written where (``predictions``, ``report``, ``plots``).
    ``str(report)`` is the CLI's printout; ``plot(folder)`` writes its PNG curves.
    """

    result: EvalResult  # the COCO statistics, per class and per size bucket
    points: dict  # operating point per class and overall (see operating_points)
    detections: list[dict]  # the COCO results evaluated
    written: dict  # what was written where: {"predictions", "report", "plots"}

    @property
    def stats(self) -> list[float]:
        return list(self.result.stats)

    @property
    def stat_names(self) -> list[str]:
        from detect.evaluation.report import STAT_NAMES

        return list(STAT_NAMES)

    @property
    def max_dets(self) -> tuple:
        return tuple(self.result.max_dets)

    @property
    def ap_at_max_dets(self) -> float:
        """AP (IoU 0.50:0.95, all sizes) at the largest maxDets."""
        return float(self.result.ap_at_max_dets)

    @property
    def per_class(self) -> list[dict]:
        return self.to_dict()["per_class"]

    @property
    def area_ranges(self) -> list[dict]:
        return self.to_dict()["area_ranges"]

    @property
    def operating_point(self) -> dict:
        return self.to_dict()["operating_point"]

    def to_dict(self) -> dict:
        """Everything as plain data: the same JSON as ``detect evaluate --report``."""
        return report_dict(self.result, self.points)

    def plot(self, folder) -> list[Path]:
        """Write the precision-recall curves the CLI's ``--plots`` writes; returns the PNG paths."""
        from detect.evaluation.plots import write_pr_curves

        return write_pr_curves(self.result, folder)

    def __str__(self) -> str:
        from detect.evaluation.report import format_report

        return format_report(self.result, self.points)

    def __repr__(self) -> str:
        return (f"Report(AP {self.stats[0]:.3f}, AP50 {self.stats[1]:.3f}, "
                f"{len(self.result.category_ids)} classes, maxDets {list(self.max_dets)})")


def run_evaluation(ann, *, predictions=None, model=None, images=None, options=None,
                   score_threshold: float | None = None, backend: str = "detect",
                   area_ranges: str | None = None, max_dets: str | tuple | None = None,
                   operating_point_at: float | None = None, save_predictions=None,
                   report=None, plots=None, html=None, match_iou: float = 0.5, calibrate=None) -> Report:
    """Evaluate ``predictions`` (a COCO results file) or ``model`` run over ``images``
    against the ground truth ``ann``.

    ``model``: a loaded detector whose post-processing is already set
    (``set_postprocess``); it runs through the one inference path with
    ``options`` (:class:`~detect.inference.predictor.TileOptions`, default: the
    model's input rule), and its detections are written to ``save_predictions``
    when given. ``predictions`` may also be a list of COCO result dicts.
    ``score_threshold`` filters a results file (a model applies its own).
    ``area_ranges`` ``"name:min:max,..."`` and ``max_dets`` ``"1,10,100"`` as
    on the command line. ``report`` / ``plots``: a JSON file / a folder to write;
    ``html``: a :mod:`detect.view` page of the detections over the ``images``,
    true / false positives and missed objects coloured, its score slider at
    the operating point.
    """
    if html and not images:
        raise ValueError("--html needs --images (the folder the ground truth's file_name values are in)")
    if (predictions is None) == (model is None):
        raise ValueError("give either predictions (a results file) or a model")
    calibrate = _calibration_target(model, calibrate) if calibrate is not None else None
    ranges = parse_area_ranges(area_ranges or "")
    max_dets = parse_max_dets(max_dets or defaults.MAX_DETS)
    gt = load_ground_truth(ann)
    written = {}
    if model is not None:
        if not images:
            raise ValueError("--model needs --images (the folder the ground truth's file_name values are in)")
        from detect.inference.coco_dataset import predict_coco
        from detect.inference.predictor import DEFAULT_TILES

        detections = predict_coco(model, gt, images, options=(options or DEFAULT_TILES).resolved(model))
        if save_predictions:
            written["predictions"] = write_json(detections, save_predictions)
    else:
        detections = load_results(predictions, gt)
        if score_threshold is not None:
            detections = [r for r in detections if r["score"] > score_threshold]
    if not detections:
        print("warning: no detections to evaluate; all statistics are 0", file=sys.stderr)
    result = evaluate(gt, detections, backend=backend, area_ranges=ranges, max_dets=max_dets)
    if not 0 < match_iou <= 1:
        raise ValueError(f"--match-iou must be in (0, 1], got {match_iou}")
    points = operating_points(gt, detections, result.category_ids, score_threshold=operating_point_at,
                              iou=match_iou, max_dets=max_dets[-1])
    if report:
        source = predictions if isinstance(predictions, (str, Path)) else written.get("predictions")
        meta = {"ground_truth": str(ann) if not isinstance(ann, dict) else "(in memory)",
                "predictions": str(source) if source else "(in memory)",
                "backend": backend, "max_dets": list(max_dets)}
        written["report"] = write_json(report_dict(result, points, **meta), report)
    if plots:
        from detect.evaluation.plots import write_pr_curves

        written["plots"] = (Path(plots), write_pr_curves(result, plots, gt=gt, detections=detections,
                                                         points=points))
    if html:
        from detect.view import write_view
        from detect.view.items import items_from_evaluation

        items, names = items_from_evaluation(gt, detections, images)
        threshold = points["overall"]["score_threshold"]
        written["html"] = write_view(items, html, names, title=f"detect evaluate: {Path(str(ann)).name}",
                                     score=threshold if threshold is not None else defaults.UNCALIBRATED_SCORE_THRESHOLD)
    if calibrate is not None:  # last: the model is changed (the caller restores its settings)
        written["calibrated"] = _write_calibrated(model, points, gt, ann, calibrate)
    return Report(result, points, detections, written)


def _calibration_target(model, out) -> Path:
    """``out`` checked as the place for a calibrated copy of ``model`` (before any work)."""
    from detect.models.retinanet import RetinaNet

    out = Path(out)
    if not isinstance(model, RetinaNet):
        raise ValueError(f"--calibrate needs a Keras model (.keras or a run folder), not {type(model).__name__}: "
                         f"calibrate the .keras model, then export it again")
    if out.suffix != ".keras":
        raise ValueError(f"--calibrate {out}: the calibrated model is a .keras file")
    return out


def _write_calibrated(model, points: dict, gt: dict, ann, out: Path) -> tuple[Path, list[str]]:
    """``model`` written to ``out`` with each class's best-F1 threshold of ``points`` as its
    post-processing's ``class_thresholds``; the path and notes on classes that took the pooled
    threshold. ``model`` keeps the settings it was evaluated with (the thresholds were measured
    under them)."""
    from detect.evaluation.calibration import calibrate
    from detect.util import atomic

    _, notes = calibrate(model, points, gt, ann)
    atomic.save_model(model, out)
    return out, notes
