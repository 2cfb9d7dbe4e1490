#!/usr/bin/env python
"""Train on dense generated aerial scenes for fixed wall-clock budgets; compare two recipes.

Generates a dense set with ``tools/make_dense_aerial.py`` (80-200 touching
crowns and cars of 10-40 px per 512 x 512 scene, ground texture varying
between scenes; ``--train`` scenes to learn from, ``--test`` other scenes,
another seed), then for each recipe and each ``--budgets`` entry runs

    detect train --train-ann ... --config RECIPE --time-budget B --out RUN
    detect evaluate --ann TEST --images ... --model RUN/model.keras --max-dets 1,100,1000

each in a fresh process, and prints AP50 and AP (maxDets 1000) on the test
scenes, the steps and epochs each run did, and its loss curve (mean loss per
epoch from ``metrics.csv``) with the largest ratio of any epoch's loss to the
first epoch's (a spike shows as a ratio above 1).

Recipes:

- ``aerial``: ``data/aerial_cpu.yaml``, fitted to the data by ``detect train``
  (GroupNorm and zero-initialised residuals from scratch, anchors, levels
  and caps from the boxes, native resolution).
- ``before``: the recipe ``detect`` shipped before the dense-aerial work
  (``data/sample_config.yaml`` of commit d4a5a03: batch norm frozen at its
  initial values, no zero-init, no head norm, images resized to 256 px,
  pinned P3-P5 anchors, 30 boxes per image, 50 detections). Only its
  epoch count is replaced by the same ``--time-budget`` plan.

The whole run takes about the sum of the budgets twice, plus a few minutes of
generation and evaluation. Budgets are wall-clock: run nothing else meanwhile.

    python tools/benchmark_train.py                     # 5m, 10m, 20m, both recipes
    python tools/benchmark_train.py --budgets 2m --recipes aerial --train 16 --test 4
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from make_dense_aerial import make_dataset  # noqa: E402

BEFORE = """\
# data/sample_config.yaml as of d4a5a03 (before the dense-aerial recipe), with the
# normalisation that config produced from random weights spelled out.
model:
  backbone: resnet18
  backbone_width: 32
  fpn_channels: 64
  head_convs: 2
  backbone_norm: batch
  freeze_batchnorm: true
  zero_init_residual: false
  head_norm: none
  anchors: {min_level: 3, max_level: 5, anchor_size: 2.0, num_scales: 2, aspect_ratios: [0.5, 1.0, 2.0]}
  postprocess: {score_threshold: 0.05, max_detections: 50}
data: {resize: fixed, image_size: 256, max_boxes: 30}
train: {batch_size: 8, optimizer: adamw, learning_rate: 0.003, weight_decay: 0.0001,
        warmup_steps: 30, schedule: cosine, clipnorm: 10.0}
"""


def _detect(*args: str, log: Path) -> float:
    """Run ``python -m detect ARGS`` in a fresh process, output to ``log``; seconds taken."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, "-m", "detect", *args], stdout=out, stderr=subprocess.STDOUT,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if code:
        tail = log.read_text().splitlines()[-15:]
        raise SystemExit(f"detect {args[0]} failed (exit {code}); last lines of {log}:\n" + "\n".join(tail))
    return time.perf_counter() - t0


def _curve(run: Path) -> list[float]:
    with open(run / "metrics.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def _plan(log: Path) -> str:
    """The budget plan line, and the early-stop line when the run stopped short of it."""
    lines = [line for line in log.read_text().splitlines() if line.startswith("time budget")]
    return "\n    ".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/detect_benchmark_train"),
                   help="data and runs go here (reused: existing data is not regenerated)")
    p.add_argument("--budgets", default="5m,10m,20m", help="comma-separated --time-budget values")
    p.add_argument("--recipes", default="aerial,before", help="aerial, before or both (comma-separated)")
    p.add_argument("--train", type=int, default=64, help="training scenes")
    p.add_argument("--test", type=int, default=20, help="test scenes (another seed)")
    p.add_argument("--size", type=int, default=512, help="scene side, px")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    work = args.work
    sets = {}
    for name, count, seed in (("train", args.train, args.seed), ("test", args.test, args.seed + 1000)):
        folder = work / f"{name}_{count}x{args.size}_s{seed}"
        ann = folder / "annotations.json"
        if not ann.is_file():
            make_dataset(folder, images=count, size=args.size, seed=seed)
        sets[name] = (ann, folder / "images")
        n = len(json.loads(ann.read_text())["annotations"])
        print(f"{name}: {count} scenes of {args.size} px, {n} boxes ({folder})", flush=True)
    (work / "before.yaml").write_text(BEFORE)
    configs = {"aerial": ROOT / "data" / "aerial_cpu.yaml", "before": work / "before.yaml"}

    rows = []
    for budget in args.budgets.split(","):
        for recipe in args.recipes.split(","):
            run = work / "runs" / f"{recipe}_{budget}"
            if run.exists():
                import shutil

                shutil.rmtree(run)
            run.parent.mkdir(parents=True, exist_ok=True)
            # logs sit beside the run: detect train refuses a non-empty --out
            logs = run.parent / f"{run.name}.train.log", run.parent / f"{run.name}.evaluate.log"
            train_s = _detect("train", "--train-ann", str(sets["train"][0]), "--train-images", str(sets["train"][1]),
                              "--config", str(configs[recipe]), "--time-budget", budget, "--out", str(run),
                              log=logs[0])
            _detect("evaluate", "--ann", str(sets["test"][0]), "--images", str(sets["test"][1]),
                    "--model", str(run / "model.keras"), "--max-dets", "1,100,1000",
                    "--report", str(run / "report.json"), "--save-predictions", str(run / "detections.json"),
                    log=logs[1])
            report = json.loads((run / "report.json").read_text())
            curve = _curve(run)
            rows.append((recipe, budget, report["stats"][1], report["AP_at_max_dets"], train_s, curve,
                         _plan(logs[0])))
            r = rows[-1]
            print(f"{recipe:<7} {budget:>4}: AP50 {r[2]:.3f}  AP(maxDets 1000) {r[3]:.3f}  "
                  f"train {r[4]:.0f} s, {len(curve)} epochs", flush=True)

    print("\nrecipe  budget   AP50  AP@1000  train_s  epochs  max loss / first epoch")
    for recipe, budget, ap50, ap, seconds, curve, _ in rows:
        ratio = max(curve) / curve[0] if curve else float("nan")
        print(f"{recipe:<7} {budget:>6}  {ap50:.3f}    {ap:.3f}  {seconds:>7.0f}  {len(curve):>6}  {ratio:.2f}")
    print("\nloss per epoch (mean of the epoch's steps):")
    for recipe, budget, *_, curve, plan in rows:
        print(f"  {recipe} {budget}: " + " ".join(f"{v:.2f}" for v in curve))
        if plan:
            print(f"    {plan}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
