#!/usr/bin/env python
"""Do detections depend on where tile edges fall? A trained model over one large generated
raster, predicted four ways:

- ``reference``: the model's own tile rule;
- ``overlap``: the tile overlap raised by ``--overlap-delta`` (another grid over the same pixels);
- ``shifted``: the raster cropped by ``--shift`` of a tile at its top-left (every tile edge moves;
  boxes are moved back before comparing, and only objects inside the common area count);
- ``parts``: the raster cut into ``--parts`` x ``--parts`` GeoTIFFs along lines that are not tile
  edges, predicted together with ``--merge-across-scenes`` (the GeoPackage, back in pixels);
- ``mosaic``: the same parts predicted with ``--mosaic`` (joined as one VRT; the objects on the
  cut lines are seen whole).

For each, the share of the reference's confident detections (score at or above the model's
calibrated per-class threshold, else ``--score``) that reappear, same class, at IoU >= 0.5 and
>= 0.9, among that run's confident detections and among all of its detections (the gap between
the two is score flicker near the threshold), and its count of confident detections against the
reference's. Where the run has cut lines (the crop's edges, the parts' edges), the reference boxes
that did not reappear (among confident, IoU 0.5) are counted by their distance to the nearest cut
line: misses near a cut are objects that lost their context beyond it. Targets (the tile-grid issue): >= 98% at IoU 0.5, >= 90% at IoU 0.9, the parts'
count within 1% of the whole raster's.

    python tools/benchmark_tiling.py --model runs/dense/model.keras            # 2048 px dense scene
    python tools/benchmark_tiling.py --model M --size 3072 --seed 1 --parts 3

The scene is ``tools/make_dense_aerial.py``'s, drawn at the raster's full size (objects of
10-40 px, touching), written as a north-up GeoTIFF (``[geo]`` extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import make_dense_aerial  # noqa: E402

from detect.config.defaults import UNCALIBRATED_SCORE_THRESHOLD  # noqa: E402

CRS = "EPSG:32633"
MISS_DISTANCES = (8, 32, 64, 128)  # px from a cut line
PIXEL = 0.3  # metres


def _write_tif(path: Path, image: np.ndarray, x0: int = 0, y0: int = 0) -> Path:
    """``image [H, W, 3]`` uint8 as a GeoTIFF whose pixel (0, 0) is the whole raster's (x0, y0)."""
    import rasterio
    from rasterio.transform import from_origin

    transform = from_origin(500000 + x0 * PIXEL, 4000000 - y0 * PIXEL, PIXEL, PIXEL)
    with rasterio.open(path, "w", driver="GTiff", height=image.shape[0], width=image.shape[1], count=3,
                       dtype="uint8", crs=CRS, transform=transform) as ds:
        ds.write(np.moveaxis(image, -1, 0))
    return path


def _arrays(results) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.concatenate([d.boxes for d in results] or [np.zeros((0, 4))]).astype(np.float64)
    return boxes, np.concatenate([d.scores for d in results]), np.concatenate([d.labels for d in results])


def _from_gpkg(path: Path, names) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes of the run-level GeoPackage, back in the whole raster's pixels."""
    import geopandas as gpd

    frame = gpd.read_file(path)
    b = frame.geometry.bounds.to_numpy()
    boxes = np.stack([(b[:, 0] - 500000) / PIXEL, (4000000 - b[:, 3]) / PIXEL,
                      (b[:, 2] - 500000) / PIXEL, (4000000 - b[:, 1]) / PIXEL], axis=1)
    labels = np.array([list(names).index(n) for n in frame["label"]], np.int64)
    return boxes, frame["score"].to_numpy(np.float64), labels


def _reappear(ref, other, thresholds, inside=None, cuts=None) -> dict:
    """Shares of ``ref``'s confident boxes with a same-class box of ``other`` at IoU >= 0.5 / 0.9:
    among ``other``'s confident ones and among all of them; the confident counts; and with
    ``cuts`` (``(xs, ys)``: cut lines, px) the misses by their distance to the nearest cut."""
    from detect.ops.numpy_boxes import iou

    def confident(run):
        boxes, scores, labels = run
        keep = scores >= thresholds[labels]
        if inside is not None:
            keep &= inside(boxes)
        return boxes[keep], labels[keep]

    rb, rl = confident(ref)
    ob_all, _, ol_all = other
    ob, ol = confident(other)
    out = {"reference": len(rb), "this run": len(ob)}
    for name, (boxes, labels) in (("confident", (ob, ol)), ("any score", (ob_all, ol_all))):
        if len(rb) == 0:
            best = np.zeros(0)
        else:
            m = iou(rb[:, None], boxes[None, :]) if len(boxes) else np.zeros((len(rb), 0))
            m = np.where(rl[:, None] == labels[None, :], m, 0.0) if len(boxes) else m
            best = m.max(axis=1) if m.shape[1] else np.zeros(len(rb))
        out[f"{name} IoU>=0.5"] = float((best >= 0.5).mean()) if len(best) else float("nan")
        out[f"{name} IoU>=0.9"] = float((best >= 0.9).mean()) if len(best) else float("nan")
        if name == "confident" and cuts is not None:
            missed = rb[best < 0.5]
            dist = np.full(len(missed), np.inf)
            for axis, lines in ((0, cuts[0]), (1, cuts[1])):
                for c in lines:  # 0 when the box crosses the line, else the gap to it
                    gap = np.maximum(missed[:, axis] - c, c - missed[:, axis + 2]).clip(min=0)
                    dist = np.minimum(dist, gap)
            out["missed"] = len(missed)
            out["missed by distance"] = {f"<{d}": int((dist < d).sum()) for d in MISS_DISTANCES}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a trained detector (model.keras, run folder or .tflite)")
    p.add_argument("--work", type=Path, default=Path("/tmp/detect_benchmark_tiling"), help="rasters and outputs")
    p.add_argument("--size", type=int, default=2048, help="raster side, px (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overlap", type=float, default=None,
                   help="the tile overlap of every run but 'overlap' (default: the model's)")
    p.add_argument("--overlap-delta", type=float, default=0.15, help="added to the overlap for the 'overlap' run")
    p.add_argument("--shift", type=float, default=0.37, help="crop at the top-left, fraction of a tile")
    p.add_argument("--parts", type=int, default=2, help="cut into N x N GeoTIFFs (default: %(default)s)")
    p.add_argument("--score", type=float, default=UNCALIBRATED_SCORE_THRESHOLD,
                   help="the confident score for a model without calibrated thresholds (default: %(default)s)")
    args = p.parse_args(argv)

    import detect

    model = detect.load_model(args.model)
    rule, pp = model.model_config.input, model.model_config.postprocess
    names = model.class_names
    thresholds = np.array(pp.class_thresholds or [args.score] * len(names))
    low = pp.score_threshold  # every detection the model outputs (predict's call): the cut is ours
    overlap = rule.overlap if args.overlap is None else args.overlap
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    image, _ = make_dense_aerial.make_scene(np.random.default_rng(args.seed), args.size)
    whole = _write_tif(work / "whole.tif", image)
    print(f"{args.size} px raster, tile {rule.tile} px, overlap {overlap:g}; confident: score >= "
          + ", ".join(f"{n} {t:.2f}" for n, t in zip(names, thresholds)), flush=True)

    ref = _arrays(detect.predict(model, whole, overlap=overlap, score_threshold=low))
    runs = {"overlap": (_arrays(detect.predict(model, whole, overlap=min(0.9, overlap + args.overlap_delta),
                                                    score_threshold=low)),
                        None, None)}
    d = int(round(args.shift * rule.tile))
    moved = _arrays(detect.predict(model, _write_tif(work / "shifted.tif", image[d:, d:], d, d), overlap=overlap,
                                   score_threshold=low))
    moved = (moved[0] + np.array([d, d, d, d]), moved[1], moved[2])
    margin = 2.0  # px: an object cut by the crop is not the same object

    def inside(boxes):
        return (boxes[:, 0] >= d + margin) & (boxes[:, 1] >= d + margin)

    runs["shifted"] = (moved, inside, ([d], [d]))
    cuts = [int(round(args.size * (k + 0.47) / args.parts)) for k in range(1, args.parts)]
    edges = [0, *cuts, args.size]
    parts = work / "parts"
    parts.mkdir(exist_ok=True)
    files = []
    for i in range(args.parts):
        for j in range(args.parts):
            y0, y1, x0, x1 = edges[i], edges[i + 1], edges[j], edges[j + 1]
            files.append(_write_tif(parts / f"part_{i}_{j}.tif", image[y0:y1, x0:x1], x0, y0))
    out = work / "parts_out"
    detect.predict(model, [str(f) for f in files], out=out, format="gpkg", merge_across_scenes=True,
                   overwrite=True, overlap=overlap, score_threshold=low)
    runs["parts"] = (_from_gpkg(next(out.glob("*.gpkg")), names), None, (cuts, cuts))
    mosaic = detect.predict(model, [str(f) for f in files], out=work / "mosaic_out", mosaic=True, overwrite=True,
                            overlap=overlap, score_threshold=low)
    runs["mosaic"] = (_arrays(mosaic), None, (cuts, cuts))  # the VRT's pixels are the whole raster's

    print(f"\n{'run':<10}{'confident':>10}{'vs ref':>8}   reappear among confident     among any score")
    print(f"{'':<28}{'IoU>=0.5':>12}{'IoU>=0.9':>10}{'IoU>=0.5':>12}{'IoU>=0.9':>10}")
    notes = []
    for name, (run, region, cut_lines) in runs.items():
        r = _reappear(ref, run, thresholds, region, cut_lines)
        print(f"{name:<10}{r['this run']:>10}{r['this run'] / max(1, r['reference']) - 1:>+8.1%}"
              f"{r['confident IoU>=0.5']:>12.1%}{r['confident IoU>=0.9']:>10.1%}"
              f"{r['any score IoU>=0.5']:>12.1%}{r['any score IoU>=0.9']:>10.1%}")
        if "missed" in r:
            notes.append(f"{name}: {r['missed']} confident reference boxes missed at IoU 0.5; within "
                         + ", ".join(f"{k[1:]} px of a cut line: {v}" for k, v in r["missed by distance"].items()))
    print(f"(reference: {int((ref[1] >= thresholds[ref[2]]).sum())} confident detections)")
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
