"""``detect predict`` over images, folders and globs, with resumable outputs.

Per input image ``NAME`` the run writes ``OUT/detections/NAME.json`` (boxes
in pixels, class names, scores) atomically; for a georeferenced raster also
``OUT/geojson/NAME.geojson`` (box polygons in the raster's CRS through its
affine transform, with label and score properties); and with
``save_images`` ``OUT/images/NAME.jpg`` (annotated; skipped, with a
message, for rasters over ``MAX_DRAW_PIXELS``). ``OUT/predict.json`` records
the model (a digest of its config, post-processing included, and weights)
and the settings that shape results; a rerun with the same ones skips inputs
whose detections file exists, with others it refuses unless ``overwrite``
(which redoes everything). At the end the per-image files are
gathered into ``OUT/detections.csv`` (file, xmin, ymin, xmax, ymax, label,
score), ``OUT/coco_results.json`` (COCO results, xywh) and
``OUT/images.json`` (image id -> file), all rebuilt from the per-image files
so an interrupted and resumed run lists every image exactly once.
Unreadable inputs are reported and skipped; the return value counts them.
"""

from __future__ import annotations

import glob
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from detect import atomic
from detect.datasets.images import BandRule
from detect.files import read_json
from detect.inference.gis import RunOutputs, write_run_outputs
from detect.inference.outputs import (
    DEFAULT_STYLE,
    DrawStyle,
    claim_output,
    gather,
    id_map_for,
    model_digest,
    output_stem,
    write_scene,
)
from detect.inference.predictor import (
    DEFAULT_TILES,
    CapCount,
    TileOptions,
    detect_source,
    gsd_scale,
)
from detect.inference.sources import open_source
from detect.inference.video import predict_video

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v"}
INPUT_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


def expand_sources(sources: list[str]) -> list[Path]:
    """Files from image paths, folders (non-recursive) and glob patterns, in order, once each.

    An argument naming an existing file is that file, even when its name has
    glob characters (``image #2 [draft].png``); otherwise ``*``, ``?`` or ``[``
    make it a pattern (quote it so the shell leaves it alone), and a pattern
    that matches nothing is an error. Folder entries that are not readable
    files (a broken or looping link) are skipped with a counted warning.
    """
    out: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            entries = sorted(f for f in p.iterdir() if f.suffix.lower() in INPUT_SUFFIXES)
            unreadable = [f.name for f in entries if not f.is_file()]  # is_file: False for a loop
            if unreadable:
                print(f"warning: skipped {len(unreadable)} entr{'y' if len(unreadable) == 1 else 'ies'} of {p} "
                      f"that {'is' if len(unreadable) == 1 else 'are'} not a readable file (a broken or "
                      f"looping link?): {', '.join(unreadable[:5])}", file=sys.stderr)
            out += [f for f in entries if f.is_file()]
        elif p.is_file():
            out.append(p)
        elif any(c in src for c in "*?["):
            matched = sorted(Path(f) for f in glob.glob(src, recursive=True)
                             if Path(f).suffix.lower() in INPUT_SUFFIXES and Path(f).is_file())
            if not matched:
                raise FileNotFoundError(f"input {src!r} is not a file, and as a glob pattern it matches no "
                                        f"image or video")
            out += matched
        else:
            raise FileNotFoundError(f"input {src!r} is not a file, folder or matching glob")
    seen, unique = set(), []
    for f in out:
        key = _identity(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    if not unique:
        raise FileNotFoundError(f"no images found in {sources}")
    return unique


def _identity(path: Path) -> Path:
    """The file a path names, for counting it once (its own absolute path if links cannot be followed)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: Python < 3.13 on a symlink loop
        return path.absolute()


def predict_files(model, files: list[Path], out_dir: Path | None, options: TileOptions = DEFAULT_TILES, *,
                  save_images: bool = False, overwrite: bool = False,
                  bands: tuple[int, ...] | None = None, stride: int = 1, gsd_match: bool = True,
                  ground_truth: dict | None = None, ann: str | None = None, on_result=None,
                  outputs: RunOutputs | None = None, shard: str | None = None, engine: str = "local",
                  engine_options: dict | None = None, style: DrawStyle = DEFAULT_STYLE) -> dict:
    """Run over ``files``; returns a summary dict (see module doc for outputs).

    Post-processing (thresholds, cap) is the model's: change it with
    ``model.set_postprocess``. ``ground_truth`` (a COCO dict) makes
    ``coco_results.json`` use its image ids (matched by file name) and
    category ids (by class name); otherwise the model's category ids are used.

    ``out_dir`` None writes nothing (the Python API's in-memory run; then
    ``save_images`` is refused). ``on_result(file, frame, det, meta)`` is
    called per image (``frame`` None) or video frame with the inference
    path's dict and ``meta`` = {"width", "height", "transform", "crs"}; for
    inputs a rerun skips as done, with the detections read back from their
    record.

    ``outputs``: run-level GIS outputs (:class:`~detect.inference.gis.RunOutputs`).
    ``shard`` ("I/N") or ``engine="ray"`` (``engine_options``: see
    :func:`~detect.inference.ray_engine.run_units_ray`) run the inputs as a
    job of units (:mod:`detect.inference.sharded`); ``ann`` is the path
    behind ``ground_truth``, for the job's merge. ``style``: how annotated
    images and videos are drawn.
    """
    if out_dir is None and (save_images or shard is not None or engine != "local"):
        raise ValueError("save_images, shard and engine need an output folder (out=...)")
    outputs = outputs or RunOutputs()
    rule = options.resolved(model)
    band_rule = BandRule.of(model.model_config, bands)  # a --bands of the wrong count fails here, once
    if out_dir is not None:
        out_dir = Path(out_dir)
        fingerprint = {"model": model_digest(model), "tile": rule.tile, "overlap": rule.overlap,
                       "scale": rule.scale, "bands": list(bands) if bands else None,
                       "stride": stride, "gsd_match": gsd_match}  # drawing options shape no detection
        claim_output(out_dir, fingerprint, overwrite=overwrite)
        (out_dir / "detections").mkdir(parents=True, exist_ok=True)
        if save_images:
            (out_dir / "images").mkdir(exist_ok=True)
        if shard is not None or engine != "local":
            from detect.inference.sharded import predict_job

            return predict_job(model, files, out_dir, options, fingerprint=fingerprint, band_rule=band_rule,
                               shard=shard, engine=engine, engine_options=engine_options,
                               gsd_match=gsd_match, ann=ann, save_images=save_images, overwrite=overwrite,
                               outputs=outputs, on_result=on_result, style=style)
    names = model.class_names
    failed, skipped, caps, t0 = [], 0, CapCount(), time.perf_counter()
    for f in tqdm(files, desc="predict", unit="image"):
        stem = output_stem(f, files)
        target = out_dir / "detections" / f"{stem}.json" if out_dir is not None else None
        if target is not None and target.exists() and not overwrite:
            skipped += 1
            if on_result is not None:
                _replay(f, read_json(target, "detection record", "delete it and run again"), band_rule,
                        on_result)
            continue
        if f.suffix.lower() in VIDEO_SUFFIXES:
            def frame_done(index, det, size, f=f):
                if on_result is not None:
                    on_result(f, index, det, {"width": size[0], "height": size[1], "transform": None, "crs": None})
            try:
                record, video_caps = predict_video(model, f, out_dir, stem, options, stride=stride,
                                                   save_images=save_images, on_frame=frame_done, style=style)
            except (OSError, ValueError) as err:
                failed.append(str(f))
                print(f"\nerror: {f}: {err} (skipped)", file=sys.stderr)
                continue
            caps += video_caps
            if target is not None:
                atomic.write_bytes(target, json.dumps(record).encode())
            continue
        try:
            source = open_source(f, band_rule)
        except (OSError, ValueError) as err:
            failed.append(str(f))
            print(f"\nerror: {f}: {err} (skipped)", file=sys.stderr)
            continue
        try:
            det = detect_source(model, source, options, progress=True,
                                scale=gsd_scale(model, source, options, gsd_match, f))
            caps.add(det)
            if out_dir is not None:
                write_scene(out_dir, stem, f, source, det, names, save_images, style)  # its record last: done
        except (OSError, ValueError) as err:
            failed.append(str(f))
            print(f"\nerror: {f}: {err} (skipped)", file=sys.stderr)
            continue
        finally:
            source.close()
        if on_result is not None:
            on_result(f, None, det, {"width": int(source.width), "height": int(source.height),
                                     "transform": source.transform, "crs": source.crs})
    seconds = time.perf_counter() - t0
    if caps.warning(model.model_config.postprocess):
        print("\n" + caps.warning(model.model_config.postprocess), file=sys.stderr)
    if caps.blank:
        print(f"{caps.blank} of {caps.tiles} tiles held only nodata and were skipped", file=sys.stderr)
    counts = None
    if out_dir is not None:
        counts = gather(out_dir, files, names, id_map=id_map_for(model, ground_truth))
        write_run_outputs(out_dir, files, outputs)
    return {"images": len(files), "skipped_done": skipped, "failed": failed, "tiles": caps.tiles,
            "blank_tiles": caps.blank, "seconds": seconds, "objects_per_class": counts,
            "capped_tiles": caps.at_max, "top_k_capped_tiles": caps.at_top_k}


def _replay(f: Path, record: dict, band_rule, on_result) -> None:
    """Hand an input done by an earlier run to ``on_result`` from its detections record."""
    def as_det(rows):
        return {"boxes": [r["box"] for r in rows], "scores": [r["score"] for r in rows],
                "labels": [r["label_id"] for r in rows]}

    size = {"width": record["width"], "height": record["height"], "transform": None, "crs": None}
    if "frames" in record:
        for fr in record["frames"]:
            on_result(f, fr["frame"], as_det(fr["detections"]), size)
        return
    if "crs" in record:  # georeferencing stored with the record
        from affine import Affine
        from rasterio.crs import CRS

        size.update(transform=Affine(*record["transform"]), crs=CRS.from_wkt(record["crs"]))
    elif f.suffix.lower() in {".tif", ".tiff"}:  # an older record: read the file's header again
        try:
            source = open_source(f, band_rule)
            size.update(transform=source.transform, crs=source.crs)
            source.close()
        except (OSError, ValueError) as err:
            print(f"\nwarning: {f}: its georeferencing could not be read again ({err}); its detections "
                  f"from the earlier run come without CRS", file=sys.stderr)
    on_result(f, None, as_det(record["detections"]), size)
