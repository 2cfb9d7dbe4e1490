"""Converters to COCO: round trips through VOC, YOLO and DeepForest CSV written from a known COCO
set, vector labels over a GeoTIFF (reprojected), and the bad inputs each one names."""

import json

import numpy as np
import pytest

from detect.cli.main import main
from detect.datasets.convert import convert
from tests.models.conftest import square_scenes, write_square_dataset

NAMES = ["pool", "car", "building"]


@pytest.fixture
def dataset(tmp_path):
    images, targets = square_scenes(5, size=96, seed=3)
    images[2] = 90  # an image without objects
    targets["labels"][2] = -1
    gt = write_square_dataset(tmp_path / "images", images, targets, NAMES)
    return tmp_path, gt


def boxes_by_file(coco):
    """{file: sorted [(class name, x0, y0, x1, y1)]} (xyxy) of a COCO dict."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    out = {f: [] for f in files.values()}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        out[files[a["image_id"]]].append((names[a["category_id"]], x, y, x + w, y + h))
    return {f: sorted(v) for f, v in out.items()}


def assert_same_boxes(got, want, atol=1e-3):
    assert set(got) == set(want)
    for f in want:
        assert [b[0] for b in got[f]] == [b[0] for b in want[f]], f
        np.testing.assert_allclose([b[1:] for b in got[f]] or np.zeros((0, 4)),
                                   [b[1:] for b in want[f]] or np.zeros((0, 4)), atol=atol)


def test_voc_round_trip_with_one_based_inclusive_corners(dataset):
    root, gt = dataset
    ann = root / "voc"
    ann.mkdir()
    names = {c["id"]: c["name"] for c in gt["categories"]}
    for im in gt["images"]:
        objs = "".join(
            f"<object><name>{names[a['category_id']]}</name><difficult>0</difficult><bndbox>"
            # VOC: first pixel 1, last pixel inclusive -> xmin = x + 1, xmax = x + w
            f"<xmin>{a['bbox'][0] + 1:g}</xmin><ymin>{a['bbox'][1] + 1:g}</ymin>"
            f"<xmax>{a['bbox'][0] + a['bbox'][2]:g}</xmax><ymax>{a['bbox'][1] + a['bbox'][3]:g}</ymax>"
            f"</bndbox></object>" for a in gt["annotations"] if a["image_id"] == im["id"])
        (ann / f"{im['file_name'][:-4]}.xml").write_text(
            f"<annotation><filename>{im['file_name']}</filename><size><width>{im['width']}</width>"
            f"<height>{im['height']}</height><depth>3</depth></size>{objs}</annotation>")
    coco, report = convert("voc", ann, root / "images")
    assert_same_boxes(boxes_by_file(coco), boxes_by_file(gt))
    assert not report.counts and len(coco["images"]) == 5


def test_yolo_round_trip_and_class_id_beyond_the_list(dataset):
    root, gt = dataset
    labels = root / "labels"
    labels.mkdir()
    (labels / "classes.txt").write_text("\n".join(NAMES) + "\n")
    for im in gt["images"]:
        rows = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
        if not rows:
            continue  # YOLO: an image without a .txt has no objects
        (labels / f"{im['file_name'][:-4]}.txt").write_text("".join(
            f"{a['category_id'] - 1} {(a['bbox'][0] + a['bbox'][2] / 2) / im['width']:.6f} "
            f"{(a['bbox'][1] + a['bbox'][3] / 2) / im['height']:.6f} {a['bbox'][2] / im['width']:.6f} "
            f"{a['bbox'][3] / im['height']:.6f}\n" for a in rows))
    coco, report = convert("yolo", labels, root / "images")
    assert_same_boxes(boxes_by_file(coco), boxes_by_file(gt), atol=1e-3)  # 6 decimals of 96 px
    assert [c["name"] for c in coco["categories"]] == NAMES and not report.counts

    (labels / "1.txt").write_text("0 0.5 0.5 0.1 0.1\nnot a line\n7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(ValueError, match=r"1.txt: line 3: class id 7 is not in the 3 classes"):
        convert("yolo", labels, root / "images")
    (labels / "1.txt").write_text("0 0.5 0.5 0.1 0.1\nnot a line\n0 0.95 0.5 0.2 0.2\n")
    coco, report = convert("yolo", labels, root / "images")
    assert report.counts["line that is not 'class cx cy w h'"] == 1
    assert report.counts["box clipped to its image (kept)"] == 1
    assert "1.txt line 2" in report.table()
    # a 6th column (a prediction file's score used as labels): the box is kept, the column counted
    (labels / "1.txt").write_text("0 0.5 0.5 0.1 0.1 0.87\n1 0.25 0.25 0.1 0.1\n")
    coco, report = convert("yolo", labels, root / "images")
    assert report.counts == {"6th column (a score?) ignored: box kept": 1}
    assert "1.txt line 1" in report.table() and "nothing dropped" not in report.table()


def test_deepforest_csv(dataset, tmp_path):
    root, gt = dataset
    names = {c["id"]: c["name"] for c in gt["categories"]}
    files = {im["id"]: im["file_name"] for im in gt["images"]}
    lines = ["image_path,xmin,ymin,xmax,ymax,label"]
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        lines.append(f"{files[a['image_id']]},{x:g},{y:g},{x + w:g},{y + h:g},{names[a['category_id']]}")
    lines.append("2.png,0,0,0,0,Tree")  # DeepForest's row for an image without objects
    lines.append("missing.png,1,1,5,5,car")
    lines.append("0.png,10,10,5,20,car")  # xmax < xmin
    (tmp_path / "ann.csv").write_text("\n".join(lines) + "\n")
    coco, report = convert("csv", tmp_path / "ann.csv", root / "images")
    want = {f: v for f, v in boxes_by_file(gt).items() if f in {"0.png", "1.png", "2.png", "3.png", "4.png"}}
    got = boxes_by_file(coco)
    assert "2.png" in got and got["2.png"] == []  # listed, without objects
    assert_same_boxes({f: got[f] for f in want if f in got}, {f: want[f] for f in want if f in got})
    assert report.counts["image missing or unreadable (its rows skipped)"] == 1
    assert report.counts["degenerate box (width or height <= 0, NaN)"] == 1
    (tmp_path / "bad.csv").write_text("file,x1,y1\n")
    with pytest.raises(ValueError, match="missing column"):
        convert("csv", tmp_path / "bad.csv", root / "images")


def test_vector_labels_reprojected_onto_a_geotiff(tmp_path, capsys):
    rasterio = pytest.importorskip("rasterio")
    gpd = pytest.importorskip("geopandas")
    import shapely
    from rasterio.transform import from_origin

    t = from_origin(500000.0, 4100000.0, 0.5, 0.5)  # UTM 33N
    with rasterio.open(tmp_path / "scene.tif", "w", driver="GTiff", width=200, height=120, count=3,
                       dtype="uint8", transform=t, crs="EPSG:32633") as dst:
        dst.write(np.full((3, 120, 200), 90, np.uint8))
    pixel = [(10, 20, 40, 50), (150.5, 60, 190, 100), (180, 100, 230, 140)]  # the last crosses the edge
    polys = [shapely.box(*(t * (x0, y1)), *(t * (x1, y0))) for x0, y0, x1, y1 in pixel]
    polys.append(shapely.box(0, 0, 10, 10))  # far outside (in UTM metres near the origin)
    frame = gpd.GeoDataFrame({"species": ["oak", "pine", "oak", "oak"]}, geometry=polys, crs="EPSG:32633")
    frame.to_crs("EPSG:4326").to_file(tmp_path / "trees.gpkg", driver="GPKG")  # labels in degrees

    assert main(["convert", "--from", "vector", str(tmp_path / "trees.gpkg"), "--images", str(tmp_path / "scene.tif"),
                 "--label-field", "species", "--out", str(tmp_path / "out.json")]) == 0
    out = capsys.readouterr()
    assert "reprojected to scene.tif's CRS EPSG:32633" in out.out + out.err
    coco = json.loads((tmp_path / "out.json").read_text())
    got = boxes_by_file(coco)["scene.tif"]
    want = sorted([("oak", 10, 20, 40, 50), ("pine", 150.5, 60, 190, 100), ("oak", 180, 100, 200, 120)])
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1:] for g in got], [w[1:] for w in want], atol=2e-3)
    assert "feature outside every raster" in out.err and "box clipped to its image (kept)" in out.err

    frame.iloc[[3]].to_file(tmp_path / "away.gpkg", driver="GPKG")
    assert main(["convert", "--from", "vector", str(tmp_path / "away.gpkg"), "--images", str(tmp_path / "scene.tif"),
                 "--out", str(tmp_path / "o2.json")]) == 2
    err = capsys.readouterr().err
    assert "none of its 1 features lies on the raster(s)" in err and "raster extent scene.tif: 500000" in err
    assert not (tmp_path / "o2.json").exists()


def test_voc_pairs_get_the_same_category_ids_and_classes_fixes_the_order(tmp_path):
    import cv2
    import numpy as np

    from detect.datasets.convert import convert

    def voc(folder, objects):
        (folder / "ann").mkdir(parents=True)
        (folder / "img").mkdir()
        cv2.imwrite(str(folder / "img" / "a.png"), np.zeros((50, 60, 3), np.uint8))
        body = "".join(f"<object><name>{n}</name><bndbox><xmin>{x}</xmin><ymin>5</ymin><xmax>{x + 9}</xmax>"
                       f"<ymax>15</ymax></bndbox></object>" for n, x in objects)
        (folder / "ann" / "a.xml").write_text(f"<annotation><filename>a.png</filename>{body}</annotation>")
        return folder / "ann", folder / "img"

    # classes first seen in opposite orders in a train and a val file
    train, _ = convert("voc", *voc(tmp_path / "train", [("tree", 1), ("car", 20)]))
    val, _ = convert("voc", *voc(tmp_path / "val", [("car", 1), ("tree", 20)]))
    assert train["categories"] == val["categories"] == [{"id": 1, "name": "car"}, {"id": 2, "name": "tree"}]
    by_id = {c["id"]: c["name"] for c in train["categories"]}
    assert [by_id[a["category_id"]] for a in train["annotations"]] == ["tree", "car"]
    # --classes: that order, and a box of another class dropped and counted
    (tmp_path / "classes.txt").write_text("tree\nboat\n")
    fixed, report = convert("voc", tmp_path / "train" / "ann", tmp_path / "train" / "img",
                            classes=tmp_path / "classes.txt")
    assert [c["name"] for c in fixed["categories"]] == ["tree", "boat"]
    assert [a["category_id"] for a in fixed["annotations"]] == [1]
    assert report.counts["class not in --classes (box dropped)"] == 1
