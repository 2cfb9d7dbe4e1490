"""What ``detect predict`` writes: per-image records, GeoJSON, drawings, the
gathered CSV / COCO files, and the fingerprint that ties an output folder to
the model and settings that produced it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
from collections import Counter
from pathlib import Path

import cv2

from detect.imagery.drawing import DEFAULT_STYLE, MAX_DRAW_PIXELS, DrawStyle, draw
from detect.structures import detection_rows, image_ids_by_file_name, read_record, xywh
from detect.util import atomic
from detect.util.files import read_json

#: The fingerprint file of a prediction output folder.
FINGERPRINT = "predict.json"


def output_stem(path: Path, all_paths: list[Path]) -> str:
    """Output name: the file's stem; ``FOLDER__STEM`` when stems collide across folders, and
    ``FOLDER__STEM_EXT`` when they collide in one folder (``site.jpg`` beside ``site.png``)."""
    same = [p for p in all_paths if p.stem == path.stem]
    if len(same) == 1:
        return path.stem
    name = f"{path.parent.name}__{path.stem}"
    if sum(1 for p in same if p.parent.name == path.parent.name) == 1:
        return name
    return f"{name}_{path.suffix.lstrip('.').lower()}"


def geojson(det: dict, names, transform, crs, file: str) -> dict:
    """FeatureCollection of box polygons in the raster's CRS (pixel corners -> map).

    Rings are counter-clockwise in map coordinates (the right-hand rule of
    RFC 7946): a north-up transform mirrors the y axis, so the pixel corners
    are visited in the mirrored order then.
    """
    features = []
    mirrored = transform.a * transform.e - transform.b * transform.d < 0
    for (x0, y0, x1, y1), lab, score in zip(det["boxes"], det["labels"], det["scores"]):
        corners = ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))
        ring = [transform @ (float(x), float(y)) for x, y in (corners[::-1] if mirrored else corners)]
        features.append({"type": "Feature",
                         "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
                         "properties": {"label": names[int(lab)], "score": round(float(score), 5),
                                        "file": file}})
    return {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs.to_string()}},
            "features": features}




def write_scene(out_dir: Path, stem: str, f: Path, source, det: dict, names, save_images: bool,
                style: DrawStyle = DEFAULT_STYLE) -> None:
    """A scene's outputs: GeoJSON (georeferenced), annotated image (``save_images``), then its record.

    The record ``detections/STEM.json`` (pixel boxes, and the scene's CRS as
    WKT and affine transform when georeferenced) is written last: it marks
    the scene done for a resumed run.
    """
    record = {"file": str(f), "width": int(source.width), "height": int(source.height),
              "detections": detection_rows(det, names)}
    if source.transform is not None:
        (out_dir / "geojson").mkdir(exist_ok=True)
        atomic.write_bytes(out_dir / "geojson" / f"{stem}.geojson",
                           json.dumps(geojson(det, names, source.transform, source.crs, str(f))).encode())
        record.update(crs=source.crs.to_wkt(), transform=list(source.transform)[:6])
    if save_images:
        if source.height * source.width > MAX_DRAW_PIXELS:
            print(f"\nnote: {f} is too large to draw ({source.width}x{source.height}); "
                  f"no annotated image", file=sys.stderr)
        else:
            full = source.read(0, 0, source.width, source.height)
            ok, buf = cv2.imencode(".jpg", draw(full, det, names, style))
            atomic.write_bytes(out_dir / "images" / f"{stem}.jpg", buf.tobytes())
    atomic.write_bytes(out_dir / "detections" / f"{stem}.json", json.dumps(record).encode())


def model_digest(model) -> str:
    """What a rerun into the same folder must match besides its post-processing (fingerprinted on
    its own, so a changed threshold is named as such): the
    :class:`~detect.models.detector.Detector`'s ``digest(postprocess=False)``."""
    return model.digest(postprocess=False)


def run_fingerprint(model, options, *, bands, stride: int, gsd_match: bool) -> dict:
    """The model, post-processing and settings that shape a predict folder's results (drawing
    options do not): a rerun reuses results only when all of them match."""
    from dataclasses import asdict

    pp = json.loads(json.dumps(asdict(model.model_config.postprocess)))  # as it reads back from the file
    return {"model": model_digest(model), "postprocess": pp,
            "tile": options.tile, "overlap": options.overlap, "align": options.align, "scale": options.scale,
            "bands": list(bands) if bands else None, "stride": stride, "gsd_match": gsd_match}


def _default_postprocess() -> dict:
    """The default post-processing as a fingerprint records it (a setting added to
    ``PostprocessConfig`` is off by default, so an older run without it had it off)."""
    from dataclasses import asdict

    from detect.config import PostprocessConfig

    return json.loads(json.dumps(asdict(PostprocessConfig())))


def _difference(key: str, old, new) -> str:
    """One changed fingerprint entry in words: ``another model``, ``score_threshold 0.05 there,
    0.3 now``, ``tile 512 there, 256 now``."""
    if key == "model":
        return "another model (other weights or architecture)"
    if key == "postprocess" and isinstance(old, dict) and isinstance(new, dict):
        changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if "class_thresholds" in changed and "calibration" in changed:
            changed.remove("calibration")  # where thresholds came from: the thresholds say it
        changed.sort(key=lambda k: k != "score_threshold")  # the usual change first
        return ", ".join(f"{k} {old.get(k)} there, {new.get(k)} now" for k in changed)
    return f"{key} {old} there, {new} now"


#: Held in an output folder while one ``detect predict`` writes it (sharded jobs share folders
#: by design and take none).
LOCK = ".predict.lock"


@contextlib.contextmanager
def output_lock(out_dir: Path):
    """Hold ``out_dir`` for this process: a second ``detect predict`` into it is refused, naming
    the first (its pid, host and start). A lock left by a run that is gone (killed; same host,
    no such process) is taken over with a note."""
    import os
    import socket
    import time

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                other = json.loads(path.read_text())
            except (OSError, ValueError):  # half-written by a run killed at that instant
                other = {}
            if _alive(other, me["host"]):
                raise FileExistsError(
                    f"{out_dir} is being written by another detect predict (pid {other.get('pid')} on "
                    f"{other.get('host')}, since {other.get('started')}): wait for it to finish, or "
                    f"choose another --out (if that run is gone, delete {path})") from None
            print(f"note: {out_dir}: a run that is gone left its lock (pid {other.get('pid')}, since "
                  f"{other.get('started')}); taking over", file=sys.stderr)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise FileExistsError(f"{out_dir}: could not take {path} (other runs keep taking it)")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(lock: dict, host: str) -> bool:
    """Whether the process a lock names still runs: checked on this host; on another host,
    assumed (it cannot be checked from here)."""
    import os

    pid = lock.get("pid")
    if not isinstance(pid, int):
        return False
    if lock.get("host") != host:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def claim_output(out_dir: Path, fingerprint: dict, *, overwrite: bool) -> None:
    """Tie ``out_dir`` to the model and settings in ``fingerprint`` (written to :data:`FINGERPRINT`).

    Results already in ``out_dir`` are reused by a rerun only when they came
    from the same model and settings; otherwise this refuses, naming what
    differs, unless ``overwrite`` (then everything is redone).
    """
    check_output(out_dir, fingerprint, overwrite=overwrite)
    atomic.write_json(out_dir / FINGERPRINT, fingerprint)


def check_output(out_dir: Path, fingerprint: dict, *, overwrite: bool) -> None:
    """What :func:`claim_output` refuses, raised before anything is written (a run that first
    writes a file of its own into ``out_dir``, as ``--mosaic`` does, checks here first)."""
    path = out_dir / FINGERPRINT
    done = out_dir / "detections"
    if path.is_file() and not overwrite:
        old = read_json(path, "run fingerprint", "pass --overwrite to redo the folder's results")
        if isinstance(old.get("postprocess"), dict):  # a setting added since: that run had its default
            old["postprocess"] = {**_default_postprocess(), **old["postprocess"]}
        differs = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        if differs:
            what = "; ".join(_difference(k, old.get(k), fingerprint.get(k)) for k in differs)
            raise FileExistsError(
                f"{out_dir} holds results made with other settings ({what}; {path}): pass --overwrite "
                f"to redo them, or choose another --out")
    elif not path.is_file() and done.is_dir() and any(done.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} holds results without a {FINGERPRINT} (from an older detect?): "
                              f"pass --overwrite to redo them, or choose another --out")


def id_map_for(model, gt: dict | None) -> dict:
    """How gathered results name images and categories (see :func:`predict_files`)."""
    names = model.class_names
    if gt is not None:
        from detect.inference.coco_dataset import label_to_category

        return {"categories": label_to_category(model, gt), "images": image_ids_by_file_name(gt),
                "category_names": {c["id"]: c["name"] for c in gt["categories"]}}
    ids = list(model.model_config.input.category_ids) or list(range(len(names)))
    return {"categories": ids, "images": None, "category_names": dict(zip(ids, names))}


def gather(out_dir: Path, files: list[Path], names, id_map: dict | None = None) -> Counter:
    """Rebuild detections.csv, coco_results.json and images.json from per-image files.

    ``id_map`` (from :func:`id_map_for`): category ids per class index, and
    optionally the ground truth's image ids by file name; without it image
    ids count from 1 and category ids are class indices.
    """
    id_map = id_map or {"categories": list(range(len(names))), "images": None,
                        "category_names": dict(enumerate(names))}
    rows, results, images, counts = [], [], [], Counter()
    image_id, unmatched = 0, []
    for f in files:
        path = out_dir / "detections" / f"{output_stem(f, files)}.json"
        if not path.exists():
            continue
        rec = read_record(path)
        for name, boxes in rec.units():  # a video: one "image" per processed frame, FILE#frame=N
            image_id += 1
            iid = image_id
            if id_map["images"] is not None:
                found = id_map["images"].get(Path(name).name, [])
                if len(found) != 1:
                    unmatched.append(f"{name} ({'no' if not found else len(found)} ground-truth images "
                                     f"named {Path(name).name})")
                    continue
                iid = found[0]
            images.append({"id": iid, "file_name": name, "width": rec.width, "height": rec.height})
            counts.update(_append_rows(rows, results, iid, name, boxes.rows, id_map["categories"]))
    if unmatched:
        print(f"warning: {len(unmatched)} input(s) left out of coco_results.json, no unique match in "
              f"the ground truth by file name: {', '.join(unmatched[:5])}", file=sys.stderr)
    return _write_gathered(out_dir, rows, results, images, id_map["category_names"], counts)


def _append_rows(rows, results, image_id, name, dets, category_ids) -> Counter:
    counts = Counter()
    for d in dets:
        rows.append([name, *d["box"], d["label"], d["score"]])
        results.append({"image_id": image_id, "category_id": int(category_ids[d["label_id"]]),
                        "bbox": xywh(d["box"], 2), "score": d["score"]})
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
