#!/usr/bin/env python
"""Tiles/second and peak memory of ``detect predict`` as rasters grow, in one run.

Writes tiled GeoTIFFs of ``--sizes`` pixels on a side (aerial-like texture,
written strip by strip so generation itself stays small), then runs the
prediction over each in a fresh process and reports tiles/s, seconds per
megapixel and that process's peak RSS. Time per megapixel should stay flat
(within 10%) and peak memory should not grow with the scene.

    python tools/benchmark_predict.py [--sizes 2000 8000 20000] [--model M.keras]
    python tools/benchmark_predict.py --sizes 2000 --compare-cli 3   # API vs CLI, same raster
    python tools/benchmark_predict.py --sizes 4000 --compare-tflite  # Keras fp32 vs LiteRT fp32 / int8
    python tools/benchmark_predict.py --sizes 8000 --scale-out       # 1 process vs 2 shards vs Ray x2

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

# The child's own peak: Linux's ru_maxrss survives fork + exec, so a child started by a
# parent that had just converted a ResNet-50 reported the parent's 5 GB; VmHWM is the
# peak of the child's own address space.
PEAK = r"""
def peak_rss_mb():
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

CHILD = PEAK + r"""
import json, sys, time, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pathlib import Path
import numpy as np
import detect
model_path, raster, out, tile, via = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if via == "api":  # the sweep: a loaded, warmed-up model through detect.predict
    model = detect.load_model(model_path, threads=os.cpu_count())
    for b in (4, 1):  # trace full and last-partial batch shapes before timing
        model.predict_on_batch(np.zeros((b, tile, tile, 3), np.float32))
    t0 = time.perf_counter()
    r = detect.predict(model, raster, out=out, tile=tile, overlap=0.2, batch_size=4, overwrite=True).summary
elif via == "api-path":  # API vs CLI: both load the model from its file inside the timing
    t0 = time.perf_counter()
    r = detect.predict(model_path, raster, out=out, tile=tile, overlap=0.2, batch_size=4, overwrite=True).summary
else:
    from detect.cli.main import main
    t0 = time.perf_counter()
    assert main(["predict", "--model", model_path, "--out", str(out), "--tile", str(tile), "--overlap", "0.2",
                 "--batch-size", "4", "--overwrite", str(raster)]) == 0
    r = {"tiles": None}  # the command prints its count; the sweep's API run on this raster has it
seconds = time.perf_counter() - t0
ap50 = None
if len(sys.argv) > 6:  # --compare-tflite: AP50 on an annotated set, same tiles as the file
    ann, images = sys.argv[6], sys.argv[7]
    ap50 = detect.evaluate(model, ann, images, tile=tile, save_predictions=None).stats[1]
print(json.dumps({"tiles": r["tiles"], "seconds": seconds, "ap50": ap50,
                  "peak_rss_mb": peak_rss_mb()}))
"""


SCALE_CHILD = PEAK + r"""
import json, sys, time, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
t0 = time.perf_counter()
import detect
model_path, raster, out, tile, mode = sys.argv[1:6]
kw = dict(out=out, tile=int(tile), overlap=0.2, batch_size=4)
if mode == "ray":
    r = detect.predict(model_path, raster, engine="ray", workers=2, **kw).summary
elif mode == "one":
    r = detect.predict(model_path, raster, **kw).summary
else:
    r = detect.predict(model_path, raster, shard=mode, **kw).summary
print(json.dumps({"tiles": r["tiles"], "seconds": time.perf_counter() - t0, "merged": r.get("merged"),
                  "worker_peak_rss_mb": [v / 2**20 for v in r.get("worker_peak_rss", {}).values()],
                  "peak_rss_mb": peak_rss_mb()}))
"""


def scale_out(model: str, raster: Path, work: Path, tile: int, env: dict) -> None:
    """One process (all cores) vs 2 concurrent shards (one thread each) vs Ray with 2 workers."""
    import shutil
    import time

    def launch(mode, out, threads=None):
        e = dict(env, **({"TF_NUM_INTRAOP_THREADS": str(threads)} if threads else {}))
        return subprocess.Popen([sys.executable, "-c", SCALE_CHILD, model, str(raster), str(out), str(tile), mode],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)

    def finish(procs):
        rows = []
        for p in procs:
            out, err = p.communicate()
            if p.returncode:
                raise SystemExit(err[-3000:])
            rows.append(json.loads(out.strip().splitlines()[-1]))
        return rows

    results = {}
    for name, modes in (("1 process", [("one", None)]), ("2 shards", [("0/2", 1), ("1/2", 1)]),
                        ("Ray, 2 workers", [("ray", None)])):
        out = work / f"scale_{name.split()[0]}_{len(modes)}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        rows = finish([launch(mode, out, threads) for mode, threads in modes])
        wall = time.perf_counter() - t0
        tiles = sum(r["tiles"] for r in rows)
        rss = [r["peak_rss_mb"] for r in rows] + [m for r in rows for m in r["worker_peak_rss_mb"]]
        results[name] = (tiles, wall, rss, out)
        print(f"{name:<16}{tiles:>6} tiles {wall:8.1f} s {tiles / wall:7.2f} tiles/s  peak RSS per process "
              f"(MB): {', '.join(f'{m:.0f}' for m in rss)}", flush=True)
    base = results["1 process"]
    for name, (tiles, wall, _, out) in results.items():
        same = (out / "detections.csv").read_text() == (base[3] / "detections.csv").read_text()
        print(f"{name}: throughput x{(tiles / wall) / (base[0] / base[1]):.2f} of one process; "
              f"detections.csv {'identical' if same else 'DIFFERS'}")


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
    p.add_argument("--compare-tflite", action="store_true",
                   help="on the first size: Keras fp32 vs LiteRT fp32 vs LiteRT int8 for the light CPU "
                   "config (the aerial-cpu recipe, trained --train-budget on data/sample) and a random "
                   "batch-norm ResNet-50 (or --model): tiles/s, s/MP, peak RSS, AP50 on data/sample_val")
    p.add_argument("--train-budget", default="3m", help="--compare-tflite: training time of the light model")
    p.add_argument("--scale-out", action="store_true",
                   help="on the first size: one process vs 2 concurrent --shard processes vs --engine ray "
                   "with 2 workers (wall time from process start, model loading included; peak RSS of "
                   "each process / Ray worker; detections.csv compared)")
    args = p.parse_args()
    if args.compare_tflite:
        return compare_tflite(args)
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
    if args.scale_out:
        raster = work / f"scene_{args.sizes[0]}.tif"
        if not raster.exists():
            write_raster(raster, args.sizes[0])
        return scale_out(model, raster, work, args.tile, env)
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


def compare_tflite(args) -> None:
    """Keras fp32 vs LiteRT fp32 vs LiteRT int8 on one raster: each run in its own process."""
    import detect

    work = args.workdir or Path(tempfile.mkdtemp(prefix="detect-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    size, env = args.sizes[0], {**os.environ, "PYTHONPATH": str(ROOT)}
    raster = work / f"scene_{size}.tif"
    if not raster.exists():
        write_raster(raster, size)
    val_ann, val_images = ROOT / "data/sample_val/annotations.json", ROOT / "data/sample_val/images"
    models = {}
    light = work / "light" / "model.keras"
    if not light.exists():
        print(f"training the light CPU config for {args.train_budget} on data/sample ...", flush=True)
        detect.train(ROOT / "data/sample/annotations.json", ROOT / "data/sample/images", work / "light",
                     config="aerial-cpu", time_budget=args.train_budget, overwrite=True,
                     verbose=0)
    models["light (aerial_cpu.yaml)"] = light
    if args.model:
        models[Path(args.model).name] = Path(args.model)
    else:
        from detect.models import build_retinanet

        r50 = work / "resnet50.keras"
        if not r50.exists():
            # batch norm, as a pretrained ResNet-50 has (it folds into the convolutions;
            # a from-scratch GroupNorm ResNet-50 keeps its normalisation ops)
            build_retinanet(num_classes=3, class_names=("pool", "car", "building"), backbone="resnet50",
                            backbone_weights="none", backbone_norm="batch").save(r50)
        models["ResNet-50 BN (random)"] = r50
    print(f"\n{size} px raster, {args.tile} px tiles, {os.cpu_count()} threads; AP50 on data/sample_val")
    print(f"{'model':<28}{'runtime':<14}{'tiles/s':>9}{'s/MP':>8}{'peak RSS MB':>13}{'AP50':>7}{'x keras':>9}")
    for name, path in models.items():
        base = None
        for runtime in ("keras fp32", "tflite fp32", "tflite int8"):
            if runtime == "keras fp32":
                file = path
            else:
                file = work / f"{path.stem}-{runtime.split()[1]}.tflite"
                detect.export(path, file, format="tflite", tile=args.tile, overwrite=True,
                              quantize="int8" if "int8" in runtime else "none",
                              calibration=ROOT / "data/sample_val/images" if "int8" in runtime else None)
            r = _child(str(file), raster, work / "out_tflite", args.tile, "api", env,
                       extra=[str(val_ann), str(val_images)])
            rate = r["tiles"] / r["seconds"]
            base = base or rate
            print(f"{name:<28}{runtime:<14}{rate:9.2f}{r['seconds'] / (size * size / 1e6):8.3f}"
                  f"{r['peak_rss_mb']:13.0f}{r['ap50']:7.3f}{rate / base:9.2f}", flush=True)


def _child(model: str, raster: Path, out: Path, tile: int, via: str, env: dict, extra=()) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, model, str(raster), str(out), str(tile), via, *extra],
                         capture_output=True, text=True, env=env)
    if run.returncode:
        raise SystemExit(run.stderr[-3000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
