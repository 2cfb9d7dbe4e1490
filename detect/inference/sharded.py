"""``detect predict --shard I/N`` / ``--engine ray`` and ``detect merge``: a run as a job of units.

:func:`predict_job` derives the job (:mod:`detect.inference.jobs`), runs its
share of the units (in this process, or on Ray workers) and, when it finds
every unit of the job done, merges; :func:`merge_job` is that merge, also
run alone by ``detect merge OUT``. The merge writes exactly what a single
``detect predict`` writes (per-scene records, GeoJSON, annotated images,
the gathered CSV / COCO files, the run-level GIS outputs), from the stored
units and the job, without the model.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from detect.imagery.images import BandRule
from detect.imagery.inputs import VIDEO_SUFFIXES
from detect.imagery.rasters import RASTER_SUFFIXES, open_source
from detect.inference import jobs
from detect.inference.gis import RunOutputs, write_run_outputs
from detect.inference.outputs import (
    DEFAULT_STYLE,
    DrawStyle,
    gather,
    id_map_for,
    output_stem,
    write_scene,
)
from detect.inference.predictor import CapCount, gsd_scale
from detect.structures import run_summary


@dataclass(frozen=True)
class Header:
    """What a job needs of a scene before any pixel is read."""

    height: int
    width: int
    transform: object = None
    crs: object = None


def read_header(path: Path) -> Header:
    """Size (and georeferencing of a GeoTIFF) from the file's header."""
    if path.suffix.lower() in RASTER_SUFFIXES:
        try:
            import rasterio
        except ImportError:
            pass
        else:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                with rasterio.open(path) as ds:
                    return Header(ds.height, ds.width, ds.transform if ds.crs else None, ds.crs)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"not an image this can read ({err})") from None
    return Header(height, width)


def predict_job(model, files: list[Path], out_dir: Path, options, *, fingerprint: dict, band_rule: BandRule,
                shard=None, engine: str = "local", engine_options: dict | None = None,
                gsd_match: bool = True, ann: str | None = None, save_images: bool = False,
                overwrite: bool = False, outputs: RunOutputs | None = None, on_result=None,
                style: DrawStyle = DEFAULT_STYLE) -> dict:
    """Run this process's share of the job for ``files`` (``options``: TileOptions resolved against
    the model); merge when every unit is done. Returns :func:`predict_files`' summary."""

    videos = [str(f) for f in files if f.suffix.lower() in VIDEO_SUFFIXES]
    if videos:
        raise ValueError(f"videos are not cut into units; run them without --shard / --engine: "
                         f"{', '.join(videos[:3])}")
    t0 = time.perf_counter()
    rule = options
    heads, scales, kept, failed = [], [], [], []
    for f in files:
        try:
            head = read_header(f)
        except (OSError, ValueError) as err:
            failed.append(str(f))
            print(f"error: {f}: {err} (skipped)", file=sys.stderr)
            continue
        heads.append(head)
        scale = gsd_scale(model, head, options, gsd_match, f)
        scales.append(rule.scale if scale is None else scale)
        kept.append(f)
    pp = model.model_config.postprocess
    settings = {"fingerprint": fingerprint, "files": [str(f) for f in files], "failed": failed,
                "model_config": model.model_config.to_dict(),  # names, ids, caps: the merge needs no model
                "iou_threshold": pp.iou_threshold, "agnostic": pp.agnostic,
                "bands": list(band_rule.bands), "ann": str(Path(ann).resolve()) if ann else None,
                "save_images": save_images,
                "draw": style.to_dict(),
                "outputs": (outputs or RunOutputs()).to_dict()}
    job = jobs.build_job(kept, heads, scales, rule, stems=[output_stem(f, files) for f in kept],
                         settings=settings)
    if overwrite and (out_dir / jobs.JOB_FILE).is_file():
        (out_dir / jobs.JOB_FILE).unlink()
    jobs.claim_job(out_dir, job)
    mine = jobs.shard_units(job, jobs.parse_shard(shard))
    if overwrite:  # this shard's units are redone
        for u in mine:
            jobs.unit_path(out_dir, job, u).unlink(missing_ok=True)
    label = f"shard {shard}" if shard else "job"
    print(f"{label}: {len(mine)} of {len(job['units'])} units ({sum(u.stop - u.first for u in mine)} tiles)",
          file=sys.stderr)
    if engine == "ray":
        from detect.inference.ray_executor import run_units_ray

        stats = run_units_ray(job, mine, out_dir, **(engine_options or {}))
    else:
        stats = jobs.run_units(model, job, mine, out_dir,
                               lambda path: open_source(path, band_rule))
    missing = jobs.missing_units(out_dir, job)
    if missing:
        print(f"\n{label} done ({stats['tiles']} tiles, {stats['blank_tiles']} blank); {len(missing)} unit(s) "
              f"of the job are not done yet (other shards, or failed ones: rerun them); when all are, "
              f"'detect merge {out_dir}' writes the outputs", file=sys.stderr)
        return run_summary(images=len(files), caps=CapCount(tiles=stats["tiles"], blank=stats["blank_tiles"]),
                           failed=failed + stats["failed_scenes"], seconds=time.perf_counter() - t0,
                           merged=False, missing_units=len(missing))
    summary = merge_job(out_dir, on_result=on_result, job=job)
    summary.update(tiles=stats["tiles"], blank_tiles=stats["blank_tiles"], seconds=time.perf_counter() - t0,
                   worker_peak_rss=stats.get("peak_rss", {}))
    return summary


def merge_job(out_dir: Path, *, on_result=None, job: dict | None = None) -> dict:
    """Gather a job's units into the run's outputs (see module doc); scenes with units missing are
    named and left out (``missing_units`` in the summary), never written half done."""
    out_dir = Path(out_dir)
    job = job or jobs.read_job(out_dir)
    missing = jobs.missing_units(out_dir, job)
    incomplete = {u.scene for u in missing}
    if missing:
        names = [job["scenes"][s]["file"] for s in sorted(incomplete)]
        print(f"warning: {len(missing)} unit(s) of {len(incomplete)} scene(s) are not done, so those scenes "
              f"are left out: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''} (run the missing "
              f"shards, then merge again)", file=sys.stderr)
    described = _described_model(job)
    names = described.class_names
    band_rule = BandRule.of(described.model_config, tuple(job["bands"]))
    files = [Path(f) for f in job["files"]]
    (out_dir / "detections").mkdir(parents=True, exist_ok=True)
    if job["save_images"]:
        (out_dir / "images").mkdir(exist_ok=True)
    caps, failed = CapCount(), list(job["failed"])
    by_scene = jobs.units_by_scene(job)
    for s, scene in enumerate(tqdm(job["scenes"], desc="merge", unit="scene")):
        if s in incomplete:
            continue
        det = jobs.merge_scene(out_dir, job, s, by_scene.get(s, []))
        caps.add(det)
        f = Path(scene["file"])
        try:
            path = Path(scene["path"])
            source = open_source(path, band_rule) if job["save_images"] else _Described(path)
        except (OSError, ValueError) as err:
            failed.append(str(f))
            print(f"\nerror: {f}: {err} (skipped)", file=sys.stderr)
            continue
        try:
            write_scene(out_dir, scene["stem"], f, source, det, names, job["save_images"],
                        DrawStyle(**job.get("draw", {})))
        finally:
            source.close()
        if on_result is not None:
            on_result(f, None, det, {"width": scene["width"], "height": scene["height"],
                                     "transform": source.transform, "crs": source.crs})
    warning = caps.warning(described.model_config.postprocess)
    if warning:
        print("\n" + warning, file=sys.stderr)
    if caps.blank:
        print(f"{caps.blank} of {caps.tiles} tiles held only nodata and were skipped", file=sys.stderr)
    gt = None
    if job["ann"]:
        from detect.evaluation.coco_eval import load_ground_truth

        gt = load_ground_truth(job["ann"])
    counts = gather(out_dir, files, names, id_map=id_map_for(described, gt))
    write_run_outputs(out_dir, files, RunOutputs(**job["outputs"]))
    return run_summary(images=len(files), caps=caps, failed=failed, objects_per_class=counts,
                       missing_units=len(missing))


class _Described:
    """Size and georeferencing of a scene, for writing its outputs without reading its pixels."""

    def __init__(self, path: Path):
        head = read_header(path)
        self.height, self.width, self.transform, self.crs = head.height, head.width, head.transform, head.crs

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class _ModelDescription:
    """The job's model as far as writing outputs goes (category ids, class names): its config,
    no weights, so ``detect merge`` needs no model file."""

    model_config: object

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.model_config.labels


def _described_model(job: dict) -> _ModelDescription:
    from detect.config import ModelConfig

    return _ModelDescription(ModelConfig.from_dict(job["model_config"]))
