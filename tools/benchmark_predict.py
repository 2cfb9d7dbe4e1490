#!/usr/bin/env python
"""Tiles/second and peak memory of ``detect predict`` as rasters grow, in one run.

Writes tiled GeoTIFFs of ``--sizes`` pixels on a side (aerial-like texture,
written strip by strip so generation itself stays small), then runs the
prediction over each in a fresh process and reports tiles/s, seconds per
megapixel and that process's peak RSS. Time per megapixel should stay flat
(within 10%) and peak memory should not grow with the scene.

    python tools/benchmark_predict.py [--sizes 2000 8000 20000] [--model M.keras]

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
from detect.inference.predictor import TileOptions
from detect.inference.run import predict_files
from detect.models import load_model
model_path, raster, out, tile = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
model = load_model(model_path)
import numpy as np
for b in (4, 1):  # warm up: trace full and last-partial batch shapes before timing
    model.predict_on_batch(np.zeros((b, tile, tile, 3), np.float32))
t0 = time.perf_counter()
r = predict_files(model, [raster], out, TileOptions(tile=tile, overlap=0.2, batch_size=4), overwrite=True)
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
        out = subprocess.run([sys.executable, "-c", CHILD, model, str(raster), str(work / f"out_{size}"),
                              str(args.tile)], capture_output=True, text=True, env=env)
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        mp = size * size / 1e6
        rows.append((size, r["tiles"], r["tiles"] / r["seconds"], r["seconds"] / mp, r["peak_rss_mb"]))
        print(f"{size:>6} px  {r['tiles']:>6} tiles  {rows[-1][2]:7.2f} tiles/s  "
              f"{rows[-1][3]:7.3f} s/MP  peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)
    base = rows[0]
    for size, _, _, s_per_mp, rss in rows[1:]:
        print(f"{size} vs {base[0]}: time per MP x{s_per_mp / base[3]:.2f}, peak RSS x{rss / base[4]:.2f}")


if __name__ == "__main__":
    main()
