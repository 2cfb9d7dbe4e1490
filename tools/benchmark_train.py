#!/usr/bin/env python
"""Train on generated aerial scenes for fixed wall-clock budgets; compare recipes.

Two generated sets of different looks (``--sets``), each with ``--train``
scenes to learn from and ``--test`` other scenes (another seed):

- ``dense``: ``tools/make_dense_aerial.py``, 80-200 touching crowns and cars
  of 10-40 px per 512 x 512 scene on forest floor, grass, soil and asphalt;
- ``urban``: ``tools/make_urban_aerial.py``, aircraft, touching roofs and
  boats of 10-120 px on tarmac, concrete, water, snow and sand, tinted and
  hazy: no texture, palette or shape in common with ``dense``.

For each set, recipe and ``--budgets`` entry it runs

    detect train --train-ann ... --config RECIPE --time-budget B --out RUN
    detect evaluate --ann TEST --images ... --model RUN/model.keras --max-dets 1,100,1000

each in a fresh process, and prints AP50 and AP (maxDets 1000) on the test
scenes, the steps and epochs each run did, and its loss curve (mean loss per
epoch from ``metrics.csv``) with the largest ratio of any epoch's loss to the
first epoch's (a spike shows as a ratio above 1).

Recipes:

- ``aerial``: the ``aerial-cpu`` recipe, fitted to the data by ``detect train``
  (GroupNorm and zero-initialised residuals from scratch, anchors, levels
  and caps from the boxes, native resolution).
- ``pretrained``: the ``aerial-pretrained-cpu`` recipe: EfficientNet-Lite0 from
  ImageNet (the ``[pretrained]`` extra), fitted to the data the same way.
- ``before``: the recipe ``detect`` shipped before the dense-aerial work
  (``data/sample_config.yaml`` of commit d4a5a03: batch norm frozen at its
  initial values, no zero-init, no head norm, images resized to 256 px,
  pinned P3-P5 anchors, 30 boxes per image, 50 detections). Only its
  epoch count is replaced by the same ``--time-budget`` plan.

Per recipe it also measures, in the same run, the training step time (what
``--time-budget`` measured before planning, from the train log) and
predict tiles/s of 512 px tiles (four test scenes) with the trained model, as ratios to the first
recipe's.

The whole run takes about the sum of the budgets times recipes times sets, plus
a few minutes of generation and evaluation. Budgets are wall-clock: run
nothing else meanwhile.

    python tools/benchmark_train.py                     # 5m, 10m, 20m, three recipes, both sets
    python tools/benchmark_train.py --budgets 2m --recipes aerial --sets urban --train 16 --test 4
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

import make_dense_aerial  # noqa: E402
import make_urban_aerial  # noqa: E402

from detect.config.recipes import recipe_path  # noqa: E402

#: every child process (detect train / evaluate, the throughput snippet): TensorFlow's C++ logging quiet
_CHILD_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
GENERATORS = {"dense": make_dense_aerial.make_dataset, "urban": make_urban_aerial.make_dataset}
BUILT_IN = ("aerial", "pretrained", "before")  # recipes named by these words, not by a YAML path
# Predict throughput on four of the set's test scenes (512 px, what the model meets), not noise:
# NMS cost follows how many candidates pass the score threshold, and a model may fire on noise.
THROUGHPUT = """\
import sys, time, numpy as np
import detect
from detect.imagery.images import read_image
from detect.imagery.inputs import expand_sources
model = detect.load_model(sys.argv[1])
files = expand_sources([sys.argv[2]])[:4]
tiles = np.stack([read_image(f)[:512, :512] for f in files]).astype("float32")
model.predict(tiles, verbose=0)
t0, n = time.perf_counter(), 0
while time.perf_counter() - t0 < 20:
    model.predict(tiles, verbose=0)
    n += len(tiles)
print(n / (time.perf_counter() - t0))
"""

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
                               env=_CHILD_ENV)
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
    p.add_argument("--recipes", default="aerial,pretrained,before",
                   help="comma-separated: aerial, pretrained, before (the first is the ratios' baseline)")
    p.add_argument("--sets", default="dense,urban", help="comma-separated generated sets: dense, urban")
    p.add_argument("--runs", default="",
                   help="instead of every recipe x budget: comma-separated RECIPE:BUDGET pairs, run in this "
                        "order on each set (e.g. aerial:20m,pretrained:5m,pretrained:20m); RECIPE may be a "
                        "YAML file (an ablation), named by its stem")
    p.add_argument("--train", type=int, default=64, help="training scenes")
    p.add_argument("--test", type=int, default=20, help="test scenes (another seed)")
    p.add_argument("--size", type=int, default=512, help="scene side, px")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true",
                   help="replace run folders an earlier invocation left in WORK/runs (default: refused, "
                        "naming them, before anything runs)")
    args = p.parse_args(argv)

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    (work / "before.yaml").write_text(BEFORE)
    configs = {"aerial": recipe_path("aerial-cpu"), "before": work / "before.yaml",
               "pretrained": recipe_path("aerial-pretrained-cpu")}
    if args.runs:
        plan = [tuple(r.split(":", 1)) for r in args.runs.split(",")]
    else:
        plan = [(r, b) for b in args.budgets.split(",") for r in args.recipes.split(",")]
    for recipe, _ in plan:  # a YAML file given by path is a recipe named by its stem
        if recipe not in configs and Path(recipe).is_file():
            configs[recipe] = Path(recipe)
    recipes = list(dict.fromkeys(r for r, _ in plan))
    unknown = sorted(set(recipes) - set(configs)) + sorted(set(args.sets.split(",")) - set(GENERATORS))
    if unknown:
        p.error(f"unknown recipe or set {unknown}; recipes: {sorted(configs)}, sets: {sorted(GENERATORS)}")

    looks = args.sets.split(",")
    runs = run_folders(work, looks, plan)
    clash = sorted({str(r) for r in runs if runs.count(r) > 1})
    if clash:
        p.error(f"these runs would share a folder, the second replacing the first: {clash}; give each "
                "YAML a distinct name (not aerial, pretrained or before) and each RECIPE:BUDGET once")
    left = [str(r) for r in runs if r.exists()]
    if left and not args.overwrite:
        p.error(f"{len(left)} run folder(s) from an earlier invocation would be replaced: {left}; "
                "pass --overwrite, or another --work (its generated data is reused when present)")

    rows = []
    for look in looks:
        sets = {}
        for name, count, seed in (("train", args.train, args.seed), ("test", args.test, args.seed + 1000)):
            folder = work / f"{look}_{name}_{count}x{args.size}_s{seed}"
            ann = folder / "annotations.json"
            if not ann.is_file():
                GENERATORS[look](folder, images=count, size=args.size, seed=seed)
            sets[name] = (ann, folder / "images")
            n = len(json.loads(ann.read_text())["annotations"])
            print(f"{look} {name}: {count} scenes of {args.size} px, {n} boxes ({folder})", flush=True)
        for (recipe, budget), run in zip(plan, run_folders(work, [look], plan)):
            rows.append(_one(run, sets, configs[recipe], budget))
            rows[-1]["recipe"] = recipe
            r = rows[-1]
            r["look"] = look
            print(f"{look:<6} {recipe:<10} {budget:>4}: AP50 {r['ap50']:.3f}  AP(maxDets 1000) "
                  f"{r['ap']:.3f}  train {r['train_s']:.0f} s, {r['steps']} steps "
                  f"({r['step_s'] * 1000:.0f} ms/step), {len(r['curve'])} epochs, "
                  f"predict {r['tiles_s']:.2f} tiles/s", flush=True)

    base = {}
    for r in rows:  # ratios: to the first run of the first recipe on the same set
        if r["recipe"] == recipes[0]:
            base.setdefault(r["look"], r)
    print(f"\nset    recipe      budget   AP50  AP@1000  train_s  steps  step time  tiles/s   "
          f"(ratios to {recipes[0]} on the same set)  max loss / first epoch")
    for r in rows:
        b = base[r["look"]]
        ratio = max(r["curve"]) / r["curve"][0] if r["curve"] else float("nan")
        print(f"{r['look']:<6} {r['recipe']:<10} {r['budget']:>6}  {r['ap50']:.3f}    {r['ap']:.3f}  "
              f"{r['train_s']:>7.0f}  {r['steps']:>5}  x{r['step_s'] / b['step_s']:.2f}      "
              f"x{r['tiles_s'] / b['tiles_s']:.2f}  {ratio:.2f}")
    print("\nloss per epoch (mean of the epoch's steps):")
    for r in rows:
        print(f"  {r['look']} {r['recipe']} {r['budget']}: " + " ".join(f"{v:.2f}" for v in r["curve"]))
        if r["plan"]:
            print(f"    {r['plan']}")
    return 0


def run_folders(work: Path, looks: list[str], plan: list[tuple[str, str]]) -> list[Path]:
    """``WORK/runs/LOOK_NAME_BUDGET`` for every set and ``(recipe, budget)`` of ``plan``, in run
    order; ``NAME`` is a built-in recipe's name or a YAML file's stem."""
    return [work / "runs" / f"{look}_{recipe if recipe in BUILT_IN else Path(recipe).stem}_{budget}"
            for look in looks for recipe, budget in plan]


def _one(run: Path, sets: dict, config: Path, budget: str) -> dict:
    """Train one recipe for one budget, evaluate it on the test scenes, time its predict
    (``main`` has refused, or been told to replace, an existing ``run`` folder)."""
    if run.exists():
        import shutil

        print(f"replacing {run} (--overwrite)", flush=True)
        shutil.rmtree(run)
    run.parent.mkdir(parents=True, exist_ok=True)
    # logs sit beside the run: detect train refuses a non-empty --out
    logs = run.parent / f"{run.name}.train.log", run.parent / f"{run.name}.evaluate.log"
    train_s = _detect("train", "--train-ann", str(sets["train"][0]), "--train-images", str(sets["train"][1]),
                      "--config", str(config), "--time-budget", budget, "--out", str(run), log=logs[0])
    _detect("evaluate", "--ann", str(sets["test"][0]), "--images", str(sets["test"][1]),
            "--model", str(run / "model.keras"), "--max-dets", "1,100,1000",
            "--report", str(run / "report.json"), "--save-predictions", str(run / "detections.json"),
            log=logs[1])
    report = json.loads((run / "report.json").read_text())
    steps, step_s = _steps(logs[0])
    tiles_s = _tiles_per_second(run / "model.keras", sets["test"][1])
    return {"budget": budget, "ap50": report["stats"][1], "ap": report["AP_at_max_dets"], "train_s": train_s,
            "curve": _curve(run), "plan": _plan(logs[0]), "steps": steps, "step_s": step_s,
            "tiles_s": tiles_s}


def _tiles_per_second(model: Path, images: Path, tries: int = 2) -> float:
    """Predict tiles/s of ``model`` on ``images`` (:data:`THROUGHPUT`, in a fresh process); NaN,
    said on stdout, when every try dies: the arm's accuracy stands without it, and the runs
    still queued go on (one measurement died once of SIGSEGV inside TensorFlow, in 1 of ~40)."""
    for attempt in range(1, tries + 1):
        done = subprocess.run([sys.executable, "-c", THROUGHPUT, str(model), str(images)], text=True,
                              capture_output=True, env=_CHILD_ENV)
        if done.returncode == 0:
            return float(done.stdout.split()[-1])
        tail = "\n".join(("    " + line) for line in done.stderr.splitlines()[-5:])
        print(f"predict throughput of {model}: try {attempt} of {tries} died (exit {done.returncode})"
              + (f"; last lines of its stderr:\n{tail}" if tail else ""), flush=True)
    print(f"predict throughput of {model} not measured: tiles/s shows as nan", flush=True)
    return float("nan")


def _steps(log: Path) -> tuple[int, float]:
    """Steps the run took and its measured seconds per step, from the train log's budget lines
    ("... N steps (...) at S s/step ..." and, when it stopped early, "stopped after K of N")."""
    import re

    text = log.read_text()
    plan = re.search(r"time budget \S+: (\d+) steps .* at ([\d.]+) s/step", text)
    if plan is None:
        return 0, float("nan")
    early = re.search(r"stopped after (\d+) of \d+ planned steps", text)
    return int(early.group(1) if early else plan.group(1)), float(plan.group(2))


if __name__ == "__main__":
    raise SystemExit(main())
