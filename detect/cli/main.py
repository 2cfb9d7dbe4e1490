"""``detect <command>``: thin argument parsing that calls the library.

Each subcommand lives in an ``add_<name>`` function that registers its
parser and a handler; handlers import the heavy modules lazily so that
``detect --help`` answers instantly. Here: train, evaluate, export, import;
:mod:`detect.cli.predict`: predict, merge; :mod:`detect.cli.data`: convert,
slice, doctor, view; :mod:`detect.cli.args`: the argument groups they share.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# TensorFlow's C++ start-up chatter hides the messages users need.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from detect import __version__
from detect.cli.args import add_command
from detect.cli.args import add_postprocess_args as _add_postprocess_args
from detect.cli.args import add_tile_args as _add_tile_args
from detect.cli.args import tile_kwargs as _tile_kwargs
from detect.config import defaults, recipes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detect",
        description="RetinaNet object detection for TensorFlow 2 / Keras 3, "
        "built for aerial and satellite imagery.",
        epilog="Run 'detect <command> --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"detect {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="also show TensorFlow's native start-up log lines (hidden by default)")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for add in _COMMANDS:
        add(sub)
    return parser


def _add_export(sub) -> None:
    p = add_command(
        sub, "export", "write a SavedModel, or a (quantised) LiteRT/TFLite file for fast CPU inference",
        "Export a saved detector (.keras).\n\n"
        "  detect export --model model.keras --out saved/\n"
        "  detect export --model model.keras --format tflite --out model.tflite\n"
        "  detect export --model model.keras --format tflite --quantize int8 --calibration data/sample_val "
        "--out model-int8.tflite\n\n"
        "SavedModel: the 'serving_default' signature takes uint8 RGB images [B, H, W, 3] of any "
        "size and returns boxes (xyxy pixels), scores, labels and num_detections, NMS included; "
        "assets/detect.json holds the class names and input rule. Inspect it with: "
        "saved_model_cli show --dir DIR --all\n\n"
        "TFLite: the network (any input size), with the model's config in the file's metadata; 'detect predict/evaluate --model FILE.tflite' run it "
        "through LiteRT (XNNPACK, --threads) with the same tiling, decoding and NMS as the Keras "
        "model. --quantize int8 calibrates activation ranges on tiles of --calibration; when that "
        "folder has annotations (annotations.json + images/, or --calibration-ann), export prints "
        "AP50 and AP of the Keras model and of the file on those images.")
    p.add_argument("--model", required=True, help="detector saved by training (model.keras)")
    p.add_argument("--out", required=True,
                   help="SavedModel: a folder (must not exist or be empty); tflite: the .tflite file")
    p.add_argument("--format", choices=["savedmodel", "tflite"], default="savedmodel",
                   help="default: %(default)s")
    g = p.add_argument_group("tflite")
    g.add_argument("--quantize", choices=defaults.QUANTIZATIONS, default="none",
                   help="none: float32; float16: half-size weights; dynamic: int8 weights, float "
                   "activations; int8: full-integer (needs --calibration). Default: %(default)s")
    g.add_argument("--calibration", metavar="DIR",
                   help="images for int8 calibration and the parity report: a folder of images, or a "
                   "dataset folder with annotations.json and images/")
    g.add_argument("--calibration-ann", metavar="ANN",
                   help="COCO annotations of the --calibration images (enables the parity report)")
    g.add_argument("--calibration-tiles", type=int, default=32,
                   help="tiles cut from the calibration images (default: %(default)s)")
    g.add_argument("--tile", type=int, help="tile side stored as the file's input rule and used to cut "
                   "calibration tiles (default: the model's); the file runs any size")
    g.add_argument("--threads", type=int, help="interpreter threads for the parity report (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing .tflite file")
    p.set_defaults(handler=_run_export)


def _run_export(args) -> int:
    from detect.api import export, load_model

    if args.format == "savedmodel":
        for flag in ("quantize", "calibration", "calibration_ann", "tile"):
            if getattr(args, flag) not in (None, "none"):
                raise ValueError(f"--{flag.replace('_', '-')} applies to --format tflite only")
        out = export(args.model, args.out)
        print(f"wrote SavedModel to {out} (signature 'serving_default': uint8 images -> detections; "
              f"class names and input rule in assets/detect.json)")
        return 0
    from detect.exporters.litert import calibration_set, parity
    from detect.models.litert_model import LiteRTModel

    images, ann = calibration_set(args.calibration, args.calibration_ann) if args.calibration else ([], None)
    if args.calibration_ann and not args.calibration:
        raise ValueError("--calibration-ann needs --calibration (the folder its images are in)")
    model = load_model(args.model)
    out = export(model, args.out, format="tflite", quantize=args.quantize, calibration=images or None,
                 calibration_tiles=args.calibration_tiles, tile=args.tile, overwrite=args.overwrite)
    exported = LiteRTModel(out, threads=args.threads)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {args.quantize}; input rule: "
          f"{exported.tile} px tiles)")
    if ann is not None:
        report = parity(model, exported, ann, images[0].parent)
        print(f"\nparity on {len(images)} calibration images ({ann}):")
        print(f"  {'model':<10}{'AP50':>8}{'AP':>8}{'detections':>12}")
        for name, r in report.items():
            print(f"  {name:<10}{r['AP50']:>8.3f}{r['AP']:>8.3f}{r['detections']:>12}")
        print(f"  difference{report['tflite']['AP50'] - report['keras']['AP50']:>+8.3f}"
              f"{report['tflite']['AP'] - report['keras']['AP']:>+8.3f}")
    return 0


def _add_evaluate(sub) -> None:
    p = add_command(
        sub, "evaluate", "COCO mAP (pycocotools-exact), per-class AP, size buckets, operating point",
        "Evaluate detections against COCO ground truth.\n\n"
        "  detect evaluate --ann GT.json --predictions DT.json\n"
        "  detect evaluate --ann GT.json --model model.keras --images DIR\n\n"
        "Prints pycocotools' 12 statistics (same numbers, order and wording), a per-class "
        "table and the operating point: per class and overall, the score threshold that "
        "maximises F1 at IoU 0.5, with precision, recall, F1 and count error there.\n\n"
        "With --model, every image runs through the same path as 'detect predict' (the "
        "model's input rule: scale, tiles and merging), so both give the same detections. "
        "Dense scenes: raise --max-dets (e.g. 100,300,1000) or recall is capped at 100 per image.")
    p.add_argument("--ann", required=True, help="COCO instances JSON (ground truth)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", help="COCO results JSON to evaluate (no model needed)")
    src.add_argument("--model", help="detector (model.keras or an exported .tflite) to run over --images first")
    p.add_argument("--images", help="image folder for --model (file_name is relative to it)")
    p.add_argument("--save-predictions", metavar="FILE",
                   help="with --model: also write its detections here as a COCO results JSON (default: not "
                   "written); an existing file is refused unless --overwrite")
    p.add_argument("--calibrate", metavar="OUT.keras",
                   help="with --model: also write the model with each class's best-F1 score threshold "
                   "(measured here, at IoU 0.5) stored in it; predict then writes maps, CSV and pictures "
                   "at those thresholds by default")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing --save-predictions, --calibrate, --report, --html files and --plots")
    p.add_argument("--backend", choices=defaults.EVAL_BACKENDS,
                   default="detect",
                   help="detect (default: pycocotools' algorithm over arrays, compiled; the same "
                   "precision/recall arrays bit for bit, measured 27x faster than pycocotools "
                   "on 5,000 images: tools/benchmark_eval.py), or the libraries faster-coco-eval "
                   "and pycocotools themselves, to cross-check")
    p.add_argument("--area-ranges", default="",
                   help="extra size buckets 'name:min:max,...' in pixels of side length "
                   "(sqrt(area)), e.g. 'tiny:0:16,small:16:32,rest:32:inf'")
    p.add_argument("--max-dets", default=",".join(map(str, defaults.MAX_DETS)),
                   help="pycocotools' maxDets: three increasing counts of detections per image "
                   "(default: %(default)s; the stats match pycocotools run with the same list)")
    p.add_argument("--match-iou", type=float, default=0.5, metavar="IOU",
                   help="IoU at which the operating point (precision, recall, F1, count error; overall, per "
                   "class and per image) matches detections to objects (default: %(default)s; DeepForest "
                   "uses 0.4 for tree crowns); the COCO statistics are not affected")
    p.add_argument("--operating-point-at", type=float, metavar="SCORE",
                   help="report the operating point at this score instead of the best-F1 one")
    p.add_argument("--report", help="write everything as JSON here")
    p.add_argument("--plots", help="write precision-recall curves (PNG) into this folder")
    p.add_argument("--html", metavar="FILE",
                   help="write an offline HTML view of the detections over the --images: true / false "
                   "positives and missed objects coloured, score slider at the operating point")
    _add_postprocess_args(p)
    _add_tile_args(p)
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args) -> int:
    from detect.api import evaluate

    if args.save_predictions and not args.model:
        raise ValueError("--save-predictions applies with --model only (the detections it runs)")
    if args.calibrate and not args.model:
        raise ValueError("--calibrate applies with --model only (it writes a calibrated copy of the model)")
    if args.model:
        if not args.images:
            raise ValueError("--model needs --images (the folder the ground truth's file_name values are in)")
        e = evaluate(args.model, args.ann, args.images, **_tile_kwargs(args), backend=args.backend,
                     area_ranges=args.area_ranges, max_dets=args.max_dets,
                     operating_point_at=args.operating_point_at, save_predictions=args.save_predictions,
                     report=args.report, plots=args.plots, html=args.html, calibrate=args.calibrate,
                     overwrite=args.overwrite, match_iou=args.match_iou)
    else:
        if any(v is not None for v in (args.iou_threshold, args.max_detections, args.agnostic_nms, args.vote_iou)):
            raise ValueError("--iou-threshold, --max-detections, --agnostic-nms and --vote-iou apply with --model only")
        e = evaluate(args.predictions, args.ann, args.images, score_threshold=args.score_threshold,
                     backend=args.backend, area_ranges=args.area_ranges, max_dets=args.max_dets,
                     operating_point_at=args.operating_point_at, report=args.report, plots=args.plots,
                     html=args.html, overwrite=args.overwrite, match_iou=args.match_iou)
    if "predictions" in e.written:
        print(f"wrote {len(e.detections)} detections to {e.written['predictions']}")
    print(e)
    if "report" in e.written:
        print(f"\nreport: {e.written['report']}")
    if "calibrated" in e.written:
        path, notes = e.written["calibrated"]
        for note in notes:
            print(f"note: {note}")
        print(f"\ncalibrated model: {path} (predict writes at its per-class thresholds by default)")
    if "plots" in e.written:
        folder, files = e.written["plots"]
        print(f"plots: {len(files)} PNG files in {folder}")
    return 0


def _add_train(sub) -> None:
    p = add_command(
        sub, "train", "train a detector on a COCO-format dataset",
        "Train RetinaNet on a COCO dataset (instances JSON + image folder).\n\n"
        "  detect train --train-ann A.json --train-images DIR --out RUN\n"
        "  detect train ... --config data/sample_config.yaml --set train.epochs=30\n"
        "  detect train --resume RUN\n\n"
        "RUN receives run.yaml (data paths), config.yaml (resolved), checkpoints/epoch-NNNN/ "
        "(the last two epochs, each committed by one rename: checkpoint.keras, state.json, "
        "metrics.csv), metrics.csv, logs/ (TensorBoard) and model.keras (final). --out must not "
        "exist or be empty; a run that fails before its first epoch is removed. Every config "
        "field can be set with --set section.key=value (sections: model, data, train).\n\n"
        "Before training, settings the config does not pin are fitted to the data: "
        "data.max_boxes (the densest image), anchors (best coverage of the boxes, reported per "
        "size bucket), postprocess.max_detections and the input rule (scale, tile, overlap) "
        "the model carries to predict and evaluate. Without --config, the aerial-cpu recipe "
        "(small objects on a CPU, random weights); --config aerial-pretrained-cpu starts from "
        "ImageNet weights (the [pretrained] extra).")
    p.add_argument("--train-ann", "--ann", help="COCO instances JSON for training (--ann, as in the other "
                   "commands, is the same option)")
    p.add_argument("--train-images", "--images", help="folder the training file_name values are in (--images: "
                   "the same option)")
    p.add_argument("--val-ann", help="validation annotations: AP/AP50 reported each epoch")
    p.add_argument("--val-images", help="validation image folder")
    p.add_argument("--out", help="run folder; must not exist or be empty (see --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it holds a previous run (a folder that is not a run is never deleted)")
    p.add_argument("--config", metavar="RECIPE|YAML",
                   help="a packaged recipe by name (" + recipes.describe() + ") or a YAML file with "
                   "model/data/train sections")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.learning_rate=0.005")
    p.add_argument("--resume", metavar="RUN",
                   help="continue RUN from its newest intact epoch (its own config and data paths)")
    p.add_argument("--backbone-weights", metavar="SOURCE",
                   help="imagenet, none, a Keras weights file, a PyTorch state dict (.pth/.pt, for "
                   "efficientnet_lite0), keras_hub:PRESET, a keras-hub preset folder, a .keras feature "
                   "extractor or a SavedModel folder (= --set model.backbone_weights=...; see the README's "
                   "backbone sources). imagenet for efficientnet_lite0 comes from the [pretrained] extra, "
                   "offline; --config aerial-pretrained-cpu is the recipe that uses it")
    p.add_argument("--bands", help="1-based bands of the training images the model takes, in order, e.g. "
                   "1,2,3,4 for RGB+NIR: sets model.input_bands, stored in the model (predict reads the "
                   "same bands); default: RGB (1-3 of 3-4 band files, grey repeated)")
    p.add_argument("--init-from", metavar="MODEL",
                   help="start from this detector (model.keras, checkpoint.keras or a run folder; or a "
                   "keras-hub / keras-cv RetinaNet as 'detect import' takes, imported first): "
                   "weights matched by layer name and shape, class logits remapped by class name, "
                   "its architecture unless --config/--set pin it; prints what was loaded")
    p.add_argument("--mixed-precision", action="store_true",
                   help="mixed_float16 on GPU, mixed_bfloat16 on CPU")
    p.add_argument("--strategy", choices=["default", "mirrored", "multiworker"], default="default",
                   help="tf.distribute strategy (multiworker reads TF_CONFIG)")
    p.add_argument("--strict", action="store_true", help="treat data warnings as errors")
    p.add_argument("--time-budget", metavar="DURATION",
                   help="train for this wall-clock time (90s, 20m, 1h, 1h30m): times a few training "
                   "steps on this machine and fits epochs, warmup and the cosine schedule to them, keeps "
                   "the cosine ending where the run will really stop, then stops with a final model and "
                   "validation AP")
    p.add_argument("--gsd", type=float, metavar="M",
                   help="ground sample distance of the training images, metres per pixel (read "
                   "from GeoTIFF transforms otherwise); stored in the model so prediction on "
                   "rasters of another pixel size resamples to it")
    p.set_defaults(handler=_run_train)


def _run_train(args) -> int:
    from detect.api import train
    from detect.training.engine import TrainingError

    if not args.resume and not args.out:
        raise ValueError("--out is required (or --resume RUN)")
    run = args.resume or args.out
    try:
        train(args.train_ann, args.train_images, run, args.config, val_ann=args.val_ann,
              val_images=args.val_images, resume=bool(args.resume), overwrite=args.overwrite,
              time_budget=args.time_budget, gsd=args.gsd, backbone_weights=args.backbone_weights, bands=args.bands,
              init_from=args.init_from,
              set=args.set, strict=args.strict, strategy=args.strategy, mixed_precision=args.mixed_precision)
    except TrainingError as err:
        print(f"detect train: {err}", file=sys.stderr)
        return 3
    print(f"wrote {run}/model.keras")
    return 0


def _add_import(sub) -> None:
    p = add_command(
        sub, "import", "turn a keras-hub or keras-cv RetinaNet into a detect model",
        "Import a Keras RetinaNet as an ordinary detect model (predict, evaluate, export, "
        "fine-tune, tiled rasters), built from detect's backbone graph, FPN and heads with the "
        "source's weights, anchors, box coding, input scaling and NMS settings: its detections "
        "equal the source's.\n\n"
        "  detect import retinanet_resnet50_fpn_coco --out coco.keras     (keras-hub preset; network)\n"
        "  detect import PRESET_DIR --out model.keras                     (detector.save_to_preset(DIR))\n"
        "  detect import retinanet.keras --out model.keras --classes names.txt   (keras-cv model.save)\n\n"
        "Class names: --classes, else COCO's for a COCO preset, else class_0..K-1. "
        "Needs the [hub] (keras-hub) or [cv] (keras-cv) extra.")
    p.add_argument("source", help="keras-hub preset name or folder, or a .keras keras-cv / keras-hub RetinaNet")
    p.add_argument("--out", required=True, help="the detect model file to write (.keras)")
    p.add_argument("--classes", help="class names, one per line, in the source's class index order")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(handler=_run_import)


def _run_import(args) -> int:
    from detect.models.importers import import_detector
    from detect.util import atomic

    out = Path(args.out)
    if out.suffix != ".keras":
        raise ValueError(f"--out {out}: the model file must end in .keras")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out {out} exists (--overwrite replaces it)")
    if args.classes and not Path(args.classes).is_file():
        raise FileNotFoundError(f"--classes {args.classes}: no such file")
    model = import_detector(args.source, args.classes)
    atomic.save_model(model, out)
    print(f"wrote {out} ({model.count_params():,} parameters, {model.model_config.num_classes} classes)")
    return 0


def _more_commands() -> tuple[list, list]:
    from detect.cli import data as cli_data
    from detect.cli import predict as cli_predict

    return cli_predict.COMMANDS, cli_data.COMMANDS


_PREDICT_COMMANDS, _DATA_COMMANDS = _more_commands()
_COMMANDS: list = [_add_train, *_PREDICT_COMMANDS, _add_evaluate, _add_export, _add_import, *_DATA_COMMANDS]


#: Arguments naming inputs, checked before TensorFlow loads: attribute -> kind.
_INPUTS = {"model": "model", "ann": "file", "train_ann": "file", "val_ann": "file", "config": "file",
           "predictions": "file", "images": "folder", "train_images": "folder", "val_images": "folder",
           "init_from": "path"}


def _check_inputs(args) -> None:
    """Missing files and folders, and broken model files, fail here in milliseconds."""
    from detect.util.files import check_model_file

    for name, kind in _INPUTS.items():
        value = getattr(args, name, None)
        if not value:
            continue
        if name == "init_from":
            from detect.models.importers import is_preset_name

            if is_preset_name(value):
                continue  # a keras-hub preset name: loaded (or refused) by the importer
        if name == "config":
            recipes.recipe_path(value, note=False)  # a recipe's name, or a file
            continue
        if name == "images" and args.command == "convert":
            kind = "path"  # vector labels: one GeoTIFF or a folder of them
        flag = "--" + name.replace("_", "-")
        path = Path(value)
        if kind == "model" and path.suffix == ".keras":
            check_model_file(path)
        elif kind == "folder" and path.is_file():
            raise ValueError(f"{flag} {value} is a file, not a folder{_swapped(args, name)}")
        elif kind == "file" and path.is_dir():
            raise ValueError(f"{flag} {value} is a folder, not a file{_swapped(args, name)}")
        elif kind == "folder" and not path.is_dir():
            raise FileNotFoundError(f"{flag} {value}: no such folder")
        elif kind != "folder" and not path.exists():
            raise FileNotFoundError(f"{flag} {value}: no such {'file or folder' if kind == 'path' else 'file'}")


def _swapped(args, name: str) -> str:
    """``" (--ann and --images swapped?)"`` when the option paired with ``name`` names the other kind."""
    pairs = {"images": "ann", "ann": "images", "train_images": "train_ann", "train_ann": "train_images",
             "val_images": "val_ann", "val_ann": "val_images"}
    other = pairs.get(name)
    value = getattr(args, other, None) if other else None
    if value and (Path(value).is_file() if _INPUTS.get(name) == "file" else Path(value).is_dir()):
        return f" ({'--' + name.replace('_', '-')} and {'--' + other.replace('_', '-')} swapped?)"
    return ""


def _old_spellings(args, parser) -> None:
    """Positional spellings that became options (one release of grace, with a note)."""
    if getattr(args, "ann_positional", None):
        if args.ann:
            parser.error("give the annotations once: --ann FILE")
        print("note: 'detect doctor ANN' is now 'detect doctor --ann ANN'; the old spelling works until "
              "the next release", file=sys.stderr)
        args.ann = args.ann_positional
    if getattr(args, "command", None) == "doctor" and not args.ann:
        parser.error("doctor needs --ann FILE (COCO instances JSON)")


def main(argv: list[str] | None = None) -> int:
    """The ``detect`` command; returns the exit code (0 ok, 2 bad input, 3 training failed).

    Run from the command line (``argv`` None), TensorFlow's native start-up
    lines are filtered from stderr unless ``--verbose`` (:mod:`detect.util.quiet`).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _old_spellings(args, parser)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    if argv is None and not args.verbose:
        from detect.util.quiet import NativeLogFilter

        with NativeLogFilter():
            return _handle(args)
    return _handle(args)


def _handle(args) -> int:
    try:
        _check_inputs(args)
        return int(args.handler(args) or 0)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as err:
        # Expected user errors: one clear line, no TensorFlow traceback.
        print(f"detect {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, and how to go on
        print(f"detect {args.command}: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except PermissionError as err:  # a read-only --out, a file owned by someone else
        where = err.filename or "a file"
        print(f"detect {args.command}: error: no permission to {'write' if err.errno == 13 else 'use'} "
              f"{where}: choose a folder you can write to (--out) or change its permissions", file=sys.stderr)
        return 2


def _resume_hint(args) -> str:
    """For an interrupted ``detect train``: how to continue it, when an epoch was committed."""
    run = getattr(args, "resume", None) or getattr(args, "out", None)
    if args.command != "train" or not run:
        return ""
    from detect.training.runs import RunFolder

    committed = RunFolder(run).committed()
    if not committed:
        return " before its first epoch was saved (nothing to resume)"
    return f" after {committed[0].name}; continue with: detect train --resume {run}"


if __name__ == "__main__":
    sys.exit(main())
