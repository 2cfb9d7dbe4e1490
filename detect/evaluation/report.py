"""Terminal tables and the machine-readable report of an evaluation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from detect.evaluation.coco_eval import STAT_NAMES, EvalResult, summary_lines
from detect.util import atomic


def _fmt(v: float) -> str:
    return "  n/a" if v < 0 else f"{v:.3f}"


def format_report(result: EvalResult, points: dict) -> str:
    lines = summary_lines(result.stats, result.max_dets)
    if result.max_dets[-1] != 100:
        lines.append(f" (pycocotools' first line is always at maxDets=100; AP @[ IoU=0.50:0.95 | "
                     f"area=   all | maxDets={result.max_dets[-1]} ] = {result.ap_at_max_dets:0.3f})")
    extra = [r.name for r in result.area_ranges]
    header = f"\n{'class':<20}{'AP':>7}{'AP50':>7}{'AP75':>7}{'#gt':>7}" + "".join(
        f"{'AP50_' + n:>{max(9, len(n) + 6)}}" for n in extra)
    lines += [header, "-" * len(header.strip("\n"))]
    for row in result.per_class:
        lines.append(f"{row['name'][:19]:<20}{_fmt(row['AP']):>7}{_fmt(row['AP50']):>7}"
                     f"{_fmt(row['AP75']):>7}{row['num_gt']:>7}" + "".join(
                         f"{_fmt(row['AP50_' + n]):>{max(9, len(n) + 6)}}" for n in extra))
    if extra:
        lines.append("\nsize buckets (side length in px):")
        for r in result.area_ranges:
            s = result.area_stats[r.name]
            lines.append(f"  {r.name:<12} [{r.min_side:g}, {r.max_side:g})  "
                         f"AP {_fmt(s['AP'])}  AP50 {_fmt(s['AP50'])}")
    lines.append(f"\noperating point (IoU {points.get('iou', 0.5):g}):\n{'class':<20}{'thresh':>8}{'prec':>7}{'recall':>7}"
                 f"{'F1':>7}{'pred':>7}{'true':>7}{'error':>7}")
    names = dict(zip(result.category_ids, result.category_names))
    rows = [(names[c], p) for c, p in points["per_class"].items()] + [("(all classes)", points["overall"])]
    for name, p in rows:
        t = "    n/a" if p["score_threshold"] is None else f"{p['score_threshold']:>8.3f}"
        lines.append(f"{name[:19]:<20}{t:>8}{p['precision']:>7.3f}{p['recall']:>7.3f}{p['f1']:>7.3f}"
                     f"{p['predicted_count']:>7}{p['true_count']:>7}{p['count_error']:>+7}")
    per_image = points.get("per_image") or []
    if per_image:
        errors = np.array([r["count_error"] for r in per_image])
        f1 = np.array([r["f1"] for r in per_image if r["true_count"] or r["predicted_count"]])
        worst = max(per_image, key=lambda r: abs(r["count_error"]))
        lines.append(f"per image ({len(per_image)}, at the overall threshold): count error median "
                     f"{np.median(errors):+g}, mean |error| {np.abs(errors).mean():.2f}"
                     + (f", F1 median {np.median(f1):.3f}" if len(f1) else "")
                     + f"; largest: {worst['file_name'] or worst['image_id']} ({worst['count_error']:+d})"
                     " (every image in --report)")
    return "\n".join(lines)


def report_dict(result: EvalResult, points: dict, **meta) -> dict:
    return {
        **meta,
        "stats": result.stats,
        "stat_names": list(STAT_NAMES),
        "max_dets": list(result.max_dets),
        "AP_at_max_dets": result.ap_at_max_dets,
        "per_class": result.per_class,
        "area_ranges": [{"name": r.name, "min_side": r.min_side, "max_side": r.max_side if math.isfinite(r.max_side) else "inf",
                         **result.area_stats[r.name]} for r in result.area_ranges],
        "operating_point": {"iou": points.get("iou", 0.5), "overall": points["overall"],
                            "per_class": [{"category_id": c, **p}
                                          for c, p in points["per_class"].items()],
                            "per_image": points.get("per_image", [])},
    }


def write_json(data, path: str | Path) -> Path:
    """Atomic JSON write (temp file, then rename); refuses NaN/inf, which JSON lacks."""
    return atomic.write_json(path, data)
