"""``detect convert`` / ``slice`` / ``doctor`` / ``view``: bringing data in, checking it, and looking
at results (parsers and handlers).

Registered by :mod:`detect.cli.main` next to the model commands; the same rules
hold (heavy imports inside handlers, one-line errors with exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detect.cli.args import Renamed, add_command
from detect.config import defaults


def add_convert(sub) -> None:
    p = add_command(
        sub, "convert", "labels from Pascal VOC, YOLO, CSV (DeepForest) or GIS vectors as COCO JSON",
        "Convert labels to a COCO instances file that 'detect train' reads.\n\n"
        "  detect convert --from voc Annotations/ --images JPEGImages/ --out train.json\n"
        "  detect convert --from yolo labels/ --images images/ --classes classes.txt --out train.json\n"
        "  detect convert --from csv annotations.csv --images images/ --out train.json\n"
        "  detect convert --from vector trees.gpkg --images scenes/ --out train.json\n\n"
        "VOC: 1-based inclusive xmin..xmax become (xmin-1, ymin-1, xmax, ymax). YOLO: normalised "
        "'class cx cy w h' scaled by each image's size (read from the file); an image without a "
        ".txt has no objects. CSV: image_path,xmin,ymin,xmax,ymax,label (DeepForest); an all-zero "
        "box lists an image without objects. vector: polygons or boxes (GeoPackage, Shapefile, "
        "GeoJSON) reprojected to each GeoTIFF's CRS, their bounding boxes in pixels, clipped. "
        "What was dropped or changed is listed with the reason.")
    p.add_argument("labels", help="a folder (voc, yolo), a CSV file, or a vector file")
    p.add_argument("--from", dest="fmt", required=True, choices=["voc", "yolo", "csv", "vector"], help="the labels' format")
    p.add_argument("--to", default="coco", choices=["coco"], help="output format (default: %(default)s)")
    p.add_argument("--images", required=True, help="image folder (vector: a GeoTIFF or a folder of them)")
    p.add_argument("--out", required=True, help="COCO JSON to write")
    p.add_argument("--classes", help="classes.txt (one name per line) or a YOLO data.yaml: the categories, "
                   "in this order (a box of another class is dropped, counted). yolo: its class ids "
                   "(default: found next to the labels); voc / csv / vector: default every class "
                   "seen, ordered by name, so a train / val pair gets the same category ids")
    p.add_argument("--label-field", help="vector: the attribute holding the class (default: label, class, "
                   "name or category; else every feature is 'object')")
    p.add_argument("--layer", help="vector: the layer of a multi-layer file")
    p.add_argument("--drop-difficult", action="store_true", help="voc: leave out objects marked difficult")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(handler=run_convert)


def run_convert(args) -> int:
    from detect.datasets.convert import convert, print_summary
    from detect.util import atomic

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out {out} exists (--overwrite replaces it)")
    classes = Path(args.classes) if args.classes else None
    options = {"voc": {"drop_difficult": args.drop_difficult}, "yolo": {},
               "vector": {"label_field": args.label_field, "layer": args.layer}}.get(args.fmt, {})
    options["classes"] = classes
    coco, report = convert(args.fmt, args.labels, args.images, **options)
    atomic.write_json(out, coco)
    print_summary(coco, report, out)
    return 0


def add_slice(sub) -> None:
    p = add_command(
        sub, "slice", "cut large images or rasters and their labels into a training set of chips",
        "Build a training set of fixed-size chips from scenes larger than the model's input.\n\n"
        "  detect slice --ann scenes.json --images scenes/ --size 512 --overlap 0.2 --out chips/\n\n"
        "Chips are laid out as prediction lays out tiles (the last row and column end at the "
        "edge). A box cut by a chip edge is kept, clipped, when at least --min-visible of its area "
        "is inside, else dropped (counted). --keep-empty keeps that share of the chips without "
        "objects (chosen with --seed); chips of a raster that hold only nodata are skipped. "
        "Writes OUT/images/ (PNG, or GeoTIFF with the chip's transform for georeferenced scenes) "
        "and OUT/annotations.json, and prints a summary table.")
    p.add_argument("--ann", required=True, help="COCO instances JSON of the scenes")
    p.add_argument("--images", required=True, help="folder the file_name values are in")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty; --overwrite)")
    p.add_argument("--size", type=int, default=512, help="chip side in pixels (default: %(default)s)")
    p.add_argument("--overlap", type=float, default=0.2, help="chip overlap, fraction (default: %(default)s)")
    p.add_argument("--min-visible", type=float, default=0.5,
                   help="keep a cut box when this share of its area is in the chip (default: %(default)s)")
    p.add_argument("--keep-empty", type=float, default=0.1,
                   help="share of chips without objects to keep (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="which empty chips are kept (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of --out")
    p.set_defaults(handler=run_slice)


def run_slice(args) -> int:
    from detect.datasets.slicing import slice_dataset

    summary = slice_dataset(args.ann, args.images, args.out, size=args.size, overlap=args.overlap,
                            min_visible=args.min_visible, keep_empty=args.keep_empty, seed=args.seed,
                            overwrite=args.overwrite)
    print(summary.table())
    return 0


def add_doctor(sub) -> None:
    p = add_command(
        sub, "doctor", "the dataset report training prints, on its own (text and PNG)",
        "Check a COCO dataset before training.\n\n"
        "  detect doctor --ann train.json --images images/ [--model model.keras | --config cfg.yaml] "
        "[--plots DIR]\n\n"
        "Prints image and box counts per class, the problems training would count or refuse, "
        "the object size histogram against the anchors (the share of boxes an anchor matches at "
        "IoU >= 0.5, per size bucket) and boxes per image; --plots DIR (or --png FILE) draws the same.")
    p.add_argument("--ann", help="COCO instances JSON")
    p.add_argument("ann_positional", nargs="?", metavar="ANN", help=argparse.SUPPRESS)  # the old spelling
    p.add_argument("--images", required=True, help="folder the file_name values are in")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", help="check against this model's anchors (default: the default anchors)")
    g.add_argument("--config", help="check against this training config's anchors")
    p.add_argument("--plots", metavar="DIR", help="also draw the report as DIR/dataset.png")
    p.add_argument("--png", metavar="FILE", help="also draw the report as this PNG file")
    p.set_defaults(handler=run_doctor)


def run_doctor(args) -> int:
    from detect.datasets.doctor import doctor

    png = Path(args.plots) / "dataset.png" if args.plots else args.png
    if png is not None:
        Path(png).parent.mkdir(parents=True, exist_ok=True)
    report = doctor(args.ann, args.images, model=args.model, config=args.config, png=png)
    print(report.text)
    if png:
        print(f"wrote {png}", file=sys.stderr)
    return 0 if not report.refused else 2


def add_view(sub) -> None:
    p = add_command(
        sub, "view", "an offline HTML page of a predict output: detections over the images",
        "Write one self-contained HTML file (no server, no CDN) that shows the detections of "
        "a 'detect predict' output folder over their images.\n\n"
        "  detect view OUT [--ann GT.json] [--html OUT/view.html]\n\n"
        "Zoom with the wheel, pan by dragging, page with the arrow keys, filter by class and by "
        "score (slider); labels and scores show on hover. Large rasters are shown as an overview "
        "read from the file at most --max-side px on the long side. With --ann (matched by file "
        "name) detections are coloured as true (green) or false (red) positives at IoU 0.5 and "
        "objects without a detection above the slider as missed (dashed yellow). "
        "'#image=N&score=S' at the end of the page's address opens image N at score S.")
    p.add_argument("out_dir", metavar="OUT", help="a 'detect predict --out' folder")
    p.add_argument("--ann", help="COCO ground truth: colour true / false positives and missed objects")
    p.add_argument("--html", metavar="FILE", help="the HTML file to write (default: OUT/view.html)")
    p.add_argument("--out", dest="html", action=Renamed, new="--html")
    p.add_argument("--score-threshold", dest="score", type=float, default=defaults.UNCALIBRATED_SCORE_THRESHOLD,
                   help="the score slider's start (default: %(default)s)")
    p.add_argument("--score", dest="score", type=float, action=Renamed, new="--score-threshold")
    p.add_argument("--max-side", type=int, default=1600,
                   help="long side of the embedded images, px (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace the HTML file if it exists")
    p.set_defaults(handler=run_view)


def run_view(args) -> int:
    from detect.view import write_view
    from detect.view.items import items_from_output

    if not 0 <= args.score <= 1:
        raise ValueError(f"--score-threshold must be in [0, 1], got {args.score}")
    if args.max_side < 64:
        raise ValueError(f"--max-side must be at least 64, got {args.max_side}")
    gt = None
    if args.ann:
        from detect.evaluation.coco_eval import load_ground_truth

        gt = load_ground_truth(args.ann)
    page = Path(args.html) if args.html else Path(args.out_dir) / "view.html"
    if page.exists() and not args.overwrite:
        raise FileExistsError(f"{page} exists: pass --overwrite to replace it, or name another file with --html")
    items, names = items_from_output(args.out_dir, gt)
    write_view(items, page, names, score=args.score,
               max_side=args.max_side, title=f"detect view: {Path(args.out_dir).resolve().name}")
    return 0


COMMANDS = [add_convert, add_slice, add_doctor, add_view]
