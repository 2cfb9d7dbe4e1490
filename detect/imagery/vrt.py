"""A mosaic of raster tiles as one GDAL virtual raster (VRT), so ``predict`` sees objects across
the tiles' edges whole.

Orthophotos often come as a grid of files (1 km x 1 km tiles). Predicted file by
file, an object cut by a file edge is seen in pieces, and merging detections
across scene edges (:mod:`detect.inference.mosaic`) can only join the pieces the
model found. A VRT lays the files on one pixel grid and is read window by window
like any GeoTIFF, so the tile grid runs over the whole mosaic, which is what
``gdalbuildvrt`` makes; the GDAL command-line tools are not a pip install, so
this writes the same XML for the case it needs (rasterio reads it):

- every file georeferenced, north-up, in one CRS, with one pixel size (to 1e-6 of
  a pixel) and its origin on the first file's pixel lattice (within 0.01 px:
  nothing is resampled), with the first file's band count and data type;
- where files overlap, the later file's pixels are used (as ``gdalbuildvrt``),
  and the overlap is counted (files that do not overlap are listed by path, so
  the order they were named in does not make another mosaic); cells no file covers read as 0, or the nodata
  value when the files have one, which ``predict`` skips as blank.

Sources are named by absolute path: the VRT can be moved, its files cannot.
"""

from __future__ import annotations

import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from detect.util import atomic

#: Name of the mosaic ``predict --mosaic`` writes in its output folder.
MOSAIC_VRT = "mosaic.vrt"
#: A file's origin may sit this far (pixels) off the first file's lattice.
LATTICE_TOLERANCE_PX = 0.01

_VRT_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
              "int32": "Int32", "float32": "Float32", "float64": "Float64"}


def _describe(files: list[Path]) -> list[dict]:
    """The header of each file (rasterio), refusing what cannot be mosaicked, naming the file."""
    try:
        import rasterio
    except ImportError:
        raise ValueError("a mosaic of rasters needs rasterio: pip install 'detect[geo]'") from None
    out = []
    for f in files:
        try:
            with rasterio.open(f) as ds:
                out.append({"path": Path(f).resolve(), "crs": ds.crs, "transform": ds.transform,
                            "width": ds.width, "height": ds.height, "count": ds.count, "dtype": ds.dtypes[0],
                            "nodata": ds.nodata, "colorinterp": [c.name for c in ds.colorinterp]})
        except rasterio.errors.RasterioIOError as err:
            raise ValueError(f"{f}: not a raster GDAL can read ({err}); a mosaic is made of GeoTIFFs "
                             f"or VRTs") from None
    return out


def mosaic_xml(files: list[Path]) -> tuple[str, dict]:
    """The VRT text of ``files`` laid on one grid, and facts about it
    (``width``, ``height``, ``overlaps``: files that overlap an earlier one).

    Raises ValueError naming the first file that does not fit (see the module doc).
    """
    if not files:
        raise ValueError("a mosaic needs at least one raster")
    info = _describe(files)
    first = info[0]
    t0 = first["transform"]
    for d in info:
        t = d["transform"]
        what = None
        if d["crs"] is None:
            what = "is not georeferenced (no CRS), and a mosaic lays files out by their map coordinates"
        elif d["crs"] != first["crs"]:
            what = f"is in {d['crs']}, the first file {first['path'].name} in {first['crs']}; reproject it first"
        elif t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
            what = "is not north-up (a rotated or flipped transform); warp it north-up first"
        elif abs(t.a - t0.a) > 1e-6 * abs(t0.a) or abs(t.e - t0.e) > 1e-6 * abs(t0.e):
            what = (f"has pixels of {t.a:g} x {-t.e:g}, the first file {t0.a:g} x {-t0.e:g}; resample it "
                    f"to one pixel size first")
        elif d["count"] != first["count"] or d["dtype"] != first["dtype"]:
            what = (f"has {d['count']} band(s) of {d['dtype']}, the first file {first['count']} of "
                    f"{first['dtype']}")
        else:
            dx, dy = (t.c - t0.c) / t0.a, (t.f - t0.f) / t0.e
            d["x"], d["y"] = round(dx), round(dy)
            off = max(abs(dx - d["x"]), abs(dy - d["y"]))
            if off > LATTICE_TOLERANCE_PX:
                what = (f"starts {off:.3f} px off the first file's pixel grid; a mosaic does not resample: "
                        f"align it first")
        if what:
            raise ValueError(f"{d['path']}: cannot join the mosaic: it {what}")
    if first["dtype"] not in _VRT_TYPES:
        raise ValueError(f"{first['path']}: data type {first['dtype']} cannot go in a mosaic")
    x0, y0 = min(d["x"] for d in info), min(d["y"] for d in info)
    width = max(d["x"] + d["width"] for d in info) - x0
    height = max(d["y"] + d["height"] for d in info) - y0
    overlaps = sum(any(_overlap(d, e) for e in info[:i]) for i, d in enumerate(info))
    if not overlaps:  # the order only matters where files overlap: one text for one mosaic
        info.sort(key=lambda d: str(d["path"]))

    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS").text = first["crs"].to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (t0.c + x0 * t0.a, t0.a, 0.0, t0.f + y0 * t0.e, 0.0, t0.e))
    nodata = first["nodata"]
    for band in range(1, first["count"] + 1):
        b = ET.SubElement(root, "VRTRasterBand", dataType=_VRT_TYPES[first["dtype"]], band=str(band))
        if nodata is not None and not math.isnan(nodata):
            ET.SubElement(b, "NoDataValue").text = repr(float(nodata))
        interp = first["colorinterp"][band - 1]
        if interp not in ("undefined", "gray") or first["count"] == 1:
            ET.SubElement(b, "ColorInterp").text = interp.capitalize()
        for d in info:
            kind = "ComplexSource" if d["nodata"] is not None else "SimpleSource"
            src = ET.SubElement(b, kind)
            ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = str(d["path"])
            ET.SubElement(src, "SourceBand").text = str(band)
            size = {"xSize": str(d["width"]), "ySize": str(d["height"])}
            ET.SubElement(src, "SrcRect", xOff="0", yOff="0", **size)
            ET.SubElement(src, "DstRect", xOff=str(d["x"] - x0), yOff=str(d["y"] - y0), **size)
            if d["nodata"] is not None and not math.isnan(d["nodata"]):
                ET.SubElement(src, "NODATA").text = repr(float(d["nodata"]))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n", {"width": width, "height": height,
                                                         "overlaps": overlaps}


def _overlap(a: dict, b: dict) -> bool:
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


def write_mosaic(files: list[Path], path: Path, *, overwrite: bool = False) -> Path:
    """Write the VRT of ``files`` (:func:`mosaic_xml`) to ``path`` atomically and say what it holds.

    A ``path`` that exists with another mosaic is refused unless ``overwrite``:
    results already made from it would otherwise be reused for other files.
    """
    path = Path(path)
    own = [f for f in files if Path(f).resolve() == path.resolve()]
    if own:
        raise ValueError(f"{own[0]} is the mosaic this run writes: leave it out of the inputs (it joins the "
                         f"files of an earlier run), or choose another --out")
    text, facts = mosaic_xml(files)
    if path.exists() and not overwrite and path.read_text(errors="replace") != text:
        raise FileExistsError(f"{path} exists and joins other files: pass --overwrite to redo the mosaic "
                              f"and its results, or choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, text)
    note = (f"; {facts['overlaps']} of them overlap an earlier file, whose pixels the later one replaces there"
            if facts["overlaps"] else "")
    print(f"mosaic: {len(files)} raster(s) joined as one of {facts['width']} x {facts['height']} px "
          f"({path}){note}", file=sys.stderr)
    return path
