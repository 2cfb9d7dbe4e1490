"""Run-level GIS outputs of ``detect predict``: a GeoPackage, RFC 7946 GeoJSON, scenes merged into a mosaic.

All of them are built from the per-scene records (``detections/NAME.json``
holds pixel boxes and, for a georeferenced scene, its CRS as WKT and its
affine transform), so a single process, shards and Ray write the same
files. Each box becomes the polygon of its four pixel corners mapped
through the scene's transform (a rectangle for north-up rasters), written
with pyogrio / shapely / geopandas (the ``[geo]`` extra):

- ``--format gpkg``: ``OUT/detections.gpkg``, one layer for the run (named
  after ``OUT``) with ``label``, ``score``, ``file`` and ``model`` (the fields of
  the per-scene GeoJSON and the CSV, plus the model); scenes
  in several CRSs give one layer per CRS (``NAME_EPSG``), since a layer has one.
- ``--geojson-wgs84``: ``OUT/detections_wgs84.geojson``, RFC 7946 (EPSG:4326
  longitude/latitude, counter-clockwise exterior rings, no ``crs`` member),
  every scene reprojected.
- ``--merge-across-scenes``: detections of adjacent scenes of one CRS (a
  mosaic of orthophoto tiles) merged where the scenes touch or overlap, by
  the tile-seam rule of :mod:`detect.imagery.tiling` in map coordinates
  (:mod:`detect.inference.mosaic`): an object cut by two scene files is
  reported once. The GeoPackage and WGS84 GeoJSON then hold the merged
  set, and ``OUT/merged.geojson`` (``merged_EPSG.geojson`` per CRS) holds it
  in the scenes' CRS. Per-scene files stay per scene.

A geographic CRS (degrees) or a compound CRS (its horizontal part is used)
is named in a note, since sizes and areas in map units mislead there.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detect.inference.outputs import output_stem
from detect.structures import read_record
from detect.util import atomic

#: Where each output goes in ``OUT``.
GPKG_FILE = "detections.gpkg"
WGS84_FILE = "detections_wgs84.geojson"


@dataclass(frozen=True)
class RunOutputs:
    """Which run-level GIS outputs to write (all off: only the per-scene files)."""

    gpkg: bool = False
    geojson_wgs84: bool = False
    merge_across_scenes: bool = False
    layer: str | None = None  # GeoPackage layer name (default: the output folder's name)
    model_name: str = "model"
    iou_threshold: float = 0.5  # of the model's post-processing: the merge rule
    agnostic: bool = False

    @property
    def any(self) -> bool:
        return self.gpkg or self.geojson_wgs84 or self.merge_across_scenes

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Scene:
    """One georeferenced scene's detections from its record."""

    file: str
    width: int
    height: int
    crs: object  # rasterio CRS (horizontal part of a compound CRS)
    transform: object  # affine.Affine
    boxes: np.ndarray  # [N, 4] xyxy pixels
    labels: np.ndarray  # [N] class index
    names: list = field(default_factory=list)  # [N] class names
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _horizontal(crs, file: str, notes: set):
    """The CRS to write in; notes for a geographic or compound one."""
    import pyproj
    from rasterio.crs import CRS

    p = pyproj.CRS.from_wkt(crs.to_wkt())
    if p.is_compound:
        horiz = p.sub_crs_list[0]
        notes.add(f"note: compound CRS {p.name!r}: GIS outputs use its horizontal part {horiz.name!r}")
        crs = CRS.from_wkt(horiz.to_wkt())
        p = horiz
    if p.is_geographic:
        notes.add(f"warning: {file} is in the geographic CRS {p.name!r} (degrees): boxes are outlines in "
                  f"degrees; widths, heights and areas in its units are not lengths or areas on the ground")
    return crs


def read_scenes(out_dir: Path, files: list[Path]) -> tuple[list[Scene], int, set]:
    """Georeferenced scenes with records in ``out_dir``; also the count of scenes without a CRS, and notes."""
    from affine import Affine
    from rasterio.crs import CRS

    scenes, plain, notes = [], 0, set()
    for f in files:
        path = out_dir / "detections" / f"{output_stem(f, files)}.json"
        if not path.is_file():
            continue
        rec = read_record(path)
        if rec.crs is None:
            plain += 1
            continue
        crs = _horizontal(CRS.from_wkt(rec.crs), rec.file, notes)
        d = rec.detections
        scenes.append(Scene(rec.file, rec.width, rec.height, crs, Affine(*rec.transform),
                            d.boxes, d.label_ids, d.labels, d.scores))
    return scenes, plain, notes


def _frame(rows: list[tuple[Scene, np.ndarray]], crs, model_name: str):
    """A GeoDataFrame of the boxes of ``rows`` (scene, kept-index or map-box override) in ``crs``."""
    import geopandas as gpd
    import shapely

    polys, cls, score, scene = [], [], [], []
    for s, boxes_map, keep in rows:
        if boxes_map is None:  # pixel corners through the scene's transform
            b = s.boxes[keep]
            xs = np.stack([b[:, 0], b[:, 2], b[:, 2], b[:, 0], b[:, 0]], 1)
            ys = np.stack([b[:, 1], b[:, 1], b[:, 3], b[:, 3], b[:, 1]], 1)
            t = s.transform
            mx, my = t.a * xs + t.b * ys + t.c, t.d * xs + t.e * ys + t.f
        else:  # map-coordinate boxes (merged across scenes)
            b = boxes_map
            mx = np.stack([b[:, 0], b[:, 2], b[:, 2], b[:, 0], b[:, 0]], 1)
            my = np.stack([b[:, 1], b[:, 1], b[:, 3], b[:, 3], b[:, 1]], 1)
        polys.append(shapely.polygons(np.stack([mx, my], -1).reshape(-1, 5, 2)))
        cls += [s.names[i] for i in keep]
        score += [round(float(s.scores[i]), 5) for i in keep]
        scene += [s.file] * len(keep)
    geoms = shapely.orient_polygons(np.concatenate(polys)) if polys else []  # CCW exterior rings
    return gpd.GeoDataFrame({"label": cls, "score": score, "file": scene,
                             "model": [model_name] * len(cls)}, geometry=list(geoms), crs=crs.to_wkt())


def _groups(scenes: list[Scene]) -> list[list[Scene]]:
    """Scenes grouped by CRS, in input order of each group's first scene."""
    groups: list[list[Scene]] = []
    for s in scenes:
        for g in groups:
            if g[0].crs == s.crs:
                g.append(s)
                break
        else:
            groups.append([s])
    return groups


def _crs_tag(crs, k: int) -> str:
    epsg = crs.to_epsg()
    return f"EPSG_{epsg}" if epsg else f"crs{k + 1}"


def write_run_outputs(out_dir: Path, files: list[Path], outs: RunOutputs) -> dict:
    """Write the requested run-level outputs (see module doc); returns what was written and counts."""
    if not outs.any:
        return {}
    import pandas as pd
    import pyogrio

    scenes, plain, notes = read_scenes(out_dir, files)
    report = {"scenes": len(scenes), "without_crs": plain, "files": []}
    if plain:
        notes.add(f"note: {plain} input(s) have no CRS (not georeferenced): they are in detections.csv "
                  f"but not in the GIS outputs")
    groups = _groups(scenes)
    frames = []
    for group in groups:
        rows = [(s, None, np.arange(len(s.scores))) for s in group]
        if outs.merge_across_scenes:
            from detect.inference.mosaic import merge_mosaic

            rows, merged, skipped = merge_mosaic(group, outs.iou_threshold, outs.agnostic)
            report.setdefault("merged_duplicates", 0)
            report["merged_duplicates"] += merged
            if skipped:
                notes.add(f"note: {skipped} rotated scene(s) (not north-up) are not merged across scene edges")
        frames.append(_frame(rows, group[0].crs, outs.model_name))
        crs_name = group[0].crs.to_string() or group[0].crs.to_wkt()[:60]
        print(f"GIS: {len(group)} scene(s) in CRS {crs_name}", file=sys.stderr)
    if outs.merge_across_scenes and len(groups) > 1:
        notes.add(f"note: the scenes are in {len(groups)} CRSs; they were merged across scene edges within "
                  f"each CRS only")
    for note in sorted(notes):
        print(note, file=sys.stderr)
    if outs.merge_across_scenes:
        print(f"merged across scene edges: {report.get('merged_duplicates', 0)} detection(s) joined one of "
              f"another scene", file=sys.stderr)
    if outs.merge_across_scenes:
        for k, (group, frame) in enumerate(zip(groups, frames)):
            name = "merged.geojson" if len(groups) == 1 else f"merged_{_crs_tag(group[0].crs, k)}.geojson"
            atomic.write_with(out_dir / name, lambda p, fr=frame: pyogrio.write_dataframe(
                fr, p, driver="GeoJSON"))
            report["files"].append(name)
    if outs.gpkg:
        layer = _layer_name(outs.layer or out_dir.resolve().name)

        def write_gpkg(p):
            for k, (group, frame) in enumerate(zip(groups, frames)):
                pyogrio.write_dataframe(frame, p, driver="GPKG", append=k > 0,
                                        layer=layer if len(groups) == 1 else f"{layer}_{_crs_tag(group[0].crs, k)}")
            if not groups:  # an empty run still gets its (empty) layer
                import geopandas as gpd

                pyogrio.write_dataframe(gpd.GeoDataFrame({"label": [], "score": [], "file": [], "model": []},
                                                         geometry=[], crs="EPSG:4326"), p, driver="GPKG",
                                        layer=layer, geometry_type="Polygon")

        atomic.write_with(out_dir / GPKG_FILE, write_gpkg)
        report["files"].append(GPKG_FILE)
    if outs.geojson_wgs84:
        import geopandas as gpd

        wgs = (pd.concat([f.to_crs("EPSG:4326") for f in frames], ignore_index=True) if frames
               else gpd.GeoDataFrame({"label": [], "score": [], "file": [], "model": []}, geometry=[],
                                     crs="EPSG:4326"))
        atomic.write_with(out_dir / WGS84_FILE, lambda p: pyogrio.write_dataframe(
            gpd.GeoDataFrame(wgs, crs="EPSG:4326"), p, driver="GeoJSON",
            layer_options={"RFC7946": "YES", "COORDINATE_PRECISION": "8"}))
        report["files"].append(WGS84_FILE)
    return report


def _layer_name(name: str) -> str:
    """A GeoPackage-friendly layer name (letters, digits, underscore; not starting with a digit)."""
    clean = re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "detections"
    return f"run_{clean}" if clean[0].isdigit() else clean


def model_name(model, path) -> str:
    """The model's name in GIS outputs: its file's stem, or for a run's own ``model.keras`` /
    ``checkpoint.keras`` (whose stems say nothing) the run folder's name."""
    if path is None:
        path = getattr(model, "path", None)  # a LiteRTModel
    if path is None:
        return getattr(model, "name", None) or "model"
    p = Path(path)
    if p.is_dir():
        return p.resolve().name
    if p.stem in ("model", "checkpoint"):  # RUN/model.keras, RUN/checkpoints/epoch-N/checkpoint.keras
        run = p.resolve().parent
        return (run.parent.parent if run.parent.name == "checkpoints" else run).name
    return p.stem
