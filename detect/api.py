"""The Python API: load, predict, evaluate, train and export, as the ``detect`` command does.

Each CLI command parses its arguments and calls one of these functions, so
options, defaults, messages and outputs are the same from a notebook and
from a shell. Bad input raises ``ValueError`` / ``FileNotFoundError`` naming
the value; an unknown keyword is a ``TypeError`` (Python's own), never
ignored.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from detect.config import defaults
from detect.config.plain import config_overrides
from detect.config.sections import tile_rule_problems
from detect.imagery.inputs import parse_bands
from detect.inference.evaluate import Report
from detect.structures import Detections, Results, results_to_coco
from detect.training.runs import Run, finished_run

__all__ = ["Run", "evaluate", "export", "load_model", "predict", "train"]


def load_model(path, *, threads: int | None = None):
    """A detector from a model file or run folder: :func:`detect.models.detector.load_detector`."""
    from detect.models.detector import load_detector

    return load_detector(path, threads=threads)


def _model(model, threads: int | None = None):
    from detect.models.detector import as_detector

    return as_detector(model, threads=threads)


# ---- shared option handling ---------------------------------------------------


def tile_options(tile=None, overlap=None, scale=None, batch_size: int = defaults.BATCH_SIZE):
    """:class:`~detect.inference.predictor.TileOptions`, checked (None: the model's input rule)."""
    from detect.inference.predictor import TileOptions

    for name, problem in tile_rule_problems(tile, overlap):  # before a model loads or runs
        raise ValueError(f"{name} {problem}")
    if scale is not None and scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return TileOptions(tile=tile, overlap=overlap, batch_size=batch_size, scale=scale)


#: ``postprocess.calibration`` while predict applies the uncalibrated default threshold.
UNCALIBRATED = "no labelled data (detect's default for an uncalibrated model)"


@contextlib.contextmanager
def postprocessing(model, score_threshold=None, iou_threshold=None, max_detections=None, agnostic_nms=None,
                   vote_iou=None, *, calibrated: bool = True):
    """Apply post-processing changes to ``model`` for the ``with`` block, then restore its own.

    The NMS step is rebuilt, so a score threshold below the model's works
    exactly; a line says what changed. A calibrated model's per-class
    thresholds apply unless ``score_threshold`` is given (it replaces them) or
    ``calibrated`` is False (evaluation: AP needs every detection); a line
    says when they apply. A model without them keeps detections scoring at
    least :data:`~detect.config.defaults.UNCALIBRATED_SCORE_THRESHOLD` (0.3),
    also said in a line, on the same terms.
    """
    before = model.model_config
    pp = before.postprocess
    if score_threshold is not None or not calibrated:
        pp = pp.uncalibrated()
    elif not pp.class_thresholds and pp.score_threshold < defaults.UNCALIBRATED_SCORE_THRESHOLD:
        floor = defaults.UNCALIBRATED_SCORE_THRESHOLD  # outputs, not NMS: as a calibrated model's
        pp = dataclasses.replace(pp, class_thresholds=(floor,) * len(model.class_names),
                                 calibration=UNCALIBRATED)
    model.set_postprocess(score_threshold=score_threshold, iou_threshold=iou_threshold,
                          max_detections=max_detections, agnostic=agnostic_nms, vote_iou=vote_iou,
                          class_thresholds=pp.class_thresholds, calibration=pp.calibration)
    after = model.model_config.postprocess
    if after.calibration == UNCALIBRATED:
        print(f"model not calibrated: detections scoring >= {after.class_thresholds[0]:g} are kept (the default without "
              f"calibration; `detect evaluate --model M --ann A --images I --calibrate OUT.keras` calibrates "
              f"per class, --score-threshold T sets one threshold)")
    elif after.class_thresholds:
        pairs = ", ".join(f"{n} {t:.2f}" for n, t in zip(model.class_names, after.class_thresholds))
        print(f"score thresholds calibrated per class on {after.calibration or 'labelled data'}: {pairs} "
              f"(--score-threshold T uses one threshold instead)")
    if after.uncalibrated() != before.postprocess.uncalibrated():
        print(f"post-processing: score > {after.score_threshold:g}, "
              f"{'class-agnostic' if after.agnostic else 'per-class'} NMS IoU {after.iou_threshold:g}, "
              + (f"box voting IoU {after.vote_iou:g}, " if after.vote_iou else "") +
              f"at most {after.max_detections} detections per tile")
    try:
        yield model
    finally:
        if model.model_config is not before:
            model.model_config = before
            model.predict_function = None


# ---- predict -----------------------------------------------------------------


def predict(model, source, *, out=None, tile: int | None = None, overlap: float | None = None,
            scale: float | None = None, batch_size: int = defaults.BATCH_SIZE, score_threshold: float | None = None,
            iou_threshold: float | None = None, max_detections: int | None = None,
            agnostic_nms: bool | None = None, vote_iou: float | None = None, bands=None,
            stride: int = 1, gsd_match: bool = True, ann=None, save_images: bool = False,
            overwrite: bool = False, threads: int | None = None, format: str = "geojson",
            geojson_wgs84: bool = False, merge_across_scenes: bool = False, mosaic: bool = False,
            shard: str | None = None,
            engine: str = "local", address: str | None = None, workers: int = defaults.WORKERS,
            html: bool | str | Path = False, line_width: int | None = None, hide_labels: bool = False,
            hide_scores: bool = False) -> Results:
    """Detect objects in ``source``; one :class:`~detect.structures.Detections` per image, frame or raster.

    ``model``: a loaded detector or a path (``model.keras``, a run folder or
    an exported ``.tflite``, run with ``threads`` interpreter threads).
    ``source``: an RGB image array (``[H, W, 3]``, or a batch ``[B, H, W, 3]``,
    uint8 or float 0..255), an image path, a folder, a glob, a list of these,
    a GeoTIFF of any size (read window by window and tiled) or a video
    (every ``stride``-th frame; one item per frame). Image files and video
    files named one by one go in separate calls (a folder may hold both).

    Options are the CLI's (``detect predict --help``): ``tile`` (px),
    ``overlap`` (fraction), ``scale`` (model px per image px) default to the
    model's input rule; ``batch_size`` tiles per batch; ``score_threshold``,
    ``iou_threshold``, ``max_detections``, ``agnostic_nms`` (True: one
    label per box, suppression across classes), ``vote_iou`` (box voting; 0: off) change post-processing for
    this call only (the model's own settings are restored); ``bands`` (e.g.
    ``"3,2,1"``) picks raster bands; ``gsd_match`` resamples GeoTIFFs to the
    model's training ground sample distance.

    ``out``: a folder; then exactly what ``detect predict --out`` writes
    (per-image JSON, CSV, COCO results, GeoJSON, and with ``save_images``
    annotated images), resumable, with ``ann`` (a COCO file) giving
    coco_results.json the ground truth's ids; ``overwrite`` redoes it.
    Without ``out`` nothing is written. With ``out``: ``format="gpkg"``
    adds a GeoPackage of the run, ``geojson_wgs84`` an RFC 7946 GeoJSON,
    ``merge_across_scenes`` merges adjacent scenes of a mosaic
    (:mod:`detect.inference.gis`); ``mosaic`` joins the input rasters into
    ``OUT/mosaic.vrt`` and predicts that one raster, so objects across the files'
    edges are seen whole (:mod:`detect.imagery.vrt`); ``shard="I/N"`` runs this process's
    share of the job and ``engine="ray"`` (``address``, ``workers``) runs
    it on Ray (:mod:`detect.inference.sharded`); the Results then hold the
    detections once the job is merged (none for a shard that leaves units
    to others). ``html``: also ``OUT/view.html`` (or this file; :mod:`detect.view`; with
    ``ann``, true / false positives and missed objects coloured).
    ``line_width``, ``hide_labels``, ``hide_scores``: how ``save_images``
    draws (:class:`~detect.imagery.drawing.DrawStyle`).
    """
    from detect.imagery.drawing import DrawStyle
    from detect.imagery.inputs import parse_sources
    from detect.inference.gis import RunOutputs, model_name
    from detect.inference.run import predict_arrays, predict_files

    _check_run_options(stride=stride, line_width=line_width, format=format, engine=engine, workers=workers,
                       address=address, shard=shard)
    style = DrawStyle(line_width, labels=not hide_labels, scores=not hide_scores)
    options = tile_options(tile, overlap, scale, batch_size)
    bands = parse_bands(bands)
    kind, items = parse_sources(source)
    if kind == "arrays" and (out is not None or ann is not None or bands or save_images):
        raise ValueError("out, ann, bands and save_images apply to files; for arrays use the Results "
                         "(to_coco, plot) or save the images first")
    gt = None
    if ann is not None:
        from detect.evaluation.coco_eval import load_ground_truth

        gt = load_ground_truth(ann)
    model_path = model if isinstance(model, (str, Path)) else None
    model = _model(model, threads)
    options = options.resolved(model)  # the input rule, once: what runs below is what was asked
    names = model.class_names
    if (format == "gpkg" or geojson_wgs84 or merge_across_scenes or mosaic or shard or engine != "local"
            or html) and out is None:
        raise ValueError("format='gpkg', geojson_wgs84, merge_across_scenes, mosaic, shard and engine write "
                         "files: give out=FOLDER")
    with postprocessing(model, score_threshold, iou_threshold, max_detections, agnostic_nms, vote_iou):
        if mosaic:  # refused for another model's folder before the VRT is written into it
            from detect.inference.outputs import check_output, run_fingerprint

            check_output(Path(out), run_fingerprint(model, options, bands=bands, stride=stride,
                                                    gsd_match=gsd_match), overwrite=overwrite)
            items = [_mosaic(items, Path(out), overwrite)]
        if kind == "arrays":
            return predict_arrays(model, items, options)
        found: list[Detections] = []

        def collect(f, frame, det, meta):
            name = str(f) if frame is None else f"{f}#frame={frame}"
            found.append(Detections.from_dict(det, names, name, meta["width"], meta["height"], frame=frame,
                                              transform=meta["transform"], crs=meta["crs"]))

        pp = model.model_config.postprocess
        outputs = RunOutputs(gpkg=format == "gpkg", geojson_wgs84=geojson_wgs84,
                             merge_across_scenes=merge_across_scenes, iou_threshold=pp.iou_threshold,
                             agnostic=pp.agnostic, model_name=model_name(model, model_path))
        engine_options = None
        if engine == "ray":
            from detect.inference.ray_executor import stage_model_file

            engine_options = {"model_path": stage_model_file(model, model_path, Path(out)),
                              "postprocess": dataclasses.asdict(pp), "workers": workers, "address": address,
                              "threads": threads}
        summary = predict_files(model, items, Path(out) if out is not None else None, options,
                                save_images=save_images, overwrite=overwrite, bands=bands, stride=stride,
                                gsd_match=gsd_match, ground_truth=gt, ann=str(ann) if ann else None,
                                on_result=collect, outputs=outputs, shard=shard, engine=engine,
                                engine_options=engine_options, style=style)
    if html and summary.get("merged", True):
        from detect.view import write_view
        from detect.view.items import items_from_output

        items, names = items_from_output(out, gt)
        page = Path(out) / "view.html" if html is True else Path(html)
        summary["html"] = write_view(items, page, names, title=f"detect predict: {Path(out).name}")
    return Results(found, summary)


def _mosaic(files: list[Path], out: Path, overwrite: bool) -> Path:
    """``OUT/mosaic.vrt`` joining ``files`` (all rasters), for ``predict(mosaic=True)`` (arrays
    were refused before: they cannot go with ``out``)."""
    from detect.imagery.inputs import RASTER_SUFFIXES
    from detect.imagery.vrt import MOSAIC_VRT, write_mosaic

    others = [f for f in files if f.suffix.lower() not in RASTER_SUFFIXES]
    if others:
        raise ValueError(f"mosaic joins georeferenced rasters ({', '.join(RASTER_SUFFIXES)}); "
                         f"{others[0]} is not one")
    return write_mosaic(files, out / MOSAIC_VRT, overwrite=overwrite)


def _refuse_to_replace(overwrite: bool, **targets) -> None:
    """FileExistsError for the first of ``targets`` (option name -> path or None) that exists,
    unless ``overwrite``: no command replaces a file it was not told it may."""
    for name, target in targets.items():
        if target is not None and not overwrite and Path(target).exists():
            raise FileExistsError(f"--{name.replace('_', '-')} {target} exists: pass --overwrite to replace it, "
                                  f"or name another file")


def _check_run_options(*, stride, line_width, format, engine, workers, address, shard) -> None:
    """Refuse bad ``predict`` options before a model loads or a file is written."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if line_width is not None and not 1 <= line_width <= 50:
        raise ValueError(f"line_width must be 1..50 pixels, got {line_width}")
    if format not in defaults.FORMATS:
        raise ValueError(f"format must be 'geojson' or 'gpkg', got {format!r}")
    if engine not in defaults.ENGINES:
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if engine == "ray":
        from detect.inference.ray_executor import check_address

        check_address(address)  # an unreachable cluster fails here, before anything is written
    if shard is not None:
        from detect.inference.jobs import parse_shard

        parse_shard(shard)


# ---- evaluate ----------------------------------------------------------------


def evaluate(model_or_predictions, ann, images=None, *, tile: int | None = None, overlap: float | None = None,
             scale: float | None = None, batch_size: int = defaults.BATCH_SIZE, score_threshold: float | None = None,
             iou_threshold: float | None = None, max_detections: int | None = None,
             agnostic_nms: bool | None = None, vote_iou: float | None = None, backend: str = "detect", area_ranges: str = "", max_dets=defaults.MAX_DETS,
             operating_point_at: float | None = None, save_predictions=None, report=None,
             plots=None, html=None, threads: int | None = None, calibrate=None, overwrite: bool = False,
             match_iou: float = 0.5) -> Report:
    """COCO statistics (pycocotools-exact) of a model or of detections against ``ann``.

    ``model_or_predictions``: a detector (object, ``.keras`` / ``.tflite`` path
    or run folder; ``threads`` for a ``.tflite``), run over ``images`` (the folder the ground truth's file_name
    values are in) through the same path as :func:`predict`; or detections:
    a COCO results file (``.json``), a list of COCO result dicts, or the
    :class:`~detect.structures.Results` of :func:`predict` (matched to the
    ground truth by file name and class name).

    ``score_threshold`` filters detections (with a model: post-processing, as
    ``iou_threshold`` / ``max_detections`` / ``agnostic_nms`` / ``vote_iou``); ``max_dets`` is COCO's maxDets
    list (``"1,10,100"`` or a tuple); ``area_ranges`` adds size buckets
    (``"tiny:0:16,small:16:32"``, side length px); ``operating_point_at``
    reports the operating point at that score instead of the best F1.
    ``save_predictions`` / ``report`` / ``plots`` / ``html``: a results file / a
    JSON report / a folder of PNG curves / an HTML view (needs ``images``) to
    write (none by default).

    ``match_iou``: the IoU at which the operating point matches detections to objects (0.5,
    COCO's; DeepForest compares tree crowns at 0.4); the COCO statistics are not affected.
    ``calibrate`` (a ``.keras`` path; a model only): also write the model with each class's
    best-F1 score threshold stored in it (``postprocess.class_thresholds``), so ``predict``
    writes maps at that operating point by default; ``overwrite`` replaces an existing file.
    AP always uses every detection above the model's ``score_threshold``.
    """
    from detect.evaluation.coco_eval import load_ground_truth
    from detect.inference.evaluate import run_evaluation

    if backend not in defaults.EVAL_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(defaults.EVAL_BACKENDS)}; got {backend!r}")
    _refuse_to_replace(overwrite, report=report, html=html, save_predictions=save_predictions, calibrate=calibrate)
    if plots is not None and not overwrite and Path(plots).is_dir() and any(Path(plots).glob("*.png")):
        raise FileExistsError(f"--plots {plots} holds plots already: pass --overwrite to replace them, or name "
                              f"another folder")
    common = dict(backend=backend, area_ranges=area_ranges, max_dets=max_dets,
                  operating_point_at=operating_point_at, report=report, plots=plots, html=html,
                  match_iou=match_iou)
    given = model_or_predictions
    if isinstance(given, Results):
        given = results_to_coco(given, load_ground_truth(ann))
    is_path = isinstance(given, (str, Path))
    if isinstance(given, list) or (is_path and Path(given).suffix.lower() not in (".keras", ".tflite")
                                   and not Path(given).is_dir()):
        if any(v is not None for v in (iou_threshold, max_detections, agnostic_nms, vote_iou)):
            raise ValueError("iou_threshold, max_detections, agnostic_nms and vote_iou apply to a model only")
        if calibrate is not None:
            raise ValueError("calibrate applies to a model only (it writes a calibrated copy of the model)")
        return run_evaluation(ann, predictions=given, score_threshold=score_threshold, images=images, **common)
    if images is None:
        raise ValueError("a model needs images (the folder the ground truth's file_name values are in)")
    options = tile_options(tile, overlap, scale, batch_size)
    model = _model(given, threads)
    options = options.resolved(model)  # the input rule, once
    with postprocessing(model, score_threshold, iou_threshold, max_detections, agnostic_nms, vote_iou,
                        calibrated=False):
        return run_evaluation(ann, model=model, images=images, options=options,
                              save_predictions=save_predictions, calibrate=calibrate, **common)


# ---- train and export ------------------------------------------------------------


def train(train_ann=None, train_images=None, out=None, config=None, *, val_ann=None, val_images=None,
          resume: bool = False, overwrite: bool = False, time_budget: str | float | None = None,
          init_from=None,
          gsd: float | None = None, backbone_weights: str | None = None, bands=None, set=(),
          strict: bool = False, strategy: str = "default", mixed_precision: bool = False, verbose: int = 1,
          **overrides) -> Run:
    """Train a detector on a COCO dataset into the run folder ``out``; returns a :class:`Run`.

    ``config``: a packaged recipe's name (``"aerial-cpu"``, ``"aerial-pretrained-cpu"``), a YAML
    path or a :class:`~detect.config.DetectConfig` (default: the ``aerial-cpu`` recipe; every
    setting it leaves open is fitted to the data). Config fields can be set as
    keywords (``epochs=3``, ``learning_rate=0.005``, or ``train__epochs=3``)
    or as the CLI's ``set=["train.epochs=3"]``. ``time_budget`` (``"20m"``,
    ``"90s"``, seconds) fits the schedule to what this machine can do in that
    time. ``init_from``: a detector (``.keras`` or run folder) to start from:
    weights matched by layer path and shape, class logits remapped by class
    name, its architecture unless the config pins it (:mod:`detect.training.transfer`).
    ``bands`` (``"1,2,3,4"``): the 1-based bands of the training files the
    model takes, in order; sets ``model.input_bands`` to their count and is
    stored in the model (prediction reads the same bands).
    ``resume=True`` continues ``out`` from its newest intact epoch
    (nothing else needed). ``out`` must not exist or be empty unless
    ``overwrite`` (which replaces a previous run only). Raises
    :class:`~detect.training.engine.TrainingError` when training stops on a bad loss.
    """
    if out is None:
        raise ValueError("out (the run folder) is required")
    if time_budget is not None:
        from detect.training.time_budget import check_budget

        check_budget(time_budget)  # a bad or too short budget fails before anything loads
    if gsd is not None and gsd <= 0:
        raise ValueError(f"gsd must be > 0 metres per pixel, got {gsd}")
    assignments = list(set)
    if backbone_weights:
        assignments.insert(0, f"model.backbone_weights={backbone_weights}")
    if bands:
        chosen = parse_bands(bands)
        assignments[:0] = [f"model.input_bands={len(chosen)}", f"model.bands={list(chosen)}"]
    settings = config_overrides(overrides)  # an unknown keyword fails before TensorFlow loads
    from detect.training.engine import train_run

    train_run(out, train_ann=train_ann, train_images=train_images, val_ann=val_ann, val_images=val_images,
              config=config, settings=settings, overrides=assignments, resume=resume, overwrite=overwrite,
              strict=strict, strategy=strategy, mixed_precision=mixed_precision, time_budget=time_budget, gsd=gsd,
              init_from=init_from, verbose=verbose)
    return finished_run(Path(out))


def export(model, out, *, format: str = "savedmodel", quantize: str = "none", calibration=None,
           calibration_tiles: int = 32, tile: int | None = None, overwrite: bool = False) -> Path:
    """Export ``model`` (a detector or a path to one) to ``out``.

    ``format="savedmodel"``: a TensorFlow SavedModel folder (must not exist or
    be empty) whose ``serving_default`` signature takes uint8 RGB ``[B, H, W, 3]``
    and returns boxes, scores, labels and num_detections (NMS inside); class
    names and the input rule are in its ``assets/detect.json``.

    ``format="tflite"``: a LiteRT flatbuffer of the network at the model's
    tile (or ``tile``), run by ``predict`` / ``evaluate`` with the same
    decoding and NMS; ``quantize`` "none", "float16", "dynamic" or "int8"
    (calibrated on ``calibration_tiles`` tiles of the ``calibration`` images:
    a folder, or a list of image paths). See :mod:`detect.exporters.litert`.
    """
    if format == "savedmodel":
        if quantize != "none" or calibration is not None or tile is not None:
            raise ValueError("quantize, calibration and tile apply to format='tflite' only")
        from detect.exporters.saved_model import export_saved_model

        return export_saved_model(_model(model), out)
    if format != "tflite":
        raise ValueError(f"format must be 'savedmodel' or 'tflite', got {format!r}")
    from detect.exporters.litert import calibration_set, export_tflite

    if isinstance(calibration, (str, Path)):
        calibration = calibration_set(calibration)[0]
    return export_tflite(_model(model), out, quantize=quantize, calibration=calibration,
                         calibration_tiles=calibration_tiles, tile=tile, overwrite=overwrite)
