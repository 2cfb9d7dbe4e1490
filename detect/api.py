"""The Python API: load, predict, evaluate, train and export, as the ``detect`` command does.

Each CLI command parses its arguments and calls one of these functions, so
options, defaults, messages and outputs are the same from a notebook and
from a shell. Bad input raises ``ValueError`` / ``FileNotFoundError`` naming
the value; an unknown keyword is a ``TypeError`` (Python's own), never
ignored.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import difflib
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detect.evaluation_run import Report
from detect.results import Detections, Results

__all__ = ["Run", "evaluate", "export", "load_model", "predict", "train"]


def load_model(path, *, threads: int | None = None):
    """A detector from ``model.keras`` / ``checkpoint.keras``, a run folder (its ``model.keras``)
    or a ``.tflite`` file written by :func:`export` (run by LiteRT with ``threads``, default all cores).

    Post-processing and the input rule (scale, tile, overlap, GSD) come with
    the file. Raises FileNotFoundError / ValueError for a missing or foreign file.
    """
    from detect.models import load_model as load

    path = Path(path)
    if path.suffix.lower() == ".tflite":
        from detect.litert import LiteRTModel

        return LiteRTModel(path, threads=threads)
    if path.is_dir():
        if not (path / "model.keras").is_file():
            raise FileNotFoundError(f"{path} is a folder without model.keras (a run that has not finished? "
                                    f"its checkpoints are in {path / 'checkpoints'})")
        path = path / "model.keras"
    return load(path)


def _model(model, threads: int | None = None):
    from detect.litert import LiteRTModel
    from detect.models import RetinaNet

    if isinstance(model, (RetinaNet, LiteRTModel)):
        return model
    if isinstance(model, (str, Path)):
        return load_model(model, threads=threads)
    if all(hasattr(model, a) for a in _DETECTOR_PROTOCOL):  # e.g. a test double of a detector
        return model
    raise ValueError(f"model must be a detect RetinaNet or a path to one, got {type(model).__name__}")


#: What the inference path uses of a model (RetinaNet and LiteRTModel have it).
_DETECTOR_PROTOCOL = ("model_config", "class_names", "predict_on_batch", "set_postprocess")


# ---- shared option handling ---------------------------------------------------


def tile_options(tile=None, overlap=None, scale=None, batch_size: int = 4):
    """:class:`~detect.inference.predictor.TileOptions`, checked (None: the model's input rule)."""
    from detect.inference.predictor import TileOptions
    from detect.inference.tiling import tile_windows

    if tile is not None and tile < 32:
        raise ValueError(f"tile must be at least 32 pixels, got {tile}")
    if tile is not None or overlap is not None:  # validate early, before the model runs
        side = tile or 512
        tile_windows(side, side, side, 0.2 if overlap is None else overlap)
    if scale is not None and scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return TileOptions(tile=tile, overlap=overlap, batch_size=batch_size, scale=scale)


@contextlib.contextmanager
def postprocessing(model, score_threshold=None, iou_threshold=None, max_detections=None, agnostic_nms=None):
    """Apply post-processing changes to ``model`` for the ``with`` block, then restore its own.

    The NMS step is rebuilt, so a score threshold below the model's works
    exactly; a line says what changed.
    """
    before = model.model_config
    model.set_postprocess(score_threshold=score_threshold, iou_threshold=iou_threshold,
                          max_detections=max_detections, agnostic=agnostic_nms)
    after = model.model_config.postprocess
    if after != before.postprocess:
        print(f"post-processing: score > {after.score_threshold:g}, "
              f"{'class-agnostic' if after.agnostic else 'per-class'} NMS IoU {after.iou_threshold:g}, "
              f"at most {after.max_detections} detections per tile")
    try:
        yield model
    finally:
        if model.model_config is not before:
            model.model_config = before
            model.predict_function = None


def _bands(bands):
    if bands is None or isinstance(bands, tuple):
        return bands
    if isinstance(bands, str):
        try:
            return tuple(int(b) for b in bands.split(","))
        except ValueError:
            raise ValueError(f"bands must be comma-separated band numbers, got {bands!r}") from None
    return tuple(int(b) for b in bands)


# ---- predict -----------------------------------------------------------------


def _sources(source):
    """("arrays", [(name, array)]) or ("files", [Path]) from what the user handed in."""
    from detect.inference.run import VIDEO_SUFFIXES, expand_sources

    items = list(source) if isinstance(source, (list, tuple)) else [source]
    if isinstance(source, np.ndarray):
        if source.ndim == 4:
            return "arrays", [(f"array[{i}]", a) for i, a in enumerate(source)]
        if source.ndim != 3:
            raise ValueError(f"an image array is [H, W, C] or a batch [B, H, W, C]; got shape {source.shape}")
        return "arrays", [("array", source)]
    if not items:
        raise ValueError("source is empty: give an image array, a path, a folder, a glob or a list of these")
    arrays = [isinstance(s, np.ndarray) for s in items]
    if all(arrays):
        for i, a in enumerate(items):
            if a.ndim != 3:
                raise ValueError(f"source[{i}]: an image array is [H, W, C]; got shape {a.shape}")
        return "arrays", [(f"array[{i}]", a) for i, a in enumerate(items)]
    if any(arrays):
        raise ValueError("source mixes arrays and paths: predict them in separate calls")
    bad = [s for s in items if not isinstance(s, (str, Path))]
    if bad:
        raise ValueError(f"source {bad[0]!r} ({type(bad[0]).__name__}) is neither an image array nor a path")
    named = [Path(s) for s in items if Path(s).is_file()]
    kinds = {f.suffix.lower() in VIDEO_SUFFIXES for f in named}
    if len(kinds) == 2:  # a folder or glob may hold both; files named one by one are one kind
        video = next(f for f in named if f.suffix.lower() in VIDEO_SUFFIXES)
        image = next(f for f in named if f.suffix.lower() not in VIDEO_SUFFIXES)
        raise ValueError(f"source names images and videos ({image} and {video}): predict them in "
                         f"separate calls (Results holds one item per image, one per video frame)")
    files = expand_sources([str(s) for s in items])
    return "files", files


def _checked_array(name: str, a: np.ndarray, warned: list, channels: int = 3) -> np.ndarray:
    if a.ndim != 3 or a.shape[2] != channels:
        what = "an RGB image [H, W, 3]" if channels == 3 else f"the model's {channels} bands [H, W, {channels}]"
        raise ValueError(f"{name}: expected {what}, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.floating):
        top = float(np.nanmax(a)) if a.size else 0.0
        if top <= 1.0 and not warned:
            warned.append(True)
            warnings.warn(f"{name}: a float image whose maximum is {top:g} is almost certainly scaled 0..1; "
                          f"detect expects RGB 0..255: pass image * 255", stacklevel=4)
        return a.astype(np.float32, copy=False)
    return a


def predict(model, source, *, out=None, tile: int | None = None, overlap: float | None = None,
            scale: float | None = None, batch_size: int = 4, score_threshold: float | None = None,
            iou_threshold: float | None = None, max_detections: int | None = None,
            agnostic_nms: bool | None = None, bands=None,
            stride: int = 1, gsd_match: bool = True, ann=None, save_images: bool = False,
            overwrite: bool = False, threads: int | None = None, format: str = "geojson",
            geojson_wgs84: bool = False, merge_across_scenes: bool = False, shard: str | None = None,
            engine: str = "local", address: str | None = None, workers: int = 2,
            html: bool = False, line_width: int | None = None, hide_labels: bool = False,
            hide_scores: bool = False) -> Results:
    """Detect objects in ``source``; one :class:`~detect.results.Detections` per image, frame or raster.

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
    label per box, suppression across classes) change post-processing for
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
    (:mod:`detect.inference.gis`); ``shard="I/N"`` runs this process's
    share of the job and ``engine="ray"`` (``address``, ``workers``) runs
    it on Ray (:mod:`detect.inference.sharded`); the Results then hold the
    detections once the job is merged (none for a shard that leaves units
    to others). ``html``: also ``OUT/view.html`` (:mod:`detect.view`; with
    ``ann``, true / false positives and missed objects coloured).
    ``line_width``, ``hide_labels``, ``hide_scores``: how ``save_images``
    draws (:class:`~detect.inference.outputs.DrawStyle`).
    """
    from detect.inference.gis import RunOutputs
    from detect.inference.outputs import DrawStyle
    from detect.inference.run import predict_files

    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if line_width is not None and not 1 <= line_width <= 50:
        raise ValueError(f"line_width must be 1..50 pixels, got {line_width}")
    style = DrawStyle(line_width, labels=not hide_labels, scores=not hide_scores)
    if format not in ("geojson", "gpkg"):
        raise ValueError(f"format must be 'geojson' or 'gpkg', got {format!r}")
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if engine == "ray":
        from detect.inference.ray_engine import check_address

        check_address(address)  # an unreachable cluster fails here, before anything is written
    if shard is not None:
        from detect.inference.jobs import parse_shard

        parse_shard(shard)
    options = tile_options(tile, overlap, scale, batch_size)
    bands = _bands(bands)
    kind, items = _sources(source)
    if kind == "arrays" and (out is not None or ann is not None or bands or save_images):
        raise ValueError("out, ann, bands and save_images apply to files; for arrays use the Results "
                         "(to_coco, plot) or save the images first")
    gt = None
    if ann is not None:
        from detect.evaluation.coco_eval import load_ground_truth

        gt = load_ground_truth(ann)
    model_path = model if isinstance(model, (str, Path)) else None
    model = _model(model, threads)
    names = model.class_names
    if (format == "gpkg" or geojson_wgs84 or merge_across_scenes or shard or engine != "local" or html) \
            and out is None:
        raise ValueError("format='gpkg', geojson_wgs84, merge_across_scenes, shard and engine write files: "
                         "give out=FOLDER")
    with postprocessing(model, score_threshold, iou_threshold, max_detections, agnostic_nms):
        if kind == "arrays":
            return _predict_arrays(model, items, options)
        found: list[Detections] = []

        def collect(f, frame, det, meta):
            name = str(f) if frame is None else f"{f}#frame={frame}"
            found.append(Detections.from_dict(det, names, name, meta["width"], meta["height"], frame=frame,
                                              transform=meta["transform"], crs=meta["crs"]))

        pp = model.model_config.postprocess
        outputs = RunOutputs(gpkg=format == "gpkg", geojson_wgs84=geojson_wgs84,
                             merge_across_scenes=merge_across_scenes, iou_threshold=pp.iou_threshold,
                             agnostic=pp.agnostic, model_name=_model_name(model, model_path))
        engine_options = None
        if engine == "ray":
            engine_options = {"model_path": _model_file_for_workers(model, model_path, Path(out)),
                              "postprocess": dataclasses.asdict(pp), "workers": workers, "address": address,
                              "threads": threads}
        summary = predict_files(model, items, Path(out) if out is not None else None, options,
                                save_images=save_images, overwrite=overwrite, bands=bands, stride=stride,
                                gsd_match=gsd_match, ground_truth=gt, ann=str(ann) if ann else None,
                                on_result=collect, outputs=outputs, shard=shard, engine=engine,
                                engine_options=engine_options, style=style)
    if html and summary.get("merged", True):
        from detect.view import write_view
        from detect.view.sources import items_from_output

        items, names = items_from_output(out, gt)
        summary["html"] = write_view(items, Path(out) / "view.html", names, title=f"detect predict: {Path(out).name}")
    return Results(found, summary)


def _model_name(model, path) -> str:
    """The model's name in GIS outputs: its file's stem (run folders: the folder's name)."""
    if path is not None:
        p = Path(path)
        return p.name if p.is_dir() else p.stem
    file = getattr(model, "path", None)  # a LiteRTModel
    return Path(file).stem if file else (getattr(model, "name", None) or "model")


def _model_file_for_workers(model, path, out: Path) -> str:
    """A model file Ray workers can load: the path given, a LiteRT model's file, or the in-memory
    model saved to ``OUT/job_model.keras``."""
    if path is not None:
        p = Path(path)
        return str((p / "model.keras" if p.is_dir() else p).resolve())
    if getattr(model, "path", None) is not None:
        return str(Path(model.path).resolve())
    from detect import atomic

    target = out / "job_model.keras"
    out.mkdir(parents=True, exist_ok=True)
    atomic.save_model(model, target)
    return str(target.resolve())


def _predict_arrays(model, items, options) -> Results:
    import time

    from detect.inference.predictor import CapCount, detect_many
    from detect.inference.sources import ArraySource

    warned: list = []
    arrays = [(name, _checked_array(name, a, warned, model.model_config.input_bands)) for name, a in items]
    caps, found, t0 = CapCount(), [], time.perf_counter()
    for (name, a), det in zip(arrays, detect_many(model, (ArraySource(a, name, model.model_config.input_bands) for name, a in arrays), options)):
        caps.add(det)
        found.append(Detections.from_dict(det, model.class_names, name, a.shape[1], a.shape[0], image=a))
    if caps.warning(model.model_config.postprocess):
        print(caps.warning(model.model_config.postprocess), file=sys.stderr)
    summary = {"images": len(arrays), "skipped_done": 0, "failed": [], "tiles": caps.tiles,
               "seconds": time.perf_counter() - t0, "objects_per_class": None,
               "capped_tiles": caps.at_max, "top_k_capped_tiles": caps.at_top_k}
    return Results(found, summary)


# ---- evaluate ----------------------------------------------------------------


def evaluate(model_or_predictions, ann, images=None, *, tile: int | None = None, overlap: float | None = None,
             scale: float | None = None, batch_size: int = 4, score_threshold: float | None = None,
             iou_threshold: float | None = None, max_detections: int | None = None,
             agnostic_nms: bool | None = None, backend: str = "detect", area_ranges: str = "", max_dets="1,10,100",
             operating_point_at: float | None = None, save_predictions=None, report=None,
             plots=None, html=None, threads: int | None = None) -> Report:
    """COCO statistics (pycocotools-exact) of a model or of detections against ``ann``.

    ``model_or_predictions``: a detector (object, ``.keras`` / ``.tflite`` path
    or run folder; ``threads`` for a ``.tflite``), run over ``images`` (the folder the ground truth's file_name
    values are in) through the same path as :func:`predict`; or detections:
    a COCO results file (``.json``), a list of COCO result dicts, or the
    :class:`~detect.results.Results` of :func:`predict` (matched to the
    ground truth by file name and class name).

    ``score_threshold`` filters detections (with a model: post-processing, as
    ``iou_threshold`` / ``max_detections`` / ``agnostic_nms``); ``max_dets`` is COCO's maxDets
    list (``"1,10,100"`` or a tuple); ``area_ranges`` adds size buckets
    (``"tiny:0:16,small:16:32"``, side length px); ``operating_point_at``
    reports the operating point at that score instead of the best F1.
    ``save_predictions`` / ``report`` / ``plots`` / ``html``: a results file / a
    JSON report / a folder of PNG curves / an HTML view (needs ``images``) to
    write (none by default).
    """
    from detect.evaluation import BACKENDS
    from detect.evaluation.coco_eval import load_ground_truth
    from detect.evaluation_run import run_evaluation

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    common = dict(backend=backend, area_ranges=area_ranges, max_dets=max_dets,
                  operating_point_at=operating_point_at, report=report, plots=plots, html=html)
    given = model_or_predictions
    if isinstance(given, Results):
        given = _results_to_coco(given, load_ground_truth(ann))
    is_path = isinstance(given, (str, Path))
    if isinstance(given, list) or (is_path and Path(given).suffix.lower() not in (".keras", ".tflite")
                                   and not Path(given).is_dir()):
        if iou_threshold is not None or max_detections is not None or agnostic_nms is not None:
            raise ValueError("iou_threshold, max_detections and agnostic_nms apply to a model only")
        return run_evaluation(ann, predictions=given, score_threshold=score_threshold, images=images, **common)
    if images is None:
        raise ValueError("a model needs images (the folder the ground truth's file_name values are in)")
    options = tile_options(tile, overlap, scale, batch_size)
    model = _model(given, threads)
    with postprocessing(model, score_threshold, iou_threshold, max_detections, agnostic_nms):
        return run_evaluation(ann, model=model, images=images, options=options,
                              save_predictions=save_predictions, **common)


def _results_to_coco(results: Results, gt: dict) -> list[dict]:
    """COCO results with the ground truth's image ids (by file name) and category ids (by name)."""
    from detect.inference.outputs import image_ids_by_file_name

    by_file = image_ids_by_file_name(gt)
    by_name = {c["name"]: c["id"] for c in gt["categories"]}
    out = []
    for d in results:
        ids = by_file.get(Path(d.source).name, [])
        if len(ids) != 1:
            raise ValueError(f"{d.source}: {'no' if not ids else len(ids)} ground-truth images named "
                             f"{Path(d.source).name}; cannot evaluate it")
        missing = sorted(set(d.names) - set(by_name))
        if missing and len(d):
            raise ValueError(f"classes {missing} are not categories of the ground truth")
        out += d.to_coco(ids[0], [by_name.get(n, -1) for n in d.names])
    return out


# ---- train and export ------------------------------------------------------------


@dataclass
class Run:
    """A finished training run: its folder, the trained model and the metrics per epoch.

    ``metrics``: one dict per epoch as in ``metrics.csv`` (epoch, losses,
    learning rate, validation AP/AP50 when validated), numbers as floats.
    """

    path: Path
    model: object
    metrics: list[dict]

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, {len(self.metrics)} epochs)"


def _config_keys() -> dict[str, str]:
    """Leaf name -> dotted config key (every leaf name is unique across sections)."""
    import dataclasses

    from detect.config import DetectConfig

    def walk(obj, prefix=""):
        for f in dataclasses.fields(obj):
            if not f.metadata.get("plain", True):
                continue
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from walk(value, f"{prefix}{f.name}.")
            else:
                yield prefix + f.name

    return {k.rsplit(".", 1)[-1]: k for k in walk(DetectConfig())}


def config_overrides(overrides: dict) -> dict:
    """``{"epochs": 3, "train__learning_rate": 0.01}`` -> ``{"train.epochs": 3, "train.learning_rate": 0.01}``.

    A bare name is the config field of that name (each is unique); ``__``
    spells a dotted path. An unknown name is an error with suggestions.
    """
    keys = _config_keys()
    out = {}
    for name, value in overrides.items():
        dotted = name.replace("__", ".") if "__" in name else keys.get(name)
        if dotted is None or dotted not in keys.values():
            close = difflib.get_close_matches(name.replace("__", "."), list(keys) + list(keys.values()), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise TypeError(f"unknown option {name!r}: neither an argument of detect.train nor a config "
                            f"field{hint}")
        out[dotted] = list(value) if isinstance(value, tuple) else value
    return out


def train(train_ann=None, train_images=None, out=None, config=None, *, val_ann=None, val_images=None,
          resume: bool = False, overwrite: bool = False, time_budget: str | float | None = None,
          init_from=None,
          gsd: float | None = None, backbone_weights: str | None = None, bands=None, set=(),
          strict: bool = False, strategy: str = "default", mixed_precision: bool = False, verbose: int = 1,
          **overrides) -> Run:
    """Train a detector on a COCO dataset into the run folder ``out``; returns a :class:`Run`.

    ``config``: a YAML path or a :class:`~detect.config.DetectConfig`
    (default: defaults, fitted to the data). Config fields can be set as
    keywords (``epochs=3``, ``learning_rate=0.005``, or ``train__epochs=3``)
    or as the CLI's ``set=["train.epochs=3"]``. ``time_budget`` (``"20m"``,
    ``"90s"``, seconds) fits the schedule to what this machine can do in that
    time. ``init_from``: a detector (``.keras`` or run folder) to start from:
    weights matched by layer path and shape, class logits remapped by class
    name, its architecture unless the config pins it (:mod:`detect.transfer`).
    ``bands`` (``"1,2,3,4"``): the 1-based bands of the training files the
    model takes, in order; sets ``model.input_bands`` to their count and is
    stored in the model (prediction reads the same bands).
    ``resume=True`` continues ``out`` from its newest intact epoch
    (nothing else needed). ``out`` must not exist or be empty unless
    ``overwrite`` (which replaces a previous run only). Raises
    :class:`~detect.engine.TrainingError` when training stops on a bad loss.
    """
    if out is None:
        raise ValueError("out (the run folder) is required")
    if time_budget is not None and isinstance(time_budget, str):
        from detect.time_budget import parse_duration

        parse_duration(time_budget)  # a bad value fails before anything loads
    if gsd is not None and gsd <= 0:
        raise ValueError(f"gsd must be > 0 metres per pixel, got {gsd}")
    assignments = list(set)
    if backbone_weights:
        assignments.insert(0, f"model.backbone_weights={backbone_weights}")
    if bands:
        chosen = _bands(bands)
        assignments[:0] = [f"model.input_bands={len(chosen)}", f"model.bands={list(chosen)}"]
    settings = config_overrides(overrides)  # an unknown keyword fails before TensorFlow loads
    from detect.engine import train_run

    train_run(out, train_ann=train_ann, train_images=train_images, val_ann=val_ann, val_images=val_images,
              config=config, settings=settings, overrides=assignments, resume=resume, overwrite=overwrite,
              strict=strict, strategy=strategy, mixed_precision=mixed_precision, time_budget=time_budget, gsd=gsd,
              init_from=init_from, verbose=verbose)
    return _finished_run(Path(out))


def _finished_run(path: Path) -> Run:
    metrics = []
    if (path / "metrics.csv").is_file():
        with open(path / "metrics.csv") as f:
            for row in csv.DictReader(f):
                metrics.append({k: _number(v) for k, v in row.items()})
    return Run(path, load_model(path / "model.keras"), metrics)


def _number(text: str):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


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
    a folder, or a list of image paths). See :mod:`detect.litert`.
    """
    if format == "savedmodel":
        if quantize != "none" or calibration is not None or tile is not None:
            raise ValueError("quantize, calibration and tile apply to format='tflite' only")
        from detect.saved_model import export_saved_model

        return export_saved_model(_model(model), out)
    if format != "tflite":
        raise ValueError(f"format must be 'savedmodel' or 'tflite', got {format!r}")
    from detect.litert import calibration_set, export_tflite

    if isinstance(calibration, (str, Path)):
        calibration = calibration_set(calibration)[0]
    return export_tflite(_model(model), out, quantize=quantize, calibration=calibration,
                         calibration_tiles=calibration_tiles, tile=tile, overwrite=overwrite)
