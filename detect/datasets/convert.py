"""Labels from other tools as COCO: Pascal VOC XML, YOLO text, DeepForest-style CSV, GIS vectors.

Every reader returns a COCO dict (``images`` with ``file_name`` relative to
the images folder, ``width``, ``height``; ``annotations`` with ``bbox`` in
COCO xywh pixels; ``categories`` numbered from 1) and a
:class:`ConvertReport` of what it dropped or changed and why. Pixel
conventions, each the source format's own:

- VOC: ``xmin..xmax`` are 1-based inclusive pixel indices, so the box in
  continuous pixel coordinates is ``(xmin - 1, ymin - 1, xmax, ymax)`` (as
  detectron2 and torchvision's VOC readers do).
- YOLO: ``class cx cy w h``, centre and size as fractions of the image's
  width and height (read from the image file); class ids index the classes
  file (``classes.txt``, one name per line, or a ``data.yaml`` ``names``).
- CSV (DeepForest): ``image_path,xmin,ymin,xmax,ymax,label`` in pixels;
  a row with an empty or all-zero box lists an image without objects.
- vector: polygons or boxes in a GeoPackage / Shapefile / GeoJSON over one
  or more GeoTIFFs; each feature is reprojected to a raster's CRS, its
  bounding box mapped to pixels through the raster's transform and clipped
  to it.
"""

from __future__ import annotations

import csv
import math
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detect.imagery.images import inspect_image
from detect.imagery.inputs import IMAGE_SUFFIXES

FORMATS = ("voc", "yolo", "csv", "vector")


@dataclass
class ConvertReport:
    """What a conversion dropped or changed: reason -> count, with a few examples each."""

    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 3:
            self.examples[reason].append(example)

    def table(self) -> str:
        lines = list(self.notes)
        if not self.counts:
            return "\n".join(lines + ["nothing dropped"])
        lines.append(f"{'dropped or changed':<44}{'count':>7}")
        for reason, n in self.counts.most_common():
            lines.append(f"  {reason:<42}{n:>7}")
            lines += [f"      {e}" for e in self.examples[reason]]
        return "\n".join(lines)


class _Builder:
    """Accumulates a COCO dict. Categories: those of ``names``, in that order (a label not among
    them is refused by :meth:`known`); with no names, every label seen, ordered by name at the
    end, so two files of the same classes (a train / val pair) get the same category ids."""

    def __init__(self, names=()):
        self.images, self.annotations, self.cats = [], [], {}
        self.fixed = bool(names)
        for n in names:
            self.category(n)

    def category(self, name: str) -> int:
        if name not in self.cats:
            self.cats[name] = len(self.cats) + 1
        return self.cats[name]

    def known(self, name: str, report: "ConvertReport", where: str) -> bool:
        """False (counted in ``report``) for a label that is not one of the given classes."""
        if self.fixed and name not in self.cats:
            report.add("class not in --classes (box dropped)", f"{where}: {name!r}")
            return False
        return True

    def image(self, file_name: str, width: int, height: int) -> int:
        self.images.append({"id": len(self.images) + 1, "file_name": file_name, "width": int(width),
                            "height": int(height)})
        return len(self.images)

    def box(self, image_id: int, name: str, x0, y0, x1, y1) -> None:
        w, h = float(x1 - x0), float(y1 - y0)
        self.annotations.append({"id": len(self.annotations) + 1, "image_id": image_id,
                                 "category_id": self.category(name),
                                 "bbox": [round(float(x0), 3), round(float(y0), 3), round(w, 3), round(h, 3)],
                                 "area": round(w * h, 3), "iscrowd": 0})

    def coco(self) -> dict:
        if not self.fixed:  # ids by name order, not by first appearance
            renumber = {i: k for k, (_, i) in enumerate(sorted(self.cats.items()), 1)}
            self.cats = {n: renumber[i] for n, i in self.cats.items()}
            for a in self.annotations:
                a["category_id"] = renumber[a["category_id"]]
        return {"images": self.images, "annotations": self.annotations,
                "categories": sorted(({"id": i, "name": n} for n, i in self.cats.items()), key=lambda c: c["id"])}


def _clip_box(box, width, height, report: ConvertReport, where: str):
    """Box clipped to the image; None (reported) when nothing of it is inside or it is degenerate."""
    x0, y0, x1, y1 = box
    if not all(math.isfinite(v) for v in box) or x1 <= x0 or y1 <= y0:
        report.add("degenerate box (width or height <= 0, NaN)", f"{where}: {list(box)}")
        return None
    c = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
    if c[2] <= c[0] or c[3] <= c[1]:
        report.add("box entirely outside its image", f"{where}: {list(box)} in {width}x{height}")
        return None
    if c != (x0, y0, x1, y1):
        report.add("box clipped to its image (kept)", f"{where}: {list(box)} in {width}x{height}")
    return c


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file (raises ValueError for a file that is not an image)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            import rasterio
        except ImportError:
            pass
        else:
            with rasterio.open(path) as ds:
                return ds.width, ds.height
    return inspect_image(path)


def _find_image(images: Path, stem_or_name: str) -> Path | None:
    direct = images / stem_or_name
    if direct.is_file():
        return direct
    stem = Path(stem_or_name).stem
    for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
        p = images / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


# ---- Pascal VOC ---------------------------------------------------------------------


def from_voc(labels: Path, images: Path, *, drop_difficult: bool = False,
             classes: Path | None = None) -> tuple[dict, ConvertReport]:
    """A folder of VOC XML files (or one file) -> COCO; ``classes``: the category order."""
    report, out = ConvertReport(), _Builder(read_class_names(classes) if classes else ())
    files = sorted(labels.glob("*.xml")) if labels.is_dir() else [labels]
    if not files:
        raise FileNotFoundError(f"{labels}: no .xml files")
    for xml in files:
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as err:
            report.add("XML file that does not parse", f"{xml.name}: {err}")
            continue
        name = (root.findtext("filename") or "").strip() or xml.stem
        path = _find_image(images, name)
        if path is None:
            report.add("image file not found (file skipped)", f"{xml.name}: {name} not in {images}")
            continue
        try:
            width, height = _image_size(path)
        except (OSError, ValueError) as err:
            report.add("image unreadable (file skipped)", f"{path}: {err}")
            continue
        size = (_int(root.findtext("size/width")), _int(root.findtext("size/height")))
        if all(size) and size != (width, height):
            report.add("size in XML differs from the image's (image's used)",
                       f"{xml.name}: XML {size[0]}x{size[1]}, file {width}x{height}")
        image_id = out.image(path.relative_to(images).as_posix(), width, height)
        for k, obj in enumerate(root.iter("object")):
            where = f"{xml.name} object {k + 1}"
            label = (obj.findtext("name") or "").strip()
            if not label:
                report.add("object without a name", where)
                continue
            if drop_difficult and (obj.findtext("difficult") or "0").strip() == "1":
                report.add("difficult object (--drop-difficult)", where)
                continue
            try:
                xmin, ymin, xmax, ymax = (float(obj.findtext(f"bndbox/{t}")) for t in
                                          ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError):
                report.add("object without a numeric bndbox", where)
                continue
            box = _clip_box((xmin - 1, ymin - 1, xmax, ymax), width, height, report, where)
            if box is not None and out.known(label, report, where):
                out.box(image_id, label, *box)
    return out.coco(), report


def _int(text) -> int:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return 0


# ---- YOLO -----------------------------------------------------------------------------


def read_class_names(path: Path) -> list[str]:
    """Names from ``classes.txt`` (one per line) or a YOLO ``data.yaml`` (``names``: list or dict)."""
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        names = (yaml.safe_load(path.read_text()) or {}).get("names")
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names, key=int)]
        if not isinstance(names, list) or not names:
            raise ValueError(f"{path}: no 'names' list in this YAML")
        return [str(n) for n in names]
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path}: the classes file is empty")
    return names


def from_yolo(labels: Path, images: Path, *, classes: Path | None = None) -> tuple[dict, ConvertReport]:
    """A folder of YOLO ``.txt`` files (one per image; an image without one has no objects) -> COCO."""
    report = ConvertReport()
    if classes is None:
        for candidate in (labels / "classes.txt", labels.parent / "classes.txt", labels / "data.yaml",
                          labels.parent / "data.yaml"):
            if candidate.is_file():
                classes = candidate
                break
        else:
            raise FileNotFoundError(f"no classes file: pass --classes (classes.txt or data.yaml); looked next "
                                    f"to {labels}")
    names = read_class_names(classes)
    out = _Builder(names)
    txts = {p.stem: p for p in labels.glob("*.txt") if p.name != "classes.txt"}
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{images}: no images")
    for stem in sorted(set(txts) - {p.stem for p in paths}):
        report.add("label file without an image (skipped)", txts[stem].name)
    for path in paths:
        try:
            width, height = _image_size(path)
        except (OSError, ValueError) as err:
            report.add("image unreadable (file skipped)", f"{path}: {err}")
            continue
        image_id = out.image(path.name, width, height)
        txt = txts.get(path.stem)
        if txt is None:
            continue
        for line_no, line in enumerate(txt.read_text().splitlines(), 1):
            if not line.strip():
                continue
            where = f"{txt.name} line {line_no}"
            parts = line.split()
            try:
                cls, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
                if len(parts) not in (5, 6):  # 6: a score column of a prediction file
                    raise ValueError
            except (ValueError, IndexError):
                report.add("line that is not 'class cx cy w h'", f"{where}: {line.strip()[:60]!r}")
                continue
            if len(parts) == 6:  # kept as a box, but said: predictions used as labels are rarely meant
                report.add("6th column (a score?) ignored: box kept", f"{where}: {line.strip()[:60]!r}")
            if not 0 <= cls < len(names):
                raise ValueError(f"{txt}: line {line_no}: class id {cls} is not in the {len(names)} classes of "
                                 f"{classes} (ids 0..{len(names) - 1})")
            box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            box = _clip_box(box, width, height, report, where)
            if box is not None:
                out.box(image_id, names[cls], *box)
    return out.coco(), report


# ---- CSV (DeepForest) -------------------------------------------------------------------


CSV_COLUMNS = ("image_path", "xmin", "ymin", "xmax", "ymax", "label")


def from_csv(labels: Path, images: Path, *, classes: Path | None = None) -> tuple[dict, ConvertReport]:
    """``image_path,xmin,ymin,xmax,ymax,label`` rows (DeepForest's annotations) -> COCO;
    ``classes``: the category order."""
    report, out = ConvertReport(), _Builder(read_class_names(classes) if classes else ())
    with open(labels, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{labels}: missing column(s) {', '.join(missing)}; expected a header "
                             f"{','.join(CSV_COLUMNS)} (extra columns are ignored)")
        ids: dict[str, int | None] = {}
        for row_no, row in enumerate(reader, 2):
            where = f"{labels.name} line {row_no}"
            name = (row["image_path"] or "").strip()
            if name not in ids:
                path = images / name
                try:
                    width, height = _image_size(path)
                    ids[name] = out.image(name, width, height)
                except (OSError, ValueError) as err:
                    ids[name] = None
                    report.add("image missing or unreadable (its rows skipped)", f"{where}: {path} ({err})")
            if ids[name] is None:
                continue
            values = [(row[c] or "").strip() for c in CSV_COLUMNS[1:5]]
            if all(v in ("", "0", "0.0") for v in values):  # an image without objects
                continue
            try:
                box = tuple(float(v) for v in values)
            except ValueError:
                report.add("row whose box is not numbers", f"{where}: {values}")
                continue
            label = (row["label"] or "").strip()
            if not label:
                report.add("row without a label", where)
                continue
            image = out.images[ids[name] - 1]
            box = _clip_box(box, image["width"], image["height"], report, where)
            if box is not None and out.known(label, report, where):
                out.box(ids[name], label, *box)
    return out.coco(), report


# ---- GIS vectors over GeoTIFFs --------------------------------------------------------------


def from_vector(labels: Path, images: Path, *, label_field: str | None = None,
                layer: str | None = None, classes: Path | None = None) -> tuple[dict, ConvertReport]:
    """Polygons / boxes of a vector file over the GeoTIFF(s) ``images`` (a file or folder) -> COCO.

    Each feature goes to every raster whose extent it intersects (reprojected
    to that raster's CRS), as the pixel bounding box of its geometry, clipped.
    """
    import geopandas as gpd
    import rasterio

    report, out = ConvertReport(), _Builder(read_class_names(classes) if classes else ())
    frame = gpd.read_file(labels, layer=layer, engine="pyogrio")
    if frame.crs is None:
        raise ValueError(f"{labels}: the layer has no CRS; assign the one it was drawn in, e.g. "
                         f"ogr2ogr -a_srs EPSG:32633 fixed.gpkg {labels.name}")
    field_name = label_field or next((c for c in ("label", "class", "name", "category") if c in frame.columns), None)
    if label_field and label_field not in frame.columns:
        raise ValueError(f"{labels}: no field {label_field!r}; fields: {', '.join(map(str, frame.columns[:-1]))}")
    if field_name is None:
        report.notes.append(f"no label field (label, class, name, category) in {labels.name}: every feature is "
                            f"'object' (--label-field to choose one)")
    rasters = (sorted(p for p in images.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
               if images.is_dir() else [images])
    if not rasters:
        raise FileNotFoundError(f"{images}: no GeoTIFFs")
    root = images if images.is_dir() else images.parent
    used = np.zeros(len(frame), bool)
    empty = frame.geometry.is_empty | frame.geometry.isna()
    for k in np.flatnonzero(empty.to_numpy()):
        report.add("feature without a geometry", f"feature {k}")
    extents = []
    for path in rasters:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                raise ValueError(f"{path}: the raster has no CRS, so vector labels cannot be placed on it")
            crs, transform, width, height, bounds = ds.crs, ds.transform, ds.width, ds.height, ds.bounds
        extents.append((path.name, crs, bounds))
        local = frame if frame.crs == crs else frame.to_crs(crs.to_wkt())
        if frame.crs != crs:
            report.notes.append(f"labels in {frame.crs.name!r} reprojected to {path.name}'s CRS {crs.to_string()}")
        image_id = out.image(path.relative_to(root).as_posix(), width, height)
        inverse = ~transform
        geoms = local.geometry.to_numpy()
        for k, geom in enumerate(geoms):
            if empty.iloc[k]:
                continue
            minx, miny, maxx, maxy = geom.bounds
            if maxx <= bounds.left or minx >= bounds.right or maxy <= bounds.bottom or miny >= bounds.top:
                continue
            cols, rows = zip(*(inverse * (x, y) for x, y in ((minx, miny), (minx, maxy), (maxx, miny), (maxx, maxy))))
            box = (min(cols), min(rows), max(cols), max(rows))
            box = _clip_box(box, width, height, report, f"feature {k} on {path.name}")
            if box is None:
                continue
            used[k] = True
            label = str(frame[field_name].iloc[k]) if field_name else "object"
            if out.known(label, report, f"feature {k}"):
                out.box(image_id, label, *box)
    outside = ~used & ~empty.to_numpy()
    if outside.all() and len(frame):
        fb = frame.total_bounds
        shown = "; ".join(f"{n}: {b.left:.6g}, {b.bottom:.6g}, {b.right:.6g}, {b.top:.6g} ({c.to_string()})"
                          for n, c, b in extents[:3])
        raise ValueError(f"{labels}: none of its {len(frame)} features lies on the raster(s): labels extent "
                         f"{fb[0]:.6g}, {fb[1]:.6g}, {fb[2]:.6g}, {fb[3]:.6g} ({frame.crs.to_string()}); "
                         f"raster extent {shown}")
    for k in np.flatnonzero(outside):
        report.add("feature outside every raster", f"feature {k}")
    return out.coco(), report


def convert(fmt: str, labels, images, **options) -> tuple[dict, ConvertReport]:
    """Dispatch to the reader of ``fmt`` (one of :data:`FORMATS`)."""
    labels, images = Path(labels), Path(images)
    if not labels.exists():
        raise FileNotFoundError(f"labels {labels}: no such file or folder")
    if not images.exists():
        raise FileNotFoundError(f"--images {images}: no such file or folder")
    readers = {"voc": from_voc, "yolo": from_yolo, "csv": from_csv, "vector": from_vector}
    if fmt not in readers:
        raise ValueError(f"--from {fmt!r}: choose one of {', '.join(FORMATS)}")
    return readers[fmt](labels, images, **{k: v for k, v in options.items() if v is not None})


def print_summary(coco: dict, report: ConvertReport, out) -> None:
    n = Counter(a["category_id"] for a in coco["annotations"])
    print(f"{len(coco['images'])} images, {len(coco['annotations'])} boxes -> {out}")
    for c in coco["categories"]:
        print(f"  {c['name'][:30]:<32}{n.get(c['id'], 0):>7}")
    print(report.table(), file=sys.stderr if report.counts else sys.stdout)

