#!/usr/bin/env python
"""Time detect's COCO evaluation with both backends on a generated load, in one run.

Generates ``--images`` images with about 20 ground-truth boxes and 100
detections each (half near an object, half clutter), evaluates them with
each backend of ``detect.evaluation.evaluate`` (``detect``,
``faster-coco-eval``, ``pycocotools``; results validation included), checks
the 12 statistics are identical, and prints the times and the ratios to
pycocotools (median of ``--repeats`` calls; pycocotools once). The
operating-point pass (same for every backend) is timed separately.

    python tools/benchmark_eval.py [--images 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time

import numpy as np

from detect.evaluation import BACKENDS, evaluate, operating_points


def generate(n_images: int, seed: int = 0, size: float = 1024.0):
    rng = np.random.default_rng(seed)
    cats = list(range(1, 11))
    gt = {"images": [{"id": i, "width": size, "height": size} for i in range(1, n_images + 1)],
          "categories": [{"id": c, "name": f"class{c}"} for c in cats], "annotations": []}
    res = []
    aid = 1
    for i in range(1, n_images + 1):
        n = int(rng.integers(15, 26))
        wh = rng.uniform(8, 120, (n, 2))
        xy = rng.uniform(0, size - 120, (n, 2))
        cls = rng.choice(cats, n)
        for (x, y), (w, h), c in zip(xy, wh, cls):
            gt["annotations"].append({"id": aid, "image_id": i, "category_id": int(c),
                                      "bbox": [float(x), float(y), float(w), float(h)],
                                      "area": float(w * h), "iscrowd": 0})
            aid += 1
        near = rng.integers(0, n, 50)
        jitter = rng.normal(0, 0.1, (50, 2)) * wh[near]
        boxes = np.concatenate([np.concatenate([xy[near] + jitter, wh[near]], 1),
                                np.concatenate([rng.uniform(0, size - 100, (50, 2)),
                                                rng.uniform(8, 100, (50, 2))], 1)])
        labels = np.concatenate([cls[near], rng.choice(cats, 50)])
        scores = np.concatenate([rng.uniform(0.3, 1, 50), rng.uniform(0, 0.6, 50)])
        for b, c, s in zip(boxes, labels, scores):
            res.append({"image_id": i, "category_id": int(c), "bbox": [float(v) for v in b],
                        "score": float(s)})
    return gt, res


def raw_library_seconds(backend: str, gt: dict, res: list) -> float:
    """The library called directly (its documented loadRes/evaluate/accumulate/summarize)."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval as Eval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as Eval
    gt_copy = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
    res_copy = [dict(r) for r in res]
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_copy
        coco_gt.createIndex()
        ev = Eval(coco_gt, coco_gt.loadRes(res_copy), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per backend (median)")
    args = p.parse_args()
    gt, res = generate(args.images)
    print(f"{args.images} images, {len(gt['annotations'])} ground-truth boxes, {len(res)} detections")
    t0 = time.perf_counter()
    evaluate(gt, res[:10], backend="detect")  # numba: load (or compile) the loops once
    print(f"detect backend warm-up (numba cache load or compile): {time.perf_counter() - t0:.2f} s")
    times, stats = {}, {}
    for backend in BACKENDS:
        runs = []
        for _ in range(args.repeats if backend != "pycocotools" else 1):
            t0 = time.perf_counter()
            stats[backend] = evaluate(gt, res, backend=backend).stats
            runs.append(time.perf_counter() - t0)
        times[backend] = statistics.median(runs)
        print(f"{backend:<18} {times[backend]:8.2f} s   AP {stats[backend][0]:.4f}", flush=True)
    base = times["pycocotools"]
    print("\nspeed-up over pycocotools (through detect.evaluation.evaluate, validation included):")
    for backend in BACKENDS:
        same = stats[backend] == stats["pycocotools"]
        print(f"  {backend:<18} {base / times[backend]:6.1f}x   12 statistics identical: {same}")
    for backend in ("faster-coco-eval", "pycocotools"):
        print(f"{backend:<18} {raw_library_seconds(backend, gt, res):8.2f} s   "
              f"(the library called directly, for reference)")
    t0 = time.perf_counter()
    operating_points(gt, res, [c["id"] for c in gt["categories"]])
    print(f"operating point pass  {time.perf_counter() - t0:8.2f} s (same for every backend)")
    if any(stats[b] != stats["pycocotools"] for b in BACKENDS):
        raise SystemExit("statistics differ between backends")


if __name__ == "__main__":
    main()
