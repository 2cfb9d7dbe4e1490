"""``detect <command>``: thin argument parsing that calls the library.

Each subcommand lives in a ``_add_<name>`` function that registers its
parser and a handler; handlers import the heavy modules lazily so that
``detect --help`` answers instantly.
"""

from __future__ import annotations

import argparse
import os
import sys

# TensorFlow's C++ start-up chatter hides the messages users need.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from detect import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detect",
        description="RetinaNet object detection for TensorFlow 2 / Keras 3, "
        "built for aerial and satellite imagery.",
        epilog="Run 'detect <command> --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"detect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for add in _COMMANDS:
        add(sub)
    return parser


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="write a SavedModel with a uint8 serving signature",
        description="Export a saved detector (.keras) as a TensorFlow SavedModel. The "
        "'serving_default' signature takes uint8 RGB images [B, H, W, 3] of any size and "
        "returns boxes (xyxy pixels), scores, labels and num_detections, NMS included. "
        "Inspect it with: saved_model_cli show --dir DIR --all")
    p.add_argument("--model", required=True, help="detector saved by training (model.keras)")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.set_defaults(handler=_run_export)


def _run_export(args) -> int:
    from detect.export import export_saved_model
    from detect.models import load_model

    model = load_model(args.model)
    out = export_saved_model(model, args.out)
    print(f"wrote SavedModel to {out} (signature 'serving_default': uint8 images -> detections)")
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="COCO mAP (pycocotools-exact), per-class AP, size buckets, operating point",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate detections against COCO ground truth.\n\n"
        "  detect evaluate --ann GT.json --predictions DT.json\n"
        "  detect evaluate --ann GT.json --model model.keras --images DIR\n\n"
        "Prints pycocotools' 12 statistics (same numbers, order and wording), a per-class "
        "table and the operating point: per class and overall, the score threshold that "
        "maximises F1 at IoU 0.5, with precision, recall, F1 and count error there.")
    p.add_argument("--ann", required=True, help="COCO instances JSON (ground truth)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", help="COCO results JSON to evaluate (no model needed)")
    src.add_argument("--model", help="detector (model.keras) to run over --images first")
    p.add_argument("--images", help="image folder for --model (file_name is relative to it)")
    p.add_argument("--save-predictions", default="detections.json",
                   help="with --model: where to write the COCO results JSON (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="with --model (default: %(default)s)")
    p.add_argument("--backend", choices=["faster-coco-eval", "pycocotools"],
                   default="faster-coco-eval",
                   help="faster-coco-eval (default, same numbers, ~10x faster) or pycocotools")
    p.add_argument("--area-ranges", default="",
                   help="extra size buckets 'name:min:max,...' in pixels of side length "
                   "(sqrt(area)), e.g. 'tiny:0:16,small:16:32,rest:32:inf'")
    p.add_argument("--score-threshold", type=float,
                   help="report the operating point at this score instead of the best-F1 one")
    p.add_argument("--report", help="write everything as JSON here")
    p.add_argument("--plots", help="write precision-recall curves (PNG) into this folder")
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args) -> int:
    from detect.evaluation import evaluate, operating_points, parse_area_ranges
    from detect.evaluation.coco_eval import load_ground_truth, load_results
    from detect.evaluation.report import format_report, report_dict, write_json

    ranges = parse_area_ranges(args.area_ranges)
    gt = load_ground_truth(args.ann)
    if args.model:
        if not args.images:
            raise ValueError("--model needs --images (the folder the ground truth's file_name values are in)")
        from detect.inference.coco_dataset import predict_coco
        from detect.models import load_model

        results = predict_coco(load_model(args.model), gt, args.images, batch_size=args.batch_size)
        print(f"wrote {len(results)} detections to {write_json(results, args.save_predictions)}")
    else:
        results = load_results(args.predictions, gt)
    if not results:
        print("warning: no detections to evaluate; all statistics are 0", file=sys.stderr)
    result = evaluate(gt, results, backend=args.backend, area_ranges=ranges)
    points = operating_points(gt, results, result.category_ids, score_threshold=args.score_threshold)
    print(format_report(result, points))
    if args.report:
        meta = {"ground_truth": args.ann, "predictions": args.predictions or args.save_predictions,
                "backend": args.backend}
        print(f"\nreport: {write_json(report_dict(result, points, **meta), args.report)}")
    if args.plots:
        from detect.evaluation.plots import write_pr_curves

        files = write_pr_curves(result, args.plots)
        print(f"plots: {len(files)} PNG files in {args.plots}")
    return 0


_COMMANDS: list = [_add_evaluate, _add_export]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        # Expected user errors: one clear line, no TensorFlow traceback.
        print(f"detect {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
