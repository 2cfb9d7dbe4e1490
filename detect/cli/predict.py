"""``detect predict`` and ``detect merge``: parsers and handlers (registered by :mod:`detect.cli.main`)."""

from __future__ import annotations

from pathlib import Path

from detect.cli.args import add_command, add_postprocess_args, add_tile_args, tile_kwargs
from detect.config import defaults


def _add_predict(sub) -> None:
    p = add_command(
        sub, "predict", "detect objects in images, folders or globs (tiled for large images)",
        "Run a trained detector over imagery.\n\n"
        "  detect predict --model model.keras --out OUT scene.tif folder/ 'tiles/*.png'\n\n"
        "Images larger than --tile are cut into overlapping tiles, batched, and the tiles' "
        "detections merged so an object cut by a seam is reported once. Outputs in OUT: "
        "detections/NAME.json per image (written atomically; a rerun with the same model and "
        "settings skips finished images, with others it refuses unless --overwrite: predict.json "
        "records which), detections.csv (file, xmin, ymin, xmax, ymax, label, score), "
        "coco_results.json + images.json (image ids and category ids -> names), and with "
        "--save-images annotated images/NAME.jpg. Unreadable inputs are reported and skipped; "
        "the exit code is 1 if any failed.\n\n"
        "TIFF/GeoTIFF inputs are read window by window with rasterio (pip install "
        "'detect[geo]'), so memory follows the tile batch, not the scene; georeferenced ones "
        "also get geojson/NAME.geojson in the raster's CRS. Videos (mp4, avi, mov, mkv): every "
        "--stride-th frame; rows are named FILE#frame=N; --save-images writes an annotated "
        "video images/NAME.mp4.")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image file, folder or glob")
    p.add_argument("--model", required=True,
                   help="trained detector (model.keras, or a .tflite written by 'detect export')")
    p.add_argument("--out", required=True, help="output folder")
    add_tile_args(p)
    add_postprocess_args(p)
    p.add_argument("--no-gsd-match", action="store_true",
                   help="do not resample GeoTIFFs whose pixel size differs from the model's "
                   "training ground sample distance")
    p.add_argument("--ann", help="COCO ground truth: coco_results.json then uses its image ids "
                   "(matched by file name) and category ids, ready for 'detect evaluate'")
    p.add_argument("--bands", help="1-based bands to read, e.g. 3,2,1: as many as the model takes (an RGB "
                   "model also takes one band, as grey); default: the bands stored in the model, else "
                   "1,2,3 of a 3-4 band file for an RGB model, every band of an N-band file for an "
                   "N-band model. 16-bit data is stretched from the 2nd-98th percentile of a "
                   "decimated read (per band for an N-band model)")
    p.add_argument("--stride", type=int, default=1, help="videos: every Nth frame (default: %(default)s)")
    p.add_argument("--save-images", action="store_true", help="write annotated images (or video)")
    p.add_argument("--line-width", type=int, metavar="PX",
                   help="--save-images: box outline width (default: 1 px per started 800 px of the "
                   "image's long side)")
    p.add_argument("--hide-labels", action="store_true", help="--save-images: boxes only, no text")
    p.add_argument("--hide-scores", action="store_true", help="--save-images: class names without scores")
    p.add_argument("--html", nargs="?", const=True, default=False, metavar="FILE",
                   help="also an HTML view (FILE, default OUT/view.html): the detections over each image "
                   "(an overview of a large raster), zoom, pan, class and score filters; offline, one "
                   "file (see 'detect view')")
    p.add_argument("--overwrite", action="store_true",
                   help="redo every input, also those with outputs (needed when OUT holds results of "
                   "another model or other settings); with --shard: this shard's units")
    g = p.add_argument_group("GIS outputs (georeferenced rasters; pip install 'detect[geo]')")
    g.add_argument("--format", choices=defaults.FORMATS, default="geojson",
                   help="geojson: per-scene geojson/NAME.geojson in the raster's CRS (always written); "
                   "gpkg: also OUT/detections.gpkg, one layer for the run (label, score, file, model; "
                   "one layer per CRS when scenes differ)")
    g.add_argument("--geojson-wgs84", action="store_true",
                   help="also OUT/detections_wgs84.geojson: every scene in EPSG:4326 (RFC 7946: lon/lat, "
                   "counter-clockwise rings)")
    g.add_argument("--merge-across-scenes", action="store_true",
                   help="adjacent scenes of one CRS (a mosaic of tiles) are merged where they touch or "
                   "overlap: an object cut by two files is reported once in OUT/merged.geojson and the "
                   "GeoPackage / WGS84 GeoJSON (scenes in other CRSs merge within their own)")
    g.add_argument("--mosaic", action="store_true",
                   help="join the input rasters (tiles of one orthophoto: one CRS, one pixel grid) into "
                   "OUT/mosaic.vrt and predict it as one raster, so an object cut by two files is seen "
                   "whole (--merge-across-scenes only joins the pieces found in each file)")
    g = p.add_argument_group("scale-out: many scenes, many processes (see 'detect merge')")
    g.add_argument("--shard", metavar="I/N",
                   help="run only shard I (from 0) of N of the job's (scene, window) units, balanced "
                   "by pixels; every shard uses the same --out (a shared folder). A rerun resumes; the "
                   "shard that finds every unit done merges (else run 'detect merge OUT'). For SLURM "
                   "arrays: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
    g.add_argument("--engine", choices=defaults.ENGINES, default="local",
                   help="ray: the units run on Ray Data workers that each load the model once "
                   "(pip install 'detect[ray]'), on a local Ray instance or --address's cluster")
    g.add_argument("--address", metavar="HOST:PORT",
                   help="--engine ray: an existing Ray cluster's head (default: start a local one)")
    g.add_argument("--workers", type=int, default=defaults.WORKERS,
                   help="--engine ray: worker processes, each holding one model (default: %(default)s)")
    p.set_defaults(handler=_run_predict)


def _run_predict(args) -> int:
    from detect.api import predict

    results = predict(args.model, args.sources, out=args.out, **tile_kwargs(args), bands=args.bands,
                      stride=args.stride, gsd_match=not args.no_gsd_match, ann=args.ann,
                      save_images=args.save_images, overwrite=args.overwrite, format=args.format,
                      geojson_wgs84=args.geojson_wgs84, merge_across_scenes=args.merge_across_scenes,
                      mosaic=args.mosaic,
                      shard=args.shard, engine=args.engine, address=args.address, workers=args.workers,
                      html=args.html, line_width=args.line_width, hide_labels=args.hide_labels,
                      hide_scores=args.hide_scores)
    r = results.summary
    rate = r["tiles"] / r["seconds"] if r["seconds"] > 0 and r["tiles"] else 0.0
    if r.get("merged") is False:  # a shard that left units to others
        print(f"\n{r['tiles']} tiles at {rate:.1f} tiles/s; {r['missing_units']} unit(s) of the job still "
              f"to do elsewhere; outputs when merged ('detect merge {args.out}')")
        return 1 if r["failed"] else 0
    done = r["images"] - len(r["failed"]) - r["skipped_done"]
    print(f"\n{done} image(s) processed, {r['skipped_done']} already done, {len(r['failed'])} failed; "
          f"{r['tiles']} tiles at {rate:.1f} tiles/s")
    return _print_outputs(r, args.out)


def _print_outputs(r: dict, out) -> int:
    for name, n in sorted((r["objects_per_class"] or {}).items()):
        print(f"  {name:<20}{n:>7}")
    print(f"outputs in {out}")
    return 1 if r["failed"] or r.get("missing_units") else 0


def _add_merge(sub) -> None:
    p = add_command(
        sub, "merge", "gather the shards of a 'detect predict --shard' / '--engine ray' job",
        "Write the outputs of a sharded prediction job from its units.\n\n"
        "  detect predict --model m.keras --out OUT --shard 0/2 scenes/   # on one machine\n"
        "  detect predict --model m.keras --out OUT --shard 1/2 scenes/   # on another\n"
        "  detect merge OUT\n\n"
        "The tiles of each scene are merged in the scene's pixel space exactly as one process "
        "does, so N shards give the detections of one process. Writes what 'detect predict' "
        "writes (detections/, detections.csv, coco_results.json, GeoJSON, GeoPackage...). "
        "Scenes whose units are not all done are named and left out; the exit code is then 1. "
        "The model is not needed: OUT/job.json holds its configuration.")
    p.add_argument("out", help="the --out folder of the job")
    p.set_defaults(handler=_run_merge)


def _run_merge(args) -> int:
    from detect.inference.sharded import merge_job

    r = merge_job(Path(args.out))
    print(f"\n{r['images']} scene(s) in the job, {len(r['failed'])} failed, {r['missing_units']} unit(s) "
          f"missing; {r['tiles']} tiles ({r['blank_tiles']} nodata)")
    return _print_outputs(r, args.out)


COMMANDS = [_add_predict, _add_merge]
