"""COCO box mAP exactly as pycocotools computes it, plus per-class and size buckets.

Three backends implement pycocotools' algorithm: ``detect`` (the default,
:mod:`detect.evaluation.arrays`: arrays and compiled loops, bit-identical
precision/recall arrays), ``faster-coco-eval`` (C++) and ``pycocotools``
itself; the tests check the 12 statistics of each against pycocotools case
by case. The 12 numbers are printed in pycocotools' order and
wording by :func:`summary_lines`.

Custom size buckets (``AreaRange``) are given in pixels of *side length*
(``sqrt(area)``); COCO's own buckets are small < 32 <= medium < 96 <= large.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detect.config import defaults

BACKENDS = defaults.EVAL_BACKENDS

#: pycocotools' summary rows: (AP or AR, IoU label, area label, index into maxDets).
#: ``None``: pycocotools' first statistic uses the literal maxDets=100 whatever the
#: list holds (-1 when 100 is not in it); reproduced for exact agreement.
STAT_ROWS = (
    ("AP", "0.50:0.95", "all", None), ("AP", "0.50", "all", 2), ("AP", "0.75", "all", 2),
    ("AP", "0.50:0.95", "small", 2), ("AP", "0.50:0.95", "medium", 2),
    ("AP", "0.50:0.95", "large", 2),
    ("AR", "0.50:0.95", "all", 0), ("AR", "0.50:0.95", "all", 1), ("AR", "0.50:0.95", "all", 2),
    ("AR", "0.50:0.95", "small", 2), ("AR", "0.50:0.95", "medium", 2),
    ("AR", "0.50:0.95", "large", 2),
)
#: pycocotools' default ``params.maxDets``.
DEFAULT_MAX_DETS = defaults.MAX_DETS
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def parse_max_dets(text) -> tuple[int, int, int]:
    """``"100,300,1000"`` (or a sequence) -> three increasing positive ints, as pycocotools needs."""
    try:
        values = tuple(int(v) for v in (text.split(",") if isinstance(text, str) else text))
    except ValueError:
        raise ValueError(f"--max-dets must be three comma-separated integers, got {text!r}") from None
    if len(values) != 3 or min(values) < 1 or list(values) != sorted(set(values)):
        raise ValueError(f"--max-dets needs three increasing positive integers (pycocotools' summary "
                         f"uses the 1st for AR@1-style recall, the 2nd, and the 3rd for AP), got {text!r}")
    return values


@dataclass(frozen=True)
class AreaRange:
    """A size bucket ``min_side <= sqrt(area) < max_side`` in pixels."""

    name: str
    min_side: float
    max_side: float

    @property
    def area(self) -> list[float]:
        return [self.min_side**2, self.max_side**2 if math.isfinite(self.max_side) else 1e10]


#: pycocotools' own area ranges, reported with every evaluation.
BUILTIN_AREAS = ("all", "small", "medium", "large")


def parse_area_ranges(text: str) -> list[AreaRange]:
    """``"tiny:0:16,small:16:32,big:32:inf"`` -> AreaRanges (side lengths in pixels)."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        bits = part.split(":")
        if len(bits) != 3:
            raise ValueError(f"area range {part!r} must look like name:min:max (side length in px)")
        name = bits[0]
        try:
            lo, hi = float(bits[1]), float(bits[2])
        except ValueError:
            raise ValueError(f"area range {part!r}: min and max must be numbers (px, 'inf' allowed)") from None
        if not name or not 0 <= lo < hi:
            raise ValueError(f"area range {part!r} needs a name and 0 <= min < max")
        if name in BUILTIN_AREAS:
            raise ValueError(f"area range name {name!r} is built in ({', '.join(BUILTIN_AREAS)} are "
                             f"pycocotools' own, always reported); choose another, e.g. '{name}2'")
        if name in {r.name for r in out}:
            raise ValueError(f"area range name {name!r} is given twice")
        out.append(AreaRange(name, lo, hi))
    return out


@dataclass
class EvalResult:
    """Everything one evaluation produced (plain Python / NumPy)."""

    stats: list[float]  # the 12 pycocotools numbers, in its order
    category_ids: list[int]
    category_names: list[str]
    per_class: list[dict]  # per category: AP, AP50, AP75, num_gt, and per area range AP/AP50
    area_ranges: list[AreaRange]
    area_stats: dict[str, dict]  # custom range name -> {"AP", "AP50"}
    precision_iou50: np.ndarray  # [R=101, K] precision at IoU 0.5, area all, maxDets 100 (-1 = n/a)
    recall_thresholds: np.ndarray  # [101]
    max_dets: tuple = DEFAULT_MAX_DETS
    ap_at_max_dets: float = -1.0  # AP (IoU 0.50:0.95, area all) at the largest maxDets


def _read_json(path: Path, what: str):
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def load_ground_truth(ann) -> dict:
    """COCO instances dict from a path or a dict; clear errors for unreadable files, and the
    checks training shares (:func:`detect.datasets.coco.check_ground_truth`): an ``iscrowd``
    that is not 0 or 1 is refused, other problems are printed as warnings (from a file)."""
    from detect.evaluation.ground_truth import check_ground_truth

    if isinstance(ann, dict):
        return ann
    path = Path(ann)
    data = _read_json(path, "ground-truth")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise ValueError(f"{path}: not a COCO instances file (no '{key}' list)")
    for _, message in check_ground_truth(data, path):
        print(f"warning: {message}", file=sys.stderr)
    return data


def load_results(results, gt: dict, *, source: str = "results") -> list[dict]:
    """Validate a COCO results list (or path to one) against the ground truth.

    Refuses, naming the first few offenders: entries that are not boxes,
    unknown image ids, unknown category ids, non-finite numbers. Boxes with
    negative width or height are refused too (COCO xywh).
    """
    return _checked_results(results, gt, source)[0]


def _checked_results(results, gt: dict, source: str = "results"):
    """(results list, ResultArrays) after the checks of :func:`load_results`."""
    if not isinstance(results, list):
        path = Path(results)
        source = str(path)
        results = _read_json(path, "results")
        if not isinstance(results, list):
            raise ValueError(f"{source}: a COCO results file is a JSON list of detections")
    arrays = _result_arrays(results)
    if arrays is None or not arrays.valid_for(gt):
        raise ValueError(f"{source}: " + "; ".join(_diagnose(results, gt)))
    return results, arrays


@dataclass
class ResultArrays:
    """A results list as columns, in list order."""

    image_id: np.ndarray  # [N]
    category_id: np.ndarray  # [N]
    boxes: np.ndarray  # [N, 4] float64 xywh
    score: np.ndarray  # [N] float64

    def valid_for(self, gt: dict) -> bool:
        """Every rule :func:`_diagnose` spells out, vectorized (the fast path)."""
        if not len(self.score):
            return True
        return bool(np.isin(self.image_id, [im["id"] for im in gt["images"]]).all()
                    and np.isin(self.category_id, [c["id"] for c in gt["categories"]]).all()
                    and np.isfinite(self.boxes).all() and np.isfinite(self.score).all()
                    and (self.boxes[:, 2:4] >= 0).all())


def _result_arrays(results: list) -> ResultArrays | None:
    """Columns of a results list; None when an entry is malformed (then :func:`_diagnose` says
    which)."""
    if not results:
        return ResultArrays(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)),
                            np.zeros(0))
    try:
        boxes = np.array([r["bbox"] for r in results], np.float64).reshape(len(results), 4)
        return ResultArrays(np.array([r["image_id"] for r in results]),
                            np.array([r["category_id"] for r in results]), boxes,
                            np.array([r["score"] for r in results], np.float64))
    except (KeyError, TypeError, ValueError):
        return None


def _diagnose(results: list, gt: dict) -> list[str]:
    """One message per kind of problem, naming the first few offenders."""
    image_ids = {im["id"] for im in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    problems = {"malformed": [], "image": [], "category": [], "nan": [], "negative": []}
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(r):
            problems["malformed"].append(i)
            continue
        b = r["bbox"]
        if not isinstance(b, (list, tuple)) or len(b) != 4:
            problems["malformed"].append(i)
            continue
        if r["image_id"] not in image_ids:
            problems["image"].append(r["image_id"])
        if r["category_id"] not in cat_ids:
            problems["category"].append(r["category_id"])
        nums = [*b, r["score"]]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in nums):
            problems["nan"].append(i)
        elif b[2] < 0 or b[3] < 0:
            problems["negative"].append(i)
    messages = {
        "malformed": "entries without image_id/category_id/bbox[4]/score at positions",
        "image": "image ids not in the ground truth",
        "category": "category ids not in the ground truth",
        "nan": "entries with NaN/inf bbox or score at positions",
        "negative": "entries with negative bbox width/height at positions",
    }
    return [f"{len(v)} {messages[k]}: {sorted(set(v), key=str)[:5]}" for k, v in problems.items() if v]


def _backend(name: str):
    if name == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if name == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster

        def make_eval(gt, dt, iou_type):
            return COCOeval_faster(gt, dt, iou_type, print_function=lambda *a, **k: None)

        return COCO, make_eval
    raise ValueError(f"unknown evaluation backend {name!r}; choose from {BACKENDS}")


def _coco_from_dict(coco_cls, data: dict):
    # The backends add keys to annotation dicts ("ignore", "area", "id"...):
    # copy each dict (cheap), never the caller's own.
    coco = coco_cls()
    coco.dataset = {**data, "annotations": [dict(a) for a in data["annotations"]]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


@dataclass
class _Params:
    """The parts of pycocotools' ``Params`` the summary reads."""

    iouThrs: np.ndarray  # noqa: N815 (pycocotools' names)
    recThrs: np.ndarray  # noqa: N815
    areaRngLbl: list  # noqa: N815
    maxDets: list  # noqa: N815
    catIds: list  # noqa: N815


def _run_arrays(gt: dict, arrays: ResultArrays, area_ranges, max_dets):
    """The ``detect`` backend (:mod:`detect.evaluation.arrays`)."""
    from detect.evaluation import arrays as ev

    ranges = [*ev.AREA_RANGES, *(r.area for r in area_ranges)]
    ground = ev.ground_arrays(gt)
    dets = ev.detection_arrays(arrays.image_id, arrays.category_id, arrays.boxes, arrays.score,
                               ground, max_dets[-1])
    state, _ = ev.match(ground, dets, area_ranges=ranges)
    precision, recall = ev.accumulate(ground, dets, state, max_dets, area_ranges=ranges)
    params = _Params(ev.IOU_THRESHOLDS, ev.RECALL_THRESHOLDS,
                     [*ev.AREA_LABELS, *(r.name for r in area_ranges)], list(max_dets),
                     ground.category_ids.tolist())
    return precision, recall, params


def _run_library(backend: str, gt: dict, results: list, area_ranges, max_dets):
    """pycocotools or faster-coco-eval through their documented calls."""
    coco_cls, eval_cls = _backend(backend)
    coco_gt = _coco_from_dict(coco_cls, gt)
    # pycocotools' loadRes fails on an empty list; an empty results set is a
    # detections file with no annotations, which gives all-zero stats.
    dt_data = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes([dict(r) for r in results])
    else:
        coco_dt = _coco_from_dict(coco_cls, dt_data)
    ev = eval_cls(coco_gt, coco_dt, "bbox")
    ev.params.maxDets = list(max_dets)
    for r in area_ranges:
        ev.params.areaRng.append(r.area)
        ev.params.areaRngLbl.append(r.name)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return np.asarray(ev.eval["precision"]), np.asarray(ev.eval["recall"]), ev.params


def evaluate(gt, results, *, backend: str = "detect",
             area_ranges: list[AreaRange] = (), max_dets=DEFAULT_MAX_DETS) -> EvalResult:
    """COCO box evaluation of ``results`` (list or path) against ``gt`` (dict or path).

    ``max_dets``: pycocotools' ``params.maxDets`` (detections per image
    counted); the statistics equal pycocotools run with the same list.
    ``backend``: ``detect`` (:mod:`detect.evaluation.arrays`), or the
    libraries ``faster-coco-eval`` / ``pycocotools`` (to cross-check).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown evaluation backend {backend!r}; choose from {BACKENDS}")
    max_dets = parse_max_dets(max_dets)
    gt = load_ground_truth(gt)
    results, arrays = _checked_results(results, gt)
    if backend == "detect":
        precision, recall, params = _run_arrays(gt, arrays, area_ranges, max_dets)
    else:
        precision, recall, params = _run_library(backend, gt, results, area_ranges, max_dets)
    base = len(BUILTIN_AREAS)
    cat_ids = [int(c) for c in params.catIds]  # NumPy ints from faster-coco-eval
    names = {c["id"]: c.get("name", str(c["id"])) for c in gt["categories"]}
    num_gt = {c: 0 for c in cat_ids}
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0) and a["category_id"] in num_gt:
            num_gt[a["category_id"]] += 1

    def ap(k=slice(None), t=slice(None), a=0):
        p = precision[t, :, k, a, -1]
        p = p[p > -1]
        return float(p.mean()) if p.size else -1.0

    per_class = []
    for k, cid in enumerate(cat_ids):
        row = {"category_id": cid, "name": names[cid], "AP": ap(k), "AP50": ap(k, 0),
               "AP75": ap(k, 5), "num_gt": num_gt[cid]}
        for j, r in enumerate(area_ranges):
            row[f"AP_{r.name}"] = ap(k, a=base + j)
            row[f"AP50_{r.name}"] = ap(k, 0, a=base + j)
        per_class.append(row)
    area_stats = {r.name: {"AP": ap(a=base + j), "AP50": ap(t=0, a=base + j)}
                  for j, r in enumerate(area_ranges)}
    return EvalResult(
        stats=_summarize(precision, recall, params), category_ids=cat_ids,
        category_names=[names[c] for c in cat_ids], per_class=per_class,
        area_ranges=list(area_ranges), area_stats=area_stats,
        precision_iou50=precision[0, :, :, 0, -1], recall_thresholds=np.asarray(params.recThrs),
        max_dets=max_dets, ap_at_max_dets=_mean_valid(precision[:, :, :, 0, -1]))


def _summarize(precision, recall, params) -> list[float]:
    """pycocotools' 12 statistics from the accumulated arrays.

    Same rule as ``COCOeval.summarize`` (mean over entries > -1, else -1),
    looked up by area label and maxDets value, so extra area ranges cannot
    shift them (faster-coco-eval's own ``stats`` list does shift when extra
    ranges are present).
    """
    iou_thrs = np.asarray(params.iouThrs)
    out = []
    for kind, iou, area, dets in STAT_ROWS:
        a = list(params.areaRngLbl).index(area)
        if dets is None:
            if 100 not in list(params.maxDets):
                out.append(-1.0)
                continue
            m = list(params.maxDets).index(100)
        else:
            m = dets
        t = slice(None) if ":" in iou else np.where(np.isclose(iou_thrs, float(iou)))[0]
        v = precision[t, :, :, a, m] if kind == "AP" else recall[t, :, a, m]
        v = v[v > -1]
        out.append(float(v.mean()) if v.size else -1.0)
    return out


def _mean_valid(v) -> float:
    v = np.asarray(v)
    v = v[v > -1]
    return float(v.mean()) if v.size else -1.0


def summary_lines(stats, max_dets=DEFAULT_MAX_DETS) -> list[str]:
    """The 12 lines pycocotools' ``COCOeval.summarize`` prints, same wording and format."""
    lines = []
    for (kind, iou, area, m), value in zip(STAT_ROWS, stats):
        dets = 100 if m is None else max_dets[m]
        title = "Average Precision" if kind == "AP" else "Average Recall"
        lines.append(f" {title:<18} ({kind}) @[ IoU={iou:<9} | area={area:>6s} | "
                     f"maxDets={dets:>3d} ] = {value:0.3f}")
    return lines
