#!/usr/bin/env python
"""Tiles/second and peak memory of ``detect predict`` as rasters grow, in one run.

Writes tiled GeoTIFFs of ``--sizes`` pixels on a side (aerial-like texture,
written strip by strip so generation itself stays small), then runs the
prediction over each in a fresh process and reports tiles/s, seconds per
megapixel and that process's peak RSS. Time per megapixel should stay flat
(within 10%) and peak memory should not grow with the scene.

    python tools/benchmark_predict.py [--sizes 2000 8000 20000] [--model M.keras]
    python tools/benchmark_predict.py --sizes 2000 --compare-cli 3   # API vs CLI, same raster

Every run goes through ``detect.predict`` (the API the CLI calls).

Without ``--model`` a small random ResNet-18 detector is built (speed and
memory do not depend on the weights). Needs the [geo] extra (rasterio).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pathlib import Path
import numpy as np
import detect
model_path, raster, out, tile, via = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if via == "api":  # the sweep: a loaded, warmed-up model through detect.predict
    model = detect.load_model(model_path)
    for b in (4, 1):  # trace full and last-partial batch shapes before timing
        model.predict_on_batch(np.zeros((b, tile, tile, 3), np.float32))
    t0 = time.perf_counter()
    r = detect.predict(model, raster, out=out, tile=tile, overlap=0.2, batch_size=4, overwrite=True).summary
elif via == "api-path":  # API vs CLI: both load the model from its file inside the timing
    t0 = time.perf_counter()
    r = detect.predict(model_path, raster, out=out, tile=tile, overlap=0.2, batch_size=4, overwrite=True).summary
else:
    from detect.cli import main
    t0 = time.perf_counter()
    assert main(["predict", "--model", model_path, "--out", str(out), "--tile", str(tile), "--overlap", "0.2",
                 "--batch-size", "4", "--overwrite", str(raster)]) == 0
    r = {"tiles": None}  # the command prints its count; the sweep's API run on this raster has it
seconds = time.perf_counter() - t0
print(json.dumps({"tiles": r["tiles"], "seconds": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_raster(path: Path, size: int) -> None:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    sys.path.insert(0, str(ROOT / "tools"))
    import make_synthetic

    rng = np.random.default_rng(0)
    block, _ = make_synthetic.make_scene(rng, 1024, empty=False)  # one 1024 px scene, tiled
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=3, dtype="uint8",
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate",
                       transform=from_origin(0, 0, 0.3, 0.3), crs="EPSG:3857") as dst:
        for y in range(0, size, 1024):
            h = min(1024, size - y)
            row = np.tile(block[:h], (1, -(-size // 1024), 1))[:, :size]
            dst.write(np.moveaxis(row, -1, 0), window=rasterio.windows.Window(0, y, size, h))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 20000])
    p.add_argument("--model", help="detector to use (default: a random ResNet-18 detector)")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--workdir", type=Path, help="where rasters go (default: a temp folder)")
    p.add_argument("--compare-cli", type=int, default=0, metavar="N",
                   help="also time N alternating runs of detect.predict and of the detect predict "
                   "command on the first size (model loaded from its file in both) and compare")
    args = p.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="detect-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = args.model
    if not model:
        from detect.models import build_retinanet

        model = str(work / "random.keras")
        build_retinanet(num_classes=3, backbone="resnet18", backbone_width=32, fpn_channels=64,
                        head_convs=2).save(model)
    rows = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for size in args.sizes:
        raster = work / f"scene_{size}.tif"
        if not raster.exists():
            write_raster(raster, size)
        r = _child(model, raster, work / f"out_{size}", args.tile, "api", env)
        mp = size * size / 1e6
        rows.append((size, r["tiles"], r["tiles"] / r["seconds"], r["seconds"] / mp, r["peak_rss_mb"]))
        print(f"{size:>6} px  {r['tiles']:>6} tiles  {rows[-1][2]:7.2f} tiles/s  "
              f"{rows[-1][3]:7.3f} s/MP  peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)
    base = rows[0]
    for size, _, _, s_per_mp, rss in rows[1:]:
        print(f"{size} vs {base[0]}: time per MP x{s_per_mp / base[3]:.2f}, peak RSS x{rss / base[4]:.2f}")
    if args.compare_cli:
        size, tiles = args.sizes[0], rows[0][1]
        raster, times = work / f"scene_{size}.tif", {"api-path": [], "cli": []}
        for _ in range(args.compare_cli):
            for via in ("api-path", "cli"):
                times[via].append(_child(model, raster, work / f"out_{via}", args.tile, via, env)["seconds"])
        api, cli = (sorted(times[v])[len(times[v]) // 2] for v in ("api-path", "cli"))
        print(f"{size} px, {tiles} tiles, model loaded from file, median of {args.compare_cli}: "
              f"detect.predict {tiles / api:.2f} tiles/s, detect predict (CLI) {tiles / cli:.2f} tiles/s, "
              f"API / CLI time x{api / cli:.3f}")
        print("  runs (s): api " + " ".join(f"{t:.1f}" for t in times["api-path"]) +
              "; cli " + " ".join(f"{t:.1f}" for t in times["cli"]))


def _child(model: str, raster: Path, out: Path, tile: int, via: str, env: dict) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, model, str(raster), str(out), str(tile), via],
                         capture_output=True, text=True, env=env)
    if run.returncode:
        raise SystemExit(run.stderr[-3000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
