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

import contextlib
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from detect.imagery.images import BandRule
from detect.imagery.inputs import RASTER_SUFFIXES, VIDEO_SUFFIXES
from detect.imagery.rasters import open_source
from detect.inference.gis import RunOutputs, write_run_outputs
from detect.inference.outputs import (
    DEFAULT_STYLE,
    DrawStyle,
    claim_output,
    gather,
    id_map_for,
    output_lock,
    output_stem,
    run_fingerprint,
    write_scene,
)
from detect.inference.predictor import (
    CapCount,
    TileOptions,
    detect_many,
    detect_source,
    gsd_scale,
)
from detect.inference.video import predict_video
from detect.structures import Record, read_record, run_summary
from detect.util import atomic


def predict_files(model, files: list[Path], out_dir: Path | None, options: TileOptions, **kwargs) -> dict:
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
    :func:`~detect.inference.ray_executor.run_units_ray`) run the inputs as a
    job of units (:mod:`detect.inference.sharded`); ``ann`` is the path
    behind ``ground_truth``, for the job's merge. ``style``: how annotated
    images and videos are drawn.

    Keywords: those of :func:`_predict_files` (``save_images``, ``overwrite``, ``bands``,
    ``stride``, ``gsd_match``, ``ground_truth``, ``ann``, ``on_result``, ``outputs``, ``shard``,
    ``engine``, ``engine_options``, ``style``). A local run holds the output folder's lock
    (:func:`~detect.inference.outputs.output_lock`); jobs share folders by design.
    """
    one_writer = out_dir is not None and kwargs.get("shard") is None and kwargs.get("engine", "local") == "local"
    with output_lock(Path(out_dir)) if one_writer else contextlib.nullcontext():
        return _predict_files(model, files, out_dir, options, **kwargs)


def _predict_files(model, files: list[Path], out_dir: Path | None, options: TileOptions, *,
                   save_images: bool = False, overwrite: bool = False,
                   bands: tuple[int, ...] | None = None, stride: int = 1, gsd_match: bool = True,
                   ground_truth: dict | None = None, ann: str | None = None, on_result=None,
                   outputs: RunOutputs | None = None, shard: str | None = None, engine: str = "local",
                   engine_options: dict | None = None, style: DrawStyle = DEFAULT_STYLE) -> dict:
    """:func:`predict_files` without the output folder's lock (its keywords documented there)."""
    if out_dir is None and (save_images or shard is not None or engine != "local"):
        raise ValueError("save_images, shard and engine need an output folder (out=...)")
    outputs = outputs or RunOutputs()
    rule = options
    band_rule = BandRule.of(model.model_config, bands)  # a --bands of the wrong count fails here, once
    if out_dir is not None:
        out_dir = Path(out_dir)
        fingerprint = run_fingerprint(model, rule, bands=bands, stride=stride, gsd_match=gsd_match)
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
    failed, skipped, caps, t0 = {}, 0, CapCount(), time.perf_counter()  # failed: file -> reason
    for f in tqdm(files, desc="predict", unit="image"):
        stem = output_stem(f, files)
        target = out_dir / "detections" / f"{stem}.json" if out_dir is not None else None
        if target is not None and target.exists() and not overwrite:
            skipped += 1
            if on_result is not None:
                _replay(f, read_record(target), band_rule, on_result)
            continue
        try:
            if f.suffix.lower() in VIDEO_SUFFIXES:
                caps += _predict_video_file(model, f, out_dir, stem, target, options, stride=stride,
                                            save_images=save_images, style=style, on_result=on_result)
                continue
            source = open_source(f, band_rule)
        except (OSError, ValueError) as err:
            failed[str(f)] = str(err)
            print(f"\nerror: {f}: {err} (skipped)", file=sys.stderr)
            continue
        try:
            det = detect_source(model, source, options, progress=True,
                                scale=gsd_scale(model, source, options, gsd_match, f))
            caps.add(det)
            if out_dir is not None:
                write_scene(out_dir, stem, f, source, det, names, save_images, style)  # its record last: done
        except (OSError, ValueError) as err:
            failed[str(f)] = str(err)
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
        record_failures(out_dir, failed)
    return run_summary(images=len(files), caps=caps, failed=list(failed), skipped_done=skipped, seconds=seconds,
                       objects_per_class=counts)


#: Inputs the last run into an output folder could not process, and why (absent when none).
FAILURES = "failed.json"


def record_failures(out_dir: Path, failed: dict[str, str]) -> None:
    """``OUT/failed.json``: ``[{"file", "error"}]`` of the inputs this run skipped (a rerun
    retries them: they have no record); removed when a run leaves none."""
    path = Path(out_dir) / FAILURES
    if failed:
        atomic.write_json(path, [{"file": f, "error": e} for f, e in failed.items()])
    else:
        path.unlink(missing_ok=True)


def _predict_video_file(model, f: Path, out_dir, stem: str, target, options, *, stride, save_images, style,
                        on_result) -> CapCount:
    """One video: every ``stride``-th frame predicted (``on_result`` per frame), its record written
    to ``target`` last; returns the frames' cap counts. OSError / ValueError: the video is skipped."""
    def frame_done(index, det, size):
        if on_result is not None:
            on_result(f, index, det, {"width": size[0], "height": size[1], "transform": None, "crs": None})

    record, video_caps = predict_video(model, f, out_dir, stem, options, stride=stride,
                                       save_images=save_images, on_frame=frame_done, style=style)
    if target is not None:
        atomic.write_bytes(target, json.dumps(record).encode())
    return video_caps


def _replay(f: Path, record: Record, band_rule, on_result) -> None:
    """Hand an input done by an earlier run to ``on_result`` from its detections record."""
    size = {"width": record.width, "height": record.height, "transform": None, "crs": None}
    if record.is_video:
        for frame, boxes in record.frames:
            on_result(f, frame, boxes.as_det(), size)
        return
    if record.crs is not None:  # georeferencing stored with the record
        from affine import Affine
        from rasterio.crs import CRS

        size.update(transform=Affine(*record.transform), crs=CRS.from_wkt(record.crs))
    elif f.suffix.lower() in RASTER_SUFFIXES:  # an older record: read the file's header again
        try:
            source = open_source(f, band_rule)
            size.update(transform=source.transform, crs=source.crs)
            source.close()
        except (OSError, ValueError) as err:
            print(f"\nwarning: {f}: its georeferencing could not be read again ({err}); its detections "
                  f"from the earlier run come without CRS", file=sys.stderr)
    on_result(f, None, record.detections.as_det(), size)


def predict_arrays(model, items, options):
    """:class:`~detect.structures.Results` for in-memory images ``items [(name, array [H, W, C])]``."""
    from detect.imagery.inputs import checked_array
    from detect.imagery.rasters import ArraySource
    from detect.structures import Detections, Results

    warned: list = []
    arrays = [(name, checked_array(name, a, warned, model.model_config.input_bands)) for name, a in items]
    caps, found, t0 = CapCount(), [], time.perf_counter()
    for (name, a), det in zip(arrays, detect_many(model, (ArraySource(a, name, model.model_config.input_bands) for name, a in arrays), options)):
        caps.add(det)
        found.append(Detections.from_dict(det, model.class_names, name, a.shape[1], a.shape[0], image=a))
    if caps.warning(model.model_config.postprocess):
        print(caps.warning(model.model_config.postprocess), file=sys.stderr)
    return Results(found, run_summary(images=len(arrays), caps=caps, seconds=time.perf_counter() - t0))
