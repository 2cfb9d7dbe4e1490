"""``detect predict`` over images, folders and globs, with resumable outputs.

Per input image ``NAME`` the run writes ``OUT/detections/NAME.json`` (boxes
in pixels, class names, scores) atomically; for a georeferenced raster also
``OUT/geojson/NAME.geojson`` (box polygons in the raster's CRS through its
affine transform, with label and score properties); and with
``save_images`` ``OUT/images/NAME.jpg`` (annotated; skipped, with a
message, for rasters over ``MAX_DRAW_PIXELS``). A rerun skips inputs whose detections
file exists unless ``overwrite``. At the end the per-image files are
gathered into ``OUT/detections.csv`` (file, xmin, ymin, xmax, ymax, label,
score), ``OUT/coco_results.json`` (COCO results, xywh) and
``OUT/images.json`` (image id -> file), all rebuilt from the per-image files
so an interrupted and resumed run lists every image exactly once.
Unreadable inputs are reported and skipped; the return value counts them.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from detect import atomic
from detect.inference.predictor import (
    DEFAULT_TILES,
    CapCount,
    TileOptions,
    detect_image,
    detect_source,
)
from detect.inference.sources import open_source

MAX_DRAW_PIXELS = 64_000_000
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v"}
INPUT_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES
COLOURS = [(255, 64, 64), (64, 200, 255), (80, 255, 80), (255, 220, 0), (220, 80, 255), (255, 140, 0)]


def expand_sources(sources: list[str]) -> list[Path]:
    """Files from image paths, folders (non-recursive) and glob patterns, in order, once each."""
    out: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in INPUT_SUFFIXES)
        elif any(c in src for c in "*?["):
            out += sorted(Path(f) for f in glob.glob(src, recursive=True)
                          if Path(f).suffix.lower() in INPUT_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"input {src!r} is not a file, folder or matching glob")
    seen, unique = set(), []
    for f in out:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    if not unique:
        raise FileNotFoundError(f"no images found in {sources}")
    return unique


def _stem(path: Path, all_paths: list[Path]) -> str:
    """Output name; disambiguated with the parent folder when stems collide."""
    same = sum(1 for p in all_paths if p.stem == path.stem)
    return path.stem if same == 1 else f"{path.parent.name}__{path.stem}"


def draw(image: np.ndarray, det: dict, names) -> np.ndarray:
    """Annotated BGR copy (class colours, names and scores)."""
    out = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    for (x0, y0, x1, y1), label, score in zip(det["boxes"], det["labels"], det["scores"]):
        c = COLOURS[int(label) % len(COLOURS)][::-1]
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), c, 1)
        cv2.putText(out, f"{names[int(label)]} {score:.2f}", (int(x0), max(10, int(y0) - 3)),
                    cv2.FONT_HERSHEY_PLAIN, 0.8, c, 1)
    return out


def geojson(det: dict, names, transform, crs, file: str) -> dict:
    """FeatureCollection of box polygons in the raster's CRS (pixel corners -> map)."""
    features = []
    for (x0, y0, x1, y1), lab, score in zip(det["boxes"], det["labels"], det["scores"]):
        ring = [transform @ (float(x), float(y)) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
        features.append({"type": "Feature",
                         "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
                         "properties": {"label": names[int(lab)], "score": round(float(score), 5),
                                        "file": file}})
    return {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs.to_string()}},
            "features": features}


def _records(det: dict, names) -> list[dict]:
    return [{"box": [round(float(v), 2) for v in b], "label": names[int(lab)], "label_id": int(lab),
             "score": round(float(s), 5)} for b, lab, s in zip(det["boxes"], det["labels"], det["scores"])]


def predict_video(model, path: Path, out_dir: Path, stem: str, options: TileOptions, *,
                  stride: int, save_images: bool) -> tuple[dict, CapCount]:
    """Every ``stride``-th frame; returns (record, cap counts). Annotated video if ``save_images``."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError("could not open the video (unsupported codec or not a video)")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer, tmp, frames, caps, index, size = None, None, [], CapCount(), 0, None
    names = model.class_names
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                if total and index < total:
                    print(f"\nwarning: {path}: frame {index} of {total} could not be decoded; "
                          f"stopping this video there", file=sys.stderr)
                break
            if index % stride == 0:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                size = (rgb.shape[1], rgb.shape[0])
                det = detect_image(model, rgb, options)
                caps.add(det)
                frames.append({"frame": index, "detections": _records(det, names)})
                if save_images:
                    if writer is None:
                        tmp = out_dir / "images" / f"{stem}.tmp.mp4"
                        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"),
                                                 max(fps / stride, 1.0), size)
                    writer.write(draw(rgb, det, names))
            index += 1
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if not frames:
        raise ValueError("no frame could be decoded")
    if tmp is not None:
        os.replace(tmp, out_dir / "images" / f"{stem}.mp4")
    return {"file": str(path), "width": size[0], "height": size[1], "stride": stride,
            "frames": frames}, caps


def _gsd_scale(model, source, options: TileOptions, gsd_match: bool, name) -> float | None:
    """Scale that brings a georeferenced raster to the model's training GSD (None: the rule's)."""
    want = model.model_config.input.gsd
    if not gsd_match or options.scale is not None or want is None or source.crs is None:
        return None
    from detect.inference.sources import transform_gsd

    have = transform_gsd(source.transform, source.crs)
    if have is None:
        print(f"\nnote: {name}: CRS {source.crs} is not projected; no GSD matching", file=sys.stderr)
        return None
    scale = have / want
    if abs(scale - 1) > 0.02:
        print(f"\nnote: {name}: {have:.4g} m/px resampled x{scale:.3g} to the model's {want:.4g} m/px "
              f"(--no-gsd-match to turn off)", file=sys.stderr)
    return scale


def predict_files(model, files: list[Path], out_dir: Path, options: TileOptions = DEFAULT_TILES, *,
                  save_images: bool = False, overwrite: bool = False,
                  bands: tuple[int, ...] | None = None, stride: int = 1, gsd_match: bool = True,
                  ground_truth: dict | None = None) -> dict:
    """Run over ``files``; returns a summary dict (see module doc for outputs).

    Post-processing (thresholds, cap) is the model's: change it with
    ``model.set_postprocess``. ``ground_truth`` (a COCO dict) makes
    ``coco_results.json`` use its image ids (matched by file name) and
    category ids (by class name); otherwise the model's category ids are used.
    """
    out_dir = Path(out_dir)
    (out_dir / "detections").mkdir(parents=True, exist_ok=True)
    if save_images:
        (out_dir / "images").mkdir(exist_ok=True)
    names = model.class_names
    failed, skipped, caps, t0 = [], 0, CapCount(), time.perf_counter()
    for f in tqdm(files, desc="predict", unit="image"):
        stem = _stem(f, files)
        target = out_dir / "detections" / f"{stem}.json"
        if target.exists() and not overwrite:
            skipped += 1
            continue
        if f.suffix.lower() in VIDEO_SUFFIXES:
            try:
                record, video_caps = predict_video(model, f, out_dir, stem, options,
                                                          stride=stride, save_images=save_images)
            except (OSError, ValueError) as err:
                failed.append(str(f))
                print(f"\nerror: {f}: {err} (skipped)", file=sys.stderr)
                continue
            caps.add(video_caps)
            atomic.write_bytes(target, json.dumps(record).encode())
            continue
        try:
            source = open_source(f, bands)
        except (OSError, ValueError) as err:
            failed.append(str(f))
            print(f"\nerror: {f}: {err} (skipped)", file=sys.stderr)
            continue
        try:
            det = detect_source(model, source, options, progress=True,
                                scale=_gsd_scale(model, source, options, gsd_match, f))
            caps.add(det)
            if source.transform is not None:
                (out_dir / "geojson").mkdir(exist_ok=True)
                atomic.write_bytes(out_dir / "geojson" / f"{stem}.geojson",
                              json.dumps(geojson(det, names, source.transform, source.crs, str(f))).encode())
            if save_images:
                if source.height * source.width > MAX_DRAW_PIXELS:
                    print(f"\nnote: {f} is too large to draw ({source.width}x{source.height}); "
                          f"no annotated image", file=sys.stderr)
                else:
                    full = source.read(0, 0, source.width, source.height)
                    ok, buf = cv2.imencode(".jpg", draw(full, det, names))
                    atomic.write_bytes(out_dir / "images" / f"{stem}.jpg", buf.tobytes())
        except (OSError, ValueError) as err:
            failed.append(str(f))
            print(f"\nerror: {f}: {err} (skipped)", file=sys.stderr)
            continue
        finally:
            source.close()
        record = {"file": str(f), "width": int(source.width), "height": int(source.height),
                  "detections": _records(det, names)}
        atomic.write_bytes(target, json.dumps(record).encode())  # written last: marks the input done
    seconds = time.perf_counter() - t0
    if caps.warning(model):
        print("\n" + caps.warning(model), file=sys.stderr)
    counts = gather(out_dir, files, names, id_map=_id_map(model, ground_truth))
    return {"images": len(files), "skipped_done": skipped, "failed": failed, "tiles": caps.tiles,
            "seconds": seconds, "objects_per_class": counts, "capped_tiles": caps.at_max,
            "top_k_capped_tiles": caps.at_top_k}


def _id_map(model, gt: dict | None) -> dict:
    """How gathered results name images and categories (see :func:`predict_files`)."""
    names = model.class_names
    if gt is not None:
        from detect.inference.coco_dataset import label_to_category

        by_file: dict[str, list[int]] = {}
        for im in gt["images"]:
            by_file.setdefault(Path(im["file_name"]).name, []).append(im["id"])
        return {"categories": label_to_category(model, gt), "images": by_file,
                "category_names": {c["id"]: c["name"] for c in gt["categories"]}}
    ids = list(model.model_config.input.category_ids) or list(range(len(names)))
    return {"categories": ids, "images": None, "category_names": dict(zip(ids, names))}


def gather(out_dir: Path, files: list[Path], names, id_map: dict | None = None) -> Counter:
    """Rebuild detections.csv, coco_results.json and images.json from per-image files.

    ``id_map`` (from :func:`_id_map`): category ids per class index, and
    optionally the ground truth's image ids by file name; without it image
    ids count from 1 and category ids are class indices.
    """
    id_map = id_map or {"categories": list(range(len(names))), "images": None,
                        "category_names": dict(enumerate(names))}
    rows, results, images, counts = [], [], [], Counter()
    image_id, unmatched = 0, []
    for f in files:
        path = out_dir / "detections" / f"{_stem(f, files)}.json"
        if not path.exists():
            continue
        rec = json.loads(path.read_text())
        # a video contributes one "image" per processed frame, named FILE#frame=N
        units = ([(f"{rec['file']}#frame={fr['frame']}", fr["detections"]) for fr in rec["frames"]]
                 if "frames" in rec else [(rec["file"], rec["detections"])])
        for name, dets in units:
            image_id += 1
            iid = image_id
            if id_map["images"] is not None:
                found = id_map["images"].get(Path(name).name, [])
                if len(found) != 1:
                    unmatched.append(f"{name} ({'no' if not found else len(found)} ground-truth images "
                                     f"named {Path(name).name})")
                    continue
                iid = found[0]
            images.append({"id": iid, "file_name": name, "width": rec["width"], "height": rec["height"]})
            counts.update(_append_rows(rows, results, iid, name, dets, id_map["categories"]))
    if unmatched:
        print(f"warning: {len(unmatched)} input(s) left out of coco_results.json, no unique match in "
              f"the ground truth by file name: {', '.join(unmatched[:5])}", file=sys.stderr)
    return _write_gathered(out_dir, rows, results, images, id_map["category_names"], counts)


def _append_rows(rows, results, image_id, name, dets, category_ids) -> Counter:
    counts = Counter()
    for d in dets:
        x0, y0, x1, y1 = d["box"]
        rows.append([name, x0, y0, x1, y1, d["label"], d["score"]])
        results.append({"image_id": image_id, "category_id": int(category_ids[d["label_id"]]),
                        "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)], "score": d["score"]})
        counts[d["label"]] += 1
    return counts


def _write_gathered(out_dir, rows, results, images, names, counts) -> Counter:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file", "xmin", "ymin", "xmax", "ymax", "label", "score"])
    w.writerows(rows)
    atomic.write_bytes(out_dir / "detections.csv", buf.getvalue().encode())
    atomic.write_bytes(out_dir / "coco_results.json", json.dumps(results).encode())
    categories = [{"id": int(i), "name": n} for i, n in names.items()]
    atomic.write_bytes(out_dir / "images.json", json.dumps({"images": images, "categories": categories}, indent=1).encode())
    return counts
