#!/usr/bin/env python
"""Run ``detect`` against a corpus of bad or tricky inputs and check each outcome.

Every case is a command line run in a fresh process, with the exit code it
must give (0 done, 1 done with some inputs failed, 2 refused with a message)
and a piece of text its output must contain. No case may print a Python
traceback or TensorFlow's native log lines, hang (each has a time limit) or
die from a signal. The corpus covers train, predict, evaluate and export;
the data is generated in ``--work``.

    python tools/bad_inputs.py [--work /tmp/detect_bad_inputs] [--only train]

Prints one line per case and the counts; exits 1 if any case failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from make_synthetic import make_dataset  # noqa: E402

TINY = ["model.backbone_width=8", "model.fpn_channels=16", "model.head_convs=1", "train.epochs=1",
        "train.batch_size=2", "data.resize=fixed", "data.image_size=64"]


def _sets(items):
    return [x for s in items for x in ("--set", s)]


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, (dict, list)):
        path.write_text(json.dumps(data))
    elif isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def _variant(base: dict, images: Path, work: Path, name: str, edit) -> Path:
    """A copy of the annotation file (and image folder, when ``edit`` changes files) with one defect."""
    coco = json.loads(json.dumps(base))
    folder = work / "cases" / name
    shutil.copytree(images, folder / "images", dirs_exist_ok=True)
    edit(coco, folder / "images")
    return _write(folder / "ann.json", coco)


def _bbox(value):
    def edit(coco, _):
        coco["annotations"][0]["bbox"] = value
    return edit


def _truncate_image(coco, images: Path):
    f = images / coco["images"][0]["file_name"]
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])


def _resize_image(coco, images: Path):
    f = images / coco["images"][0]["file_name"]
    cv2.imwrite(str(f), cv2.resize(cv2.imread(str(f)), (40, 50)))


def _corrupt_image(coco, images: Path):
    (images / coco["images"][0]["file_name"]).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))


def _missing_image(coco, images: Path):
    (images / coco["images"][0]["file_name"]).unlink()


def build_cases(work: Path) -> list[tuple[str, list[str], int, str]]:
    """``[(name, argv after 'detect', expected exit code, expected text), ...]``."""
    ann = make_dataset(work / "data", images=6, size=64, seed=4)
    images = work / "data" / "images"
    base = json.loads(Path(ann).read_text())
    train = ["train", "--train-images"]

    def train_case(name, edit, code, text, extra=()):
        a = _variant(base, images, work, name, edit)
        out = work / "runs" / name
        return (f"train: {name}", ["train", "--train-ann", str(a), "--train-images", str(a.parent / "images"),
                                   "--out", str(out), *_sets(TINY), *extra], code, text)

    cases = [
        train_case("truncated jpeg", _truncate_image, 0, "truncated or corrupt"),
        train_case("size differs from listed", _resize_image, 0, "is 40x50 but the annotations say 64x64"),
        train_case("corrupt png", _corrupt_image, 0, "unreadable_image"),
        train_case("missing image", _missing_image, 0, "missing_image"),
        train_case("bbox with a letter", _bbox(["a", 20, 40, 30]), 0, "has a value that is not a number"),
        train_case("bbox of 3 numbers", _bbox([1, 2, 3]), 0, "is not [x, y, w, h]"),
        train_case("bbox with NaN", _bbox([float("nan"), 1, 5, 5]), 0, "has NaN/inf"),
        train_case("bbox negative width", _bbox([10, 10, -5, 5]), 0, "non-positive width/height"),
        train_case("bbox outside image", _bbox([500, 500, 5, 5]), 0, "lies outside the"),
        train_case("bbox partly outside", _bbox([60, 60, 20, 20]), 0, "clipped to it"),
        train_case("unknown category", lambda c, _: c["annotations"][0].update(category_id=999), 0,
                   "unknown category id 999"),
        train_case("annotation on unknown image", lambda c, _: c["annotations"][0].update(image_id=999), 0,
                   "no such image"),
        train_case("problem under --strict", _bbox([1, 2, 3]), 2, "problem(s) with --strict", ["--strict"]),
        train_case("duplicate image ids", lambda c, _: c["images"][1].update(id=c["images"][0]["id"]), 2,
                   "duplicate image id"),
        train_case("file_name escapes the folder", lambda c, _: c["images"][0].update(file_name="../x.png"), 2,
                   "escapes"),
        train_case("--bands beyond the images' count", lambda c, _: None, 2,
                   "band 5 of --bands (model.bands) 1,2,5 does not exist", ["--bands", "1,2,5"]),
        train_case("no categories", lambda c, _: c.update(categories=[]), 2, "no categories"),
        train_case("all boxes tiny", lambda c, _: [a.update(bbox=[10, 10, 1, 1]) for a in c["annotations"]], 2,
                   "the model could learn nothing"),
        ("train: annotation file empty", [*train, str(images), "--train-ann", str(_write(work / "empty.json", "")),
                                          "--out", str(work / "runs" / "e")], 2, "not valid JSON"),
        ("train: annotation not COCO", [*train, str(images), "--train-ann", str(_write(work / "list.json", [1])),
                                        "--out", str(work / "runs" / "l")], 2, "not a COCO instances file"),
        ("train: annotation file missing", [*train, str(images), "--train-ann", str(work / "nope.json"),
                                            "--out", str(work / "runs" / "m")], 2, "no such file"),
        ("train: image folder missing", ["train", "--train-ann", str(ann), "--train-images", str(work / "nope"),
                                         "--out", str(work / "runs" / "f")], 2, "no such folder"),
        ("train: --out not empty", [*train, str(images), "--train-ann", str(ann), "--out", str(work / "data")],
         2, "exists and is not empty"),
        ("train: --overwrite a non-run", [*train, str(images), "--train-ann", str(ann), "--out", str(work / "data"),
                                          "--overwrite"], 2, "is not a detect run folder"),
        ("train: --resume a non-run", ["train", "--resume", str(work / "data")], 2, "is not a detect run folder"),
        ("train: bad --time-budget", [*train, str(images), "--train-ann", str(ann), "--out", str(work / "runs" / "b"),
                                      "--time-budget", "abc"], 2, "abc"),
        ("train: budget shorter than any set-up", [*train, str(images), "--train-ann", str(ann), "--out",
                                                   str(work / "runs" / "s"), *_sets(TINY), "--time-budget", "5s"],
         2, "shorter than the set-up alone"),
        ("train: recipe name misspelt", [*train, str(images), "--train-ann", str(ann), "--out", str(work / "runs" / "r"),
                                         "--config", "aerial-cpuu"], 2, "did you mean aerial-cpu?"),
        ("train: --train-ann and --train-images swapped", ["train", "--train-ann", str(images), "--train-images",
                                                           str(ann), "--out", str(work / "runs" / "w")], 2,
         "swapped?"),
        ("train: unknown --set key", [*train, str(images), "--train-ann", str(ann), "--out", str(work / "runs" / "k"),
                                      "--set", "train.epoch=3"], 2, "train.epoch"),
        ("train: bad --set value", [*train, str(images), "--train-ann", str(ann), "--out", str(work / "runs" / "v"),
                                    "--set", "train.batch_size=0"], 2, "batch_size"),
        ("train: config not YAML", [*train, str(images), "--train-ann", str(ann), "--out", str(work / "runs" / "y"),
                                    "--config", str(_write(work / "bad.yaml", "model: [1, 2"))], 2, "not valid YAML"),
    ]

    # a small model to predict, evaluate and export with
    model = work / "tiny.keras"
    if not model.is_file():
        subprocess.run([sys.executable, "-c",
                        "from detect.models import build_retinanet\nfrom detect.config import ModelConfig\n"
                        "build_retinanet(ModelConfig(num_classes=3, backbone_width=8, fpn_channels=16, "
                        f"head_convs=1)).save({str(model)!r})"], check=True, capture_output=True)
    raw = model.read_bytes()
    rand = _write(work / "random.keras", bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8)))
    cut = _write(work / "cut.keras", raw[: len(raw) // 2])
    other_zip = work / "other.keras"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("weights.bin", b"x")
    folder = work / "predict_in"
    shutil.copytree(images, folder, dirs_exist_ok=True)
    _write(folder / "broken.png", b"not a png")
    _write(folder / "fake.mp4", b"not a video")
    empty = work / "empty_folder"
    empty.mkdir(exist_ok=True)
    one = str(next(images.iterdir()))
    pred = ["predict", "--model", str(model)]
    cut_jpeg = work / "predict_jpeg"  # a good JPEG beside one cut in half
    cut_jpeg.mkdir(exist_ok=True)
    ok, buf = cv2.imencode(".jpg", cv2.imread(one))
    _write(cut_jpeg / "whole.jpg", buf.tobytes())
    _write(cut_jpeg / "cut.jpg", buf.tobytes()[: len(buf) // 2])
    locked = work / "p_locked"  # held by a live process on this host: this one
    import os
    import socket

    _write(locked / ".predict.lock", {"pid": os.getpid(), "host": socket.gethostname(), "started": "now"})
    cases += [
        ("predict: model missing", ["predict", "--model", str(work / "no.keras"), "--out", str(work / "p0"), one], 2,
         "does not exist"),
        ("predict: model of random bytes", ["predict", "--model", str(rand), "--out", str(work / "p0"), one], 2,
         "is not a .keras model file"),
        ("predict: model truncated", ["predict", "--model", str(cut), "--out", str(work / "p0"), one], 2,
         "is not a .keras model file"),
        ("predict: zip that is not a model", ["predict", "--model", str(other_zip), "--out", str(work / "p0"), one],
         2, "not a .keras model file (no config.json"),
        ("predict: model is a folder", ["predict", "--model", str(work), "--out", str(work / "p0"), one], 2,
         "is a folder"),
        ("predict: input missing", [*pred, "--out", str(work / "p1"), str(work / "nothing.png")], 2,
         "is not a file, folder or matching glob"),
        ("predict: empty folder", [*pred, "--out", str(work / "p1"), str(empty)], 2, "no images found"),
        ("predict: broken image and fake video among good ones", [*pred, "--out", str(work / "p2"), str(folder)], 1,
         "2 failed"),
        ("predict: rerun with other settings", [*pred, "--out", str(work / "p2"), "--score-threshold", "0.3",
                                                str(folder)], 2, "score_threshold 0.05 there, 0.3 now"),
        ("predict: truncated JPEG among good ones", [*pred, "--out", str(work / "p7"), str(cut_jpeg)], 1,
         "truncated or corrupt"),
        ("predict: folder in use by another predict", [*pred, "--out", str(locked), one], 2,
         "being written by another detect predict"),
        ("predict: tile of 100000", [*pred, "--out", str(work / "p3"), "--tile", "100000", one], 2,
         "must be at most 4096 pixels"),
        ("predict: overlap out of range", [*pred, "--out", str(work / "p3"), "--overlap", "1.5", one], 2, "overlap"),
        ("predict: tile of 0", [*pred, "--out", str(work / "p3"), "--tile", "0", one], 2, "tile"),
        ("predict: scale of 0", [*pred, "--out", str(work / "p3"), "--scale", "0", one], 2, "scale must be > 0"),
        ("predict: bands not numbers", [*pred, "--out", str(work / "p3"), "--bands", "r,g,b", one], 2,
         "bands must be comma-separated"),
        ("predict: two bands for an RGB model", [*pred, "--out", str(work / "p3"), "--bands", "1,2", one], 2,
         "the model takes 3 band(s), got 2"),
        ("predict: band beyond the image's count", [*pred, "--out", str(work / "p4"), "--bands", "1,2,9", one], 1,
         "band 9 of --bands 1,2,9 does not exist"),
        ("predict: score threshold 1.5", [*pred, "--out", str(work / "p3"), "--score-threshold", "1.5", one], 2,
         "score_threshold"),
        ("predict: shard 3/2", [*pred, "--out", str(work / "p6"), "--shard", "3/2", one], 2,
         "must be below 2"),
        ("predict: shard 0/0", [*pred, "--out", str(work / "p6"), "--shard", "0/0", one], 2,
         "the number of shards must be at least 1"),
        ("predict: ray address nobody answers", [*pred, "--out", str(work / "p6"), "--engine", "ray",
                                                 "--address", "127.0.0.1:9", one], 2, "no Ray head answers there"),
        ("merge: folder without a job", ["merge", str(work / "p3")], 2, "has no job.json"),
        ("predict --mosaic: a JPEG among the rasters", [*pred, "--out", str(work / "p8"), "--mosaic", one], 2,
         "mosaic joins georeferenced rasters"),
    ]
    try:
        import rasterio
        from rasterio.transform import from_origin
    except ImportError:  # the [geo] extra
        rasterio = None
    if rasterio is not None:
        tifs = []
        for name, crs in (("a", "EPSG:32633"), ("b", "EPSG:32634")):
            tifs.append(work / f"mosaic_{name}.tif")
            with rasterio.open(tifs[-1], "w", driver="GTiff", height=64, width=64, count=3, dtype="uint8", crs=crs,
                               transform=from_origin(500000 + 32 * len(tifs), 4000000, 0.5, 0.5)) as ds:
                ds.write(np.zeros((3, 64, 64), np.uint8))
        cases.append(("predict --mosaic: rasters in two CRSs", [*pred, "--out", str(work / "p8"), "--mosaic",
                                                                *map(str, tifs)], 2,
                      "mosaic_b.tif: cannot join the mosaic: it is in EPSG:32634"))
    yolo = work / "yolo"
    yolo.mkdir(exist_ok=True)
    _write(yolo / "classes.txt", "car\n")
    stem = Path(base["images"][0]["file_name"]).stem
    _write(yolo / f"{stem}.txt", "0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.1 0.1\n")
    cases += [
        ("convert: YOLO class id beyond the classes", ["convert", "--from", "yolo", str(yolo), "--images", str(images),
                                                      "--out", str(work / "y.json")], 2,
         f"{stem}.txt: line 2: class id 3 is not in the 1 classes"),
        ("convert: CSV without the DeepForest columns", ["convert", "--from", "csv", str(_write(work / "x.csv", "a,b\n")),
                                                        "--images", str(images), "--out", str(work / "c.json")], 2,
         "missing column(s) image_path"),
        ("slice: --min-visible 0", ["slice", "--ann", str(ann), "--images", str(images), "--out", str(work / "chips"),
                                    "--min-visible", "0"], 2, "--min-visible must be in (0, 1]"),
        ("doctor: annotation file missing", ["doctor", str(work / "nope.json"), "--images", str(images)], 2,
         "nope.json"),
    ]
    gt = Path(ann)
    good = work / "dt.json"
    _write(good, [{"image_id": base["images"][0]["id"], "category_id": base["categories"][0]["id"],
                   "bbox": [1, 1, 5, 5], "score": 0.5}])
    ev = ["evaluate", "--ann", str(gt)]
    cases += [
        ("evaluate: detections on unknown image", [*ev, "--predictions", str(_write(
            work / "dt_bad.json", [{"image_id": 12345, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.5}]))],
         2, "12345"),
        ("evaluate: predictions not JSON", [*ev, "--predictions", str(_write(work / "dt.txt", "{"))], 2, "JSON"),
        ("evaluate: built-in area-range name", [*ev, "--predictions", str(good), "--area-ranges", "small:0:4"], 2,
         "is built in"),
        ("evaluate: two maxDets", [*ev, "--predictions", str(good), "--max-dets", "1,10"], 2, "--max-dets"),
        ("evaluate: --model without --images", [*ev, "--model", str(model)], 2, "--images"),
        ("evaluate: --report that exists", [*ev, "--predictions", str(good), "--report", str(good)], 2,
         "exists: pass --overwrite"),
        ("evaluate: --ann and --images swapped", ["evaluate", "--ann", str(images), "--images", str(gt),
                                                  "--predictions", str(good)], 2, "swapped?"),
        ("evaluate: --iou-threshold without --model", [*ev, "--predictions", str(good), "--iou-threshold", "0.3"],
         2, "apply with --model only"),
        ("evaluate: empty detections", [*ev, "--predictions", str(_write(work / "none.json", []))], 0,
         "no detections to evaluate"),
        ("export: model truncated", ["export", "--model", str(cut), "--out", str(work / "x1")], 2,
         "is not a .keras model file"),
        ("export: --out not empty", ["export", "--model", str(model), "--out", str(work / "data")], 2,
         "exists and is not empty"),
        ("export: int8 without calibration images", ["export", "--model", str(model), "--format", "tflite",
                                                     "--quantize", "int8", "--out", str(work / "q.tflite")], 2,
         "needs calibration images (--calibration DIR)"),
        ("export: --quantize for a SavedModel", ["export", "--model", str(model), "--quantize", "int8",
                                                 "--out", str(work / "x2")], 2, "applies to --format tflite only"),
    ]
    lite = work / "tiny.tflite"
    if not lite.is_file():
        subprocess.run([sys.executable, "-m", "detect", "export", "--model", str(model), "--format", "tflite",
                        "--out", str(lite)], check=True, capture_output=True)
    junk = _write(work / "junk.tflite", bytes(np.random.default_rng(1).integers(0, 256, 4000, np.uint8)))
    cases += [
        ("predict: .tflite of random bytes", ["predict", "--model", str(junk), "--out", str(work / "p5"), one], 2,
         "is not a TFLite flatbuffer"),
        ("predict: .tflite with score threshold 1.5", ["predict", "--model", str(lite), "--out",
                                                         str(work / "p5"), "--score-threshold", "1.5", one], 2,
         "score_threshold"),
    ]
    return cases


def run_case(argv: list[str], limit: float) -> tuple[int | None, str, float]:
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "detect", *argv], capture_output=True, text=True,
                           timeout=limit, cwd=ROOT)
        return r.returncode, r.stdout + r.stderr, time.perf_counter() - t0
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode(errors="replace") + (err.stderr or b"").decode(errors="replace")
        return None, out, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/detect_bad_inputs"))
    p.add_argument("--only", help="run only cases whose name starts with this (train, predict, ...)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per case")
    args = p.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    cases = [c for c in build_cases(args.work) if not args.only or c[0].startswith(args.only)]
    failed = 0
    for name, cmd, want, text in cases:
        code, out, seconds = run_case(cmd, args.timeout)
        problems = []
        if code is None:
            problems.append(f"no exit after {args.timeout:.0f} s")
        elif code != want:
            problems.append(f"exit {code}, expected {want}")
        if text not in out:
            problems.append(f"output lacks {text!r}")
        if "Traceback" in out:
            problems.append("traceback")
        if "I0000" in out or "E0000" in out:
            problems.append("native log lines")
        failed += bool(problems)
        print(f"{'FAIL' if problems else 'ok  '} {name:<52} exit {code} in {seconds:5.1f}s"
              + (f"  <- {'; '.join(problems)}" if problems else ""), flush=True)
        if problems:
            print("     " + "\n     ".join(out.strip().splitlines()[-6:]), flush=True)
    print(f"\n{len(cases) - failed} of {len(cases)} cases behaved as expected")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
