"""COCO mAP (pycocotools-exact), per-class results, size buckets, PR curves, operating points."""

from detect.evaluation.coco_eval import BACKENDS, AreaRange, evaluate, parse_area_ranges
from detect.evaluation.operating_point import operating_points

__all__ = ["BACKENDS", "AreaRange", "evaluate", "operating_points", "parse_area_ranges"]
