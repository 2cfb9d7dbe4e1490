"""Prediction as a job of (scene, window) units: shards, resumable unit results, and the merge.

A job is the list of every unit of work of a ``detect predict`` run, derived
deterministically from the inputs and the model's input rule: each scene
(image or raster, in input order) is rescaled by its scale, cut into the
tile windows of :func:`~detect.inference.predictor.scene_grid`, and its
windows, in order, are grouped into units of :data:`UNIT_TILES`. The job is
written to ``OUT/job.json``; every shard derives the same one and refuses an
``OUT`` whose job differs (other inputs, model or settings).

``--shard I/N`` (0-based ``I``) runs the units whose middle pixel falls in
the ``I``-th of ``N`` equal parts of the job's pixels, so shards are
balanced by pixels, not files, and each reads a contiguous run of windows.
A unit's result (every tile's detections, in scene coordinates, float32
exact, or a mark that the window held only nodata) is written atomically to
``OUT/units/SCENE/UNIT.npz``; a rerun skips units whose file exists, so a
killed shard resumes without losing or repeating a unit.

:func:`merge_job` (``detect merge OUT``, or the shard that finds every unit
done) folds each scene's tiles, in window order, through the same
:class:`~detect.inference.predictor.SceneMerger` a single process uses, so
any number of shards gives the detections of one process exactly; it then
writes the per-scene records and every run-level output as a single run
does.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from detect.inference.predictor import (
    SceneMerger,
    TileResult,
    infer_tiles,
    read_tile,
    scene_grid,
    source_phase,
)
from detect.util import atomic
from detect.util.files import read_json

#: Tile windows per unit of work (consecutive windows of one scene).
UNIT_TILES = 16
JOB_FILE = "job.json"
JOB_FORMAT = "detect-job-1"


def parse_shard(spec: str | tuple | None) -> tuple[int, int] | None:
    """``"I/N"`` (0 <= I < N) -> ``(I, N)``; clear error otherwise. None stays None."""
    if spec is None:
        return None
    if isinstance(spec, tuple):
        i, n = spec
    else:
        try:
            i, n = (int(v) for v in str(spec).split("/"))
        except ValueError:
            raise ValueError(f"--shard {spec!r}: expected I/N with whole numbers, e.g. 0/4 for the first "
                             f"of 4 shards") from None
    if n < 1:
        raise ValueError(f"--shard {i}/{n}: the number of shards must be at least 1")
    if not 0 <= i < n:
        raise ValueError(f"--shard {i}/{n}: the shard index counts from 0 and must be below {n} "
                         f"(0/{n} .. {n - 1}/{n})")
    return int(i), int(n)


@dataclass(frozen=True)
class Unit:
    """Windows ``first .. stop-1`` of scene ``scene``; ``pixels`` is their area (model pixels)."""

    scene: int
    index: int
    first: int
    stop: int
    pixels: int


def build_job(files: list[Path], headers: list, scales: list[float], options, *, stems: list[str],
              settings: dict) -> dict:
    """The job (JSON-able dict) for ``files`` with their ``headers`` (height, width) and scales.

    ``settings``: everything else a merge needs without the model (class
    names, category ids, merge thresholds, output options, the fingerprint).
    """
    scenes, units = [], []
    for s, (f, head, scale, stem) in enumerate(zip(files, headers, scales, stems)):
        phase = source_phase(head, scale, options)
        h, w, windows = scene_grid(head.height, head.width, scale, options, phase)
        # "file" as given (it names the scene in the outputs); "path" absolute, for a shard or a merge
        # started from another working directory
        scenes.append({"file": str(f), "path": str(Path(f).resolve()), "stem": stem,
                       "height": int(head.height), "width": int(head.width),
                       "scale": float(scale), "phase": list(phase), "tiles": len(windows)})
        area = (windows[:, 2] - windows[:, 0]) * (windows[:, 3] - windows[:, 1])
        for k, first in enumerate(range(0, len(windows), UNIT_TILES)):
            stop = min(first + UNIT_TILES, len(windows))
            units.append([s, k, first, stop, int(area[first:stop].sum())])
    return {"format": JOB_FORMAT, "tile": options.tile, "overlap": options.overlap, "align": options.align,
            "batch_size": options.batch_size, "unit_tiles": UNIT_TILES, "scenes": scenes, "units": units, **settings}


def units_of(job: dict) -> list[Unit]:
    return [Unit(*u) for u in job["units"]]


def shard_units(job: dict, shard: tuple[int, int] | None) -> list[Unit]:
    """The units of shard ``(I, N)`` (all for None): those whose middle pixel is in part I of N."""
    units = units_of(job)
    if shard is None:
        return units
    i, n = shard
    total = sum(u.pixels for u in units) or 1
    mine, before = [], 0
    for u in units:
        middle = before + u.pixels / 2
        if min(int(middle * n // total), n - 1) == i:
            mine.append(u)
        before += u.pixels
    return mine


def claim_job(out_dir: Path, job: dict) -> None:
    """Write ``OUT/job.json``, or check that the one there is this job (a shard of the same run)."""
    path = out_dir / JOB_FILE
    if path.is_file():
        old = read_json(path, "job file", "pass --overwrite to start the job again")
        if old != json.loads(json.dumps(job)):
            differs = sorted(k for k in set(old) | set(job) if old.get(k) != job.get(k))
            raise FileExistsError(
                f"{out_dir} holds another job ({path} differs in: {', '.join(differs)}); every shard "
                f"needs the same inputs, model and settings; pass --overwrite to start the job again")
        return
    atomic.write_json(path, job)


def unit_path(out_dir: Path, job: dict, unit: Unit) -> Path:
    return out_dir / "units" / job["scenes"][unit.scene]["stem"] / f"{unit.index:06d}.npz"


def save_unit(path: Path, tiles: list[TileResult | None]) -> None:
    """Every tile of a unit in one ``.npz`` (counts -1 for blank windows), written atomically."""
    real = [t for t in tiles if t is not None]

    def cat(key, shape, dtype):
        return np.concatenate([getattr(t, key) for t in real]) if real else np.zeros(shape, dtype)

    buf = io.BytesIO()
    np.savez(buf, counts=np.array([-1 if t is None else len(t.scores) for t in tiles], np.int64),
             boxes=cat("boxes", (0, 4), np.float32), scores=cat("scores", (0,), np.float32),
             labels=cat("labels", (0,), np.int32),
             at_max=np.array([t is not None and t.at_max for t in tiles]),
             at_top_k=np.array([t is not None and t.at_top_k for t in tiles]))
    atomic.write_bytes(path, buf.getvalue())


def load_unit(path: Path) -> list[TileResult | None]:
    with np.load(path) as z:
        counts, boxes, scores, labels = z["counts"], z["boxes"], z["scores"], z["labels"]
        at_max, at_top_k = z["at_max"], z["at_top_k"]
    out, start = [], 0
    for t, n in enumerate(counts):
        if n < 0:
            out.append(None)
            continue
        sl = slice(start, start + int(n))
        out.append(TileResult(boxes[sl], scores[sl], labels[sl], bool(at_max[t]), bool(at_top_k[t])))
        start += int(n)
    return out


def run_units(model, job: dict, units: list[Unit], out_dir: Path, open_scene, *,
              progress: bool = True) -> dict:
    """Run the ``units`` not yet done and store each one's result; returns counts.

    A unit's windows go to the model in batches of the job's ``batch_size``,
    cut from the unit's own windows (blank ones dropped from their batch),
    so a tile meets the same batch in every shard, engine and rerun.
    ``open_scene(file)`` opens a scene as a source; a scene that cannot be
    opened or read fails its units (named on stderr, counted in
    ``failed_units``), the others go on.
    """
    todo = [u for u in units if not unit_path(out_dir, job, u).is_file()]
    stats = {"units": len(units), "done_before": len(units) - len(todo), "tiles": 0, "blank_tiles": 0,
             "failed_units": 0, "failed_scenes": []}
    opts, batch = _Options.of(job), job["batch_size"]
    bar = tqdm(total=sum(u.stop - u.first for u in todo), unit="tile", desc="units", disable=not progress)
    source, source_scene = None, None
    try:
        for unit in todo:
            scene = job["scenes"][unit.scene]
            if source_scene != unit.scene:
                if source is not None:
                    source.close()
                source, source_scene = None, unit.scene
                try:
                    source = open_scene(Path(scene["path"]))
                except (OSError, ValueError) as err:
                    print(f"\nerror: {scene['file']}: {err} (its units are not done)", file=sys.stderr)
                    stats["failed_scenes"].append(scene["file"])
            if source is None:
                stats["failed_units"] += 1
                continue
            _, _, windows = scene_grid(scene["height"], scene["width"], scene["scale"], opts, _phase(scene))
            windows = windows[unit.first:unit.stop]
            try:
                tiles = [read_tile(source, w, scene["scale"], skip_blank=True) for w in windows]
            except (OSError, ValueError) as err:
                print(f"\nerror: {scene['file']}: unit {unit.index}: {err} (not done)", file=sys.stderr)
                stats["failed_units"] += 1
                continue
            results: list[TileResult | None] = []
            for start in range(0, len(tiles), batch):
                results += infer_tiles(model, tiles[start:start + batch], windows[start:start + batch])
            save_unit(unit_path(out_dir, job, unit), results)
            stats["tiles"] += len(tiles)
            stats["blank_tiles"] += sum(t is None for t in tiles)
            bar.update(len(tiles))
    finally:
        if source is not None:
            source.close()
        bar.close()
    return stats


@dataclass(frozen=True)
class _Options:
    """The tile rule a job was cut with (what :func:`scene_grid` reads)."""

    tile: int
    overlap: float
    align: int = 1

    @classmethod
    def of(cls, job: dict) -> "_Options":
        return cls(job["tile"], job["overlap"], job.get("align", 1))  # jobs cut before aligned grids: 1


def _phase(scene: dict) -> tuple[int, int]:
    return tuple(scene.get("phase", (0, 0)))  # jobs cut before world-aligned grids: (0, 0)


def missing_units(out_dir: Path, job: dict) -> list[Unit]:
    return [u for u in units_of(job) if not unit_path(out_dir, job, u).is_file()]


def units_by_scene(job: dict) -> dict[int, list[Unit]]:
    """The job's units grouped by scene, in window order."""
    out: dict[int, list[Unit]] = {}
    for u in units_of(job):
        out.setdefault(u.scene, []).append(u)
    return out


def merge_scene(out_dir: Path, job: dict, scene_index: int, units: list[Unit]) -> dict:
    """One scene's detections from the files of its ``units`` (see :meth:`SceneMerger.result`)."""
    scene = job["scenes"][scene_index]
    opts = _Options.of(job)
    h, w, windows = scene_grid(scene["height"], scene["width"], scene["scale"], opts, _phase(scene))
    merger = SceneMerger(h, w, job["iou_threshold"], job["agnostic"])
    for unit in units:
        for t, tile in zip(range(unit.first, unit.stop), load_unit(unit_path(out_dir, job, unit))):
            merger.add_tile(windows[t], tile)
    return merger.result(scene["height"], scene["width"], scene["scale"])


def read_job(out_dir: Path) -> dict:
    path = Path(out_dir) / JOB_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} has no {JOB_FILE}: not the output folder of a "
                                f"'detect predict --shard' or '--engine ray' run")
    job = read_json(path, "job file", "rerun the job with --overwrite")
    if job.get("format") != JOB_FORMAT:
        raise ValueError(f"{path}: unknown job format {job.get('format')!r} (expected {JOB_FORMAT})")
    return job
