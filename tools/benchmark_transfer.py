#!/usr/bin/env python
"""Fine-tuning from a detector (``--init-from``) vs training from scratch, at equal wall-clock time.

1. Source domain: dense generated aerial scenes (``tools/make_dense_aerial.py``:
   touching tree crowns and parked cars of 10-40 px on varied ground,
   classes ``tree`` and ``car``). A detector is trained on ``--source`` scenes
   for ``--pretrain`` minutes with the ``aerial-cpu`` recipe: the model one starts
   from is trained on more data and for longer than the new domain allows.
2. Target domain: ``--target`` other scenes (another seed) seen through another
   sensor (bands permuted, a gamma curve, less contrast, more noise), where
   ``tree`` is no longer labelled (a class removed: crowns are still there,
   now as background) and swimming pools of 10-30 px are drawn and labelled
   (a class added). Classes: ``car``, ``pool``. Test: ``--test`` more target
   scenes (a third seed). Pools stand out from the ground and both arms find
   nearly all of them within minutes; the parked cars, touching in rows, are
   where the arms differ, so AP50 is also printed per class.
3. For each budget in ``--budgets``, in alternation so that anything else the
   machine does weighs on both arms alike:

       detect train --config aerial-cpu --time-budget B            (scratch)
       detect train --config aerial-cpu --time-budget B --init-from SOURCE/model.keras

   then ``detect evaluate`` on the test scenes (fresh processes).

Prints AP50 and AP per arm and budget, and how long fine-tuning needed to reach
scratch's AP50 at the largest budget (the first budget at which it did; the
target is a quarter of that budget). Budgets are wall-clock: run nothing else
meanwhile. About ``pretrain + 2 * sum(budgets)`` minutes plus evaluation (the data
and the source detector are kept in ``--work`` and reused).

    python tools/benchmark_transfer.py                        # pretrain 30m on 128 scenes; 2m, 5m, 10m
    python tools/benchmark_transfer.py --pretrain 2m --budgets 1m,2m --source 16 --target 8 --test 4
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from benchmark_train import _detect  # noqa: E402
from make_dense_aerial import make_dataset  # noqa: E402

from detect.util import atomic  # noqa: E402

TARGET_CATEGORIES = [{"id": 1, "name": "car", "supercategory": "object"},
                     {"id": 2, "name": "pool", "supercategory": "object"}]


def _pool(rng, img, taken: np.ndarray) -> list[float] | None:
    """Draw one rotated pool (deck + water) where it overlaps no labelled box; its [x, y, w, h]."""
    size = img.shape[0]
    for _ in range(20):
        short = rng.uniform(8, 18)
        long = short * rng.uniform(1.2, 1.8)
        cx, cy = rng.uniform(long, size - long, 2)
        angle = rng.uniform(0, 180)
        pts = cv2.boxPoints(((float(cx), float(cy)), (float(long), float(short)), float(angle)))
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        if len(taken) and np.any((taken[:, 0] < x1) & (taken[:, 2] > x0) & (taken[:, 1] < y1) & (taken[:, 3] > y0)):
            continue
        cv2.fillPoly(img, [pts.astype(np.int32)], (225, 225, 215))
        inner = cv2.boxPoints(((float(cx), float(cy)), (float(long * 0.78), float(short * 0.68)), float(angle)))
        cv2.fillPoly(img, [inner.astype(np.int32)], tuple(float(v) for v in rng.uniform([40, 140, 180], [80, 190, 235])))
        return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
    return None


def make_target(out: Path, *, images: int, size: int, seed: int) -> Path:
    """Target-domain set: dense scenes re-labelled (no trees, pools added) through another sensor."""
    ann = out / "annotations.json"
    if ann.is_file():
        return ann
    raw = make_dataset(out / "raw", images=images, size=size, seed=seed)
    coco = json.loads(raw.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    new_id = {c["name"]: c["id"] for c in TARGET_CATEGORIES}
    rng = np.random.default_rng(seed + 7)
    (out / "images").mkdir(parents=True, exist_ok=True)
    annotations = []
    for image in coco["images"]:
        rgb = cv2.cvtColor(cv2.imread(str(out / "raw" / "images" / image["file_name"])), cv2.COLOR_BGR2RGB)
        boxes = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        taken = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in boxes], np.float32).reshape(-1, 4)
        kept = [(names[a["category_id"]], a["bbox"]) for a in boxes if names[a["category_id"]] == "car"]
        for _ in range(int(rng.integers(8, 25))):
            box = _pool(rng, rgb, taken)
            if box is not None:
                kept.append(("pool", box))
                taken = np.vstack([taken, [box[0], box[1], box[0] + box[2], box[1] + box[3]]])
        # another sensor: bands in another order, a gamma curve, lower contrast, more noise
        img = rgb[..., [2, 0, 1]].astype(np.float32) / 255.0
        img = 255.0 * (0.15 + 0.7 * img ** 0.7) + rng.normal(0, 5, img.shape)
        cv2.imwrite(str(out / "images" / image["file_name"]),
                    cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
        for name, (x, y, w, h) in kept:
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "category_id": new_id[name],
                                "bbox": [round(v, 2) for v in (x, y, w, h)], "area": round(w * h, 2),
                                "iscrowd": 0})
    shutil.rmtree(out / "raw")
    atomic.write_json(ann, {"info": {"description": f"detect transfer target domain (seed {seed})"},
                            "images": coco["images"], "annotations": annotations,
                            "categories": TARGET_CATEGORIES}, indent=None)
    return ann


def _minutes(budget: str) -> float:
    from detect.training.time_budget import parse_duration

    return parse_duration(budget) / 60


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/detect_benchmark_transfer"),
                   help="data and runs go here (data and the pretrained source are reused when present)")
    p.add_argument("--pretrain", default="30m", help="time budget of the source-domain detector")
    p.add_argument("--budgets", default="2m,5m,10m", help="comma-separated --time-budget values per arm")
    p.add_argument("--source", type=int, default=128, help="source-domain training scenes")
    p.add_argument("--target", type=int, default=20, help="target-domain training scenes")
    p.add_argument("--test", type=int, default=20, help="target-domain test scenes")
    p.add_argument("--size", type=int, default=512, help="scene side, px")
    args = p.parse_args(argv)
    config = "aerial-cpu"
    work = args.work
    work.mkdir(parents=True, exist_ok=True)

    source_dir = work / f"source_{args.source}x{args.size}"
    source_ann = source_dir / "annotations.json"
    if not source_ann.is_file():
        make_dataset(source_dir, images=args.source, size=args.size, seed=0)
    target_ann = make_target(work / f"target_{args.target}x{args.size}", images=args.target, size=args.size, seed=500)
    test_ann = make_target(work / f"test_{args.test}x{args.size}", images=args.test, size=args.size, seed=900)
    for name, ann in (("source", source_ann), ("target", target_ann), ("test", test_ann)):
        coco = json.loads(ann.read_text())
        counts = {c["name"]: sum(a["category_id"] == c["id"] for a in coco["annotations"])
                  for c in coco["categories"]}
        print(f"{name}: {len(coco['images'])} scenes, boxes {counts} ({ann.parent})", flush=True)

    pretrained = work / f"pretrained_{args.source}x{args.size}_{args.pretrain}"
    if not (pretrained / "model.keras").is_file():
        shutil.rmtree(pretrained, ignore_errors=True)
        seconds = _detect("train", "--train-ann", str(source_ann), "--train-images", str(source_dir / "images"),
                          "--config", config, "--time-budget", args.pretrain, "--out", str(pretrained),
                          log=work / f"{pretrained.name}.train.log")
        print(f"source detector: {seconds:.0f} s ({pretrained})", flush=True)

    rows, per_class = {}, {}
    for budget in args.budgets.split(","):
        for arm in ("scratch", "fine-tuned"):
            run = work / "runs" / f"{arm}_{budget}"
            shutil.rmtree(run, ignore_errors=True)
            run.parent.mkdir(parents=True, exist_ok=True)
            extra = ["--init-from", str(pretrained / "model.keras")] if arm == "fine-tuned" else []
            _detect("train", "--train-ann", str(target_ann), "--train-images", str(target_ann.parent / "images"),
                    "--config", config, "--time-budget", budget, "--out", str(run), *extra,
                    log=run.parent / f"{run.name}.train.log")
            _detect("evaluate", "--ann", str(test_ann), "--images", str(test_ann.parent / "images"),
                    "--model", str(run / "model.keras"), "--max-dets", "1,100,1000",
                    "--report", str(run.parent / f"{run.name}.report.json"),
                    "--save-predictions", str(run.parent / f"{run.name}.detections.json"),
                    log=run.parent / f"{run.name}.evaluate.log")
            stats = json.loads((run.parent / f"{run.name}.report.json").read_text())
            rows[arm, budget] = (stats["stats"][1], stats["AP_at_max_dets"])
            per_class[arm, budget] = {c["name"]: c["AP50"] for c in stats["per_class"]}
            print(f"{arm:<10} {budget:>4}: AP50 {rows[arm, budget][0]:.3f}  AP {rows[arm, budget][1]:.3f}  "
                  f"AP50 per class " + ", ".join(f"{k} {v:.3f}" for k, v in per_class[arm, budget].items()),
                  flush=True)

    budgets = args.budgets.split(",")
    print("\nAP50 (AP, maxDets 1000) on the target domain's test scenes")
    print("budget  " + "  ".join(f"{arm:>16}" for arm in ("scratch", "fine-tuned")))
    for budget in budgets:
        print(f"{budget:>6}  " + "  ".join(f"{rows[arm, budget][0]:>8.3f} ({rows[arm, budget][1]:.3f})"
                                           for arm in ("scratch", "fine-tuned")))
    print("\nAP50 per class (a class that is easy for both arms hides the difference on the others)")
    for budget in budgets:
        print(f"{budget:>6}  " + "  ".join(
            f"{arm}: " + ", ".join(f"{k} {v:.3f}" for k, v in per_class[arm, budget].items())
            for arm in ("scratch", "fine-tuned")))
    goal = rows["scratch", budgets[-1]][0]
    reached = next((b for b in budgets if rows["fine-tuned", b][0] >= goal), None)
    if reached:
        ratio = _minutes(reached) / _minutes(budgets[-1])
        print(f"\nfine-tuning reached scratch's {budgets[-1]} AP50 ({goal:.3f}) at {reached}: "
              f"{ratio:.2f} of the time (target <= 0.25)")
    else:
        print(f"\nfine-tuning did not reach scratch's {budgets[-1]} AP50 ({goal:.3f}) within the budgets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
