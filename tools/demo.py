#!/usr/bin/env python
"""The main job on the bundled sample data (``make demo``); no downloads.

1. ``detect train`` on ``data/sample`` (48 generated aerial scenes) with
   ``data/sample_config.yaml``, validating on ``data/sample_val`` each epoch;
2. ``detect evaluate`` of the trained model on ``data/sample_val``
   (COCO statistics, per-class table, operating point, report, plots, and
   ``view.html``: the detections over the scenes, TP / FP / missed);
3. annotated validation scenes with the detections above the best-F1 threshold;
4. ``detect predict`` over a larger bundled scene (``data/sample_scene``,
   1024 x 1024, tiled) at the per-class thresholds training calibrated on the
   validation set: CSV, COCO results, annotated image, ``scene/view.html``.

Everything lands in ``--out`` (default ``out/demo``). An existing run there is
reused (``--retrain`` starts over).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# like the detect command: TensorFlow loads inside its log filter, not at `import detect`
os.environ.setdefault("DETECT_DEFER_IMPORT", "1")

import cv2  # noqa: E402

from detect.cli.main import main as detect  # noqa: E402
from detect.training.runs import RunFolder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COLOURS = [(0, 200, 255), (255, 80, 80), (80, 255, 80), (255, 255, 0)]


def draw(val_dir: Path, detections: list, threshold: float, names: dict, out_dir: Path, limit=6):
    out_dir.mkdir(parents=True, exist_ok=True)
    gt = json.loads((val_dir / "annotations.json").read_text())
    for im in gt["images"][:limit]:
        img = cv2.imread(str(val_dir / "images" / im["file_name"]))
        for d in detections:
            if d["image_id"] != im["id"] or d["score"] < threshold:
                continue
            x, y, w, h = map(int, d["bbox"])
            c = COLOURS[d["category_id"] % len(COLOURS)]
            cv2.rectangle(img, (x, y), (x + w, y + h), c, 1)
            cv2.putText(img, f"{names[d['category_id']]} {d['score']:.2f}", (x, max(8, y - 2)),
                        cv2.FONT_HERSHEY_PLAIN, 0.7, c, 1)
        cv2.imwrite(str(out_dir / im["file_name"]), img)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    p.add_argument("--retrain", action="store_true", help="discard an existing run and train again")
    args = p.parse_args(argv)
    train_dir, val_dir = ROOT / "data" / "sample", ROOT / "data" / "sample_val"
    run = args.out / "run"
    if args.retrain and run.exists():
        shutil.rmtree(run)
    if not (run / "model.keras").is_file():
        resume = bool(RunFolder(run).committed())  # an interrupted demo continues
        cmd = ["train", "--resume", str(run)] if resume else [
            "train", "--train-ann", str(train_dir / "annotations.json"),
            "--train-images", str(train_dir / "images"),
            "--val-ann", str(val_dir / "annotations.json"), "--val-images", str(val_dir / "images"),
            "--config", str(ROOT / "data" / "sample_config.yaml"), "--out", str(run)]
        if detect(cmd):
            return 1
    else:
        print(f"using the trained model in {run} (--retrain to train again)")
    report = args.out / "report.json"
    if detect(["evaluate", "--ann", str(val_dir / "annotations.json"), "--model", str(run / "model.keras"),
               "--images", str(val_dir / "images"), "--save-predictions", str(args.out / "detections.json"),
               "--report", str(report), "--plots", str(args.out / "plots"), "--html", str(args.out / "view.html"),
               "--overwrite"]):  # the demo's own outputs of an earlier run
        return 1
    rep = json.loads(report.read_text())
    names = {c["category_id"]: c["name"] for c in rep["per_class"]}
    threshold = rep["operating_point"]["overall"]["score_threshold"] or 0.5
    draw(val_dir, json.loads((args.out / "detections.json").read_text()), threshold, names,
         args.out / "annotated")
    # the model carries the per-class score thresholds its validation set calibrated: predict
    # writes the scene's outputs at them (and says so)
    if detect(["predict", "--model", str(run / "model.keras"), "--out", str(args.out / "scene"),
               "--tile", "256", "--overlap", "0.25",
               "--save-images", "--html", "--overwrite", str(ROOT / "data" / "sample_scene" / "images")]):
        return 1
    print(f"\nvalidation AP50 {rep['stats'][1]:.3f}, AP {rep['stats'][0]:.3f}; annotated scenes "
          f"(score >= {threshold:.2f}) in {args.out / 'annotated'}; "
          f"tiled detection over data/sample_scene in {args.out / 'scene'}; open {args.out / 'view.html'} "
          f"in a browser to page through the validation detections")
    return 0


if __name__ == "__main__":
    from detect.util.quiet import NativeLogFilter

    if "--verbose" in sys.argv:
        sys.exit(main([a for a in sys.argv[1:] if a != "--verbose"]))
    with NativeLogFilter():  # TensorFlow's native start-up lines, as the detect command hides them
        code = main()
    sys.exit(code)
