"""Run-level GIS outputs: GeoPackage and RFC 7946 GeoJSON read back with pyogrio, mosaics merged
across scene edges, several CRSs, geographic and compound CRSs."""

import json
from pathlib import Path

import numpy as np
import pytest

from detect.api import predict
from tests.inference.blob_model import BlobModel
from tests.inference.test_jobs import squares_scene, write_tif

pyogrio = pytest.importorskip("pyogrio")
shapely = pytest.importorskip("shapely")
from rasterio.transform import from_origin  # noqa: E402


def map_box(transform, box):
    """Pixel xyxy -> map (xmin, ymin, xmax, ymax) of a north-up transform."""
    x0, y0 = transform * (box[0], box[1])
    x1, y1 = transform * (box[2], box[3])
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def test_geopackage_and_wgs84_geojson_read_back(tmp_path, capsys):
    import pyproj

    t = from_origin(500000.0, 4100000.0, 0.5, 0.5)
    path = write_tif(tmp_path / "scene.tif", squares_scene(), transform=t)
    out = tmp_path / "run1"
    res = predict(BlobModel(tile=96), path, out=out, format="gpkg", geojson_wgs84=True)
    assert "GIS: 1 scene(s) in CRS EPSG:32633" in capsys.readouterr().err
    dets = json.loads((out / "detections" / "scene.json").read_text())["detections"]
    assert len(dets) == len(res[0].boxes) == 8

    assert [name for name, _ in pyogrio.list_layers(out / "detections.gpkg")] == ["run1"]
    gpkg = pyogrio.read_dataframe(out / "detections.gpkg", layer="run1")
    assert gpkg.crs.to_epsg() == 32633 and len(gpkg) == 8
    assert set(gpkg.columns) >= {"label", "score", "file", "model", "geometry"}
    assert set(gpkg["model"]) == {"model"}  # an in-memory model without a file or name
    for (_, row), d in zip(gpkg.iterrows(), dets):
        np.testing.assert_allclose(row.geometry.bounds, map_box(t, d["box"]), atol=1e-6)
        assert row["label"] == d["label"] and row["score"] == pytest.approx(d["score"])
        assert row["file"] == str(path)
        assert row.geometry.exterior.is_ccw  # counter-clockwise exterior ring

    per_scene = json.loads((out / "geojson" / "scene.geojson").read_text())
    assert all(shapely.Polygon(f["geometry"]["coordinates"][0]).exterior.is_ccw for f in per_scene["features"])

    doc = json.loads((out / "detections_wgs84.geojson").read_text())
    assert "crs" not in doc  # RFC 7946: WGS84 implied
    to_wgs = pyproj.Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    for feat, d in zip(doc["features"], dets):
        ring = np.array(feat["geometry"]["coordinates"][0])
        assert shapely.Polygon(ring).exterior.is_ccw
        x0, y0, x1, y1 = map_box(t, d["box"])
        lon, lat = to_wgs.transform([x0, x1], [y0, y1])
        np.testing.assert_allclose(ring[:, 0].min(), min(lon), atol=1e-7)  # lon first, 7+ decimals
        np.testing.assert_allclose(ring[:, 1].max(), max(lat), atol=1e-7)
        assert 14 < ring[0, 0] < 16 and 36 < ring[0, 1] < 38  # UTM 33N near 500 km E, 4100 km N
    assert pyogrio.read_dataframe(out / "detections_wgs84.geojson").crs.to_epsg() == 4326


def test_mosaic_of_four_files_matches_the_unsplit_raster(tmp_path, capsys):
    """A 300x360 raster cut into 4 GeoTIFFs along x=180 and y=150, through 3 squares: merged across
    scene edges, the 4 files give the unsplit raster's 8 boxes, each once."""
    t = from_origin(500000.0, 4100000.0, 0.5, 0.5)
    img = squares_scene()
    img[140:170, 170:195] = (255, 40, 40)  # a square on the corner of all four files
    whole = write_tif(tmp_path / "whole.tif", img, transform=t)
    parts = tmp_path / "parts"
    parts.mkdir()
    for name, (y0, y1, x0, x1) in {"nw": (0, 150, 0, 180), "ne": (0, 150, 180, 360),
                                   "sw": (150, 300, 0, 180), "se": (150, 300, 180, 360)}.items():
        write_tif(parts / f"{name}.tif", img[y0:y1, x0:x1], transform=t * t.translation(x0, y0))
    model = BlobModel(tile=96)
    predict(model, whole, out=tmp_path / "one", merge_across_scenes=True)
    res = predict(model, parts, out=tmp_path / "four", merge_across_scenes=True)
    err = capsys.readouterr().err
    assert sum(len(d.boxes) for d in res) > 9  # cut squares are found in pieces, per file
    one = pyogrio.read_dataframe(tmp_path / "one" / "merged.geojson")
    four = pyogrio.read_dataframe(tmp_path / "four" / "merged.geojson")
    assert len(one) == len(four) == 9
    a = sorted(tuple(np.round(g.bounds, 6)) for g in one.geometry)
    b = sorted(tuple(np.round(g.bounds, 6)) for g in four.geometry)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert four.crs.to_epsg() == 32633 and "GIS: 4 scene(s) in CRS EPSG:32633" in err
    # 2 cut objects: one in 2 parts, one in 4: 1 + 3 parts joined another scene's
    assert "merged across scene edges: 4 detection(s) joined one of another scene" in err


def four_parts(tmp_path, img, t, cuts=(150, 180)):
    """``img`` cut at row ``cuts[0]`` and column ``cuts[1]`` into four GeoTIFFs of transform ``t``'s grid."""
    (y, x), (h, w) = cuts, img.shape[:2]
    files = []
    for name, (y0, y1, x0, x1) in {"nw": (0, y, 0, x), "ne": (0, y, x, w), "sw": (y, h, 0, x),
                                   "se": (y, h, x, w)}.items():
        files.append(write_tif(tmp_path / f"{name}.tif", img[y0:y1, x0:x1], transform=t @ t.translation(x0, y0)))
    return files


def test_a_mosaic_of_the_parts_is_predicted_as_the_whole_raster(tmp_path, capsys):
    """The four parts of a raster joined as one VRT (``mosaic=True``): its pixels and grid are the
    whole raster's, so the detections are the unsplit raster's, box for box (merging across scene
    edges can only join the pieces found in each file); a rerun reuses the mosaic's results."""
    import rasterio

    t = from_origin(500000.0, 4100000.0, 0.5, 0.5)
    img = squares_scene()
    img[140:170, 170:195] = (255, 40, 40)  # on the corner of all four files
    whole = write_tif(tmp_path / "whole.tif", img, transform=t)
    parts = tmp_path / "parts"
    parts.mkdir()
    files = four_parts(parts, img, t)
    model = BlobModel(tile=96)
    one = predict(model, whole)[0]
    res = predict(model, [str(parts)], out=tmp_path / "out", mosaic=True, format="gpkg")
    vrt = tmp_path / "out" / "mosaic.vrt"
    assert "mosaic: 4 raster(s) joined as one of 360 x 300 px" in capsys.readouterr().err
    with rasterio.open(vrt) as ds:
        np.testing.assert_array_equal(np.moveaxis(ds.read(), 0, -1), img)
        assert ds.transform == t and ds.crs.to_epsg() == 32633
    [mosaic] = res
    assert Path(mosaic.source) == vrt and (mosaic.width, mosaic.height, mosaic.transform) == (360, 300, t)
    assert len(mosaic.boxes) == len(one.boxes) == 9
    np.testing.assert_array_equal(mosaic.boxes, one.boxes)
    np.testing.assert_array_equal(mosaic.labels, one.labels)
    np.testing.assert_allclose(mosaic.scores, one.scores)
    frame = pyogrio.read_dataframe(tmp_path / "out" / "detections.gpkg")
    assert [Path(f).name for f in frame["file"]] == ["mosaic.vrt"] * 9
    # a rerun over the same files resumes; other files are refused, not matched to old results
    again = predict(model, files, out=tmp_path / "out", mosaic=True)
    np.testing.assert_array_equal(again[0].boxes, one.boxes)
    # the same with its own threshold, into a folder made with that threshold: resumes too
    high = predict(model, files, out=tmp_path / "high", mosaic=True, score_threshold=0.5)
    assert len(predict(model, files, out=tmp_path / "high", mosaic=True, score_threshold=0.5)[0].boxes) == len(
        high[0].boxes)
    with pytest.raises(FileExistsError, match=r"mosaic.vrt exists and joins other files: pass --overwrite"):
        predict(model, files[:3], out=tmp_path / "out", mosaic=True)
    with pytest.raises(ValueError, match=r"mosaic.vrt is the mosaic this run writes: leave it out of the inputs"):
        predict(model, [*files, vrt], out=tmp_path / "out", mosaic=True)
    # a .vrt is also an input by itself, and a folder's .vrt is listed with its TIFFs
    assert len(predict(model, vrt)[0].boxes) == 9
    from detect.imagery.inputs import expand_sources

    assert [f.name for f in expand_sources([str(tmp_path / "out")])] == ["mosaic.vrt"]
    # a folder of another model's results is refused before the mosaic is written into it
    from detect.inference.outputs import FINGERPRINT

    other = tmp_path / "other"
    other.mkdir()
    (other / FINGERPRINT).write_text('{"model": "another"}')
    with pytest.raises(FileExistsError, match=r"holds results made with other settings"):
        predict(model, files, out=other, mosaic=True)
    assert sorted(p.name for p in other.iterdir()) == [FINGERPRINT]


def test_a_mosaic_with_a_gap_and_an_overlap(tmp_path, capsys):
    """Three of four parts and a copy of one shifted by 40 px: the missing quarter reads as 0 (blank,
    not predicted) and the overlap is counted; the later file's pixels win there."""
    import rasterio

    t = from_origin(500000.0, 4100000.0, 0.5, 0.5)
    img = squares_scene()
    nw, ne, sw, _ = four_parts(tmp_path, img, t)
    extra = write_tif(tmp_path / "extra.tif", np.full((50, 50, 3), 7, np.uint8), transform=t @ t.translation(40, 40))
    res = predict(BlobModel(tile=96), [nw, ne, sw, extra], out=tmp_path / "out", mosaic=True)
    err = capsys.readouterr().err
    assert "mosaic: 4 raster(s) joined as one of 360 x 300 px" in err
    assert "; 1 of them overlap an earlier file, whose pixels the later one replaces there" in err
    with rasterio.open(tmp_path / "out" / "mosaic.vrt") as ds:
        got = np.moveaxis(ds.read(), 0, -1)
    want = img.copy()
    want[150:, 180:] = 0
    want[40:90, 40:90] = 7
    np.testing.assert_array_equal(got, want)
    # of the 8 squares, 2 lie in the missing quarter and 1 loses all but its top 10 rows to it
    assert len(res[0].boxes) == 6
    assert any(np.allclose(b, [200, 140, 240, 150]) for b in res[0].boxes)


@pytest.mark.parametrize("change, message", [
    ({"crs": "EPSG:32634"}, r"is in EPSG:32634, the first file a.tif in EPSG:32633; reproject it first"),
    ({"transform": from_origin(500100.0, 4100000.0, 0.25, 0.25)}, r"has pixels of 0.25 x 0.25, the first "
                                                                   r"file 0.5 x 0.5; resample"),
    ({"transform": from_origin(500100.2, 4100000.0, 0.5, 0.5)}, r"starts 0.400 px off the first file's pixel "
                                                                 r"grid"),
    ({"crs": None}, r"is not georeferenced"),
    ({"bands": 1}, r"has 1 band\(s\) of uint8, the first file 3 of uint8"),
])
def test_a_mosaic_refuses_files_that_do_not_share_a_grid(tmp_path, change, message):
    from affine import Affine

    t = from_origin(500000.0, 4100000.0, 0.5, 0.5)
    a = write_tif(tmp_path / "a.tif", squares_scene(100, 200), transform=t)
    data = np.zeros((100, 200, change.get("bands", 3)), np.uint8)
    b = write_tif(tmp_path / "b.tif", data, transform=change.get("transform", t @ Affine.translation(200, 0)),
                  crs=change.get("crs", "EPSG:32633"))
    with pytest.raises(ValueError, match=r"b.tif: cannot join the mosaic: it " + message):
        predict(BlobModel(tile=96), [a, b], out=tmp_path / "out", mosaic=True)
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_mosaic_needs_rasters_and_an_output_folder(tmp_path):
    import cv2
    from affine import Affine

    t = from_origin(500000.0, 4100000.0, 0.5, 0.5)
    a = write_tif(tmp_path / "a.tif", squares_scene(100, 200), transform=t)
    jpg = tmp_path / "b.jpg"
    cv2.imwrite(str(jpg), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match=r"mosaic joins georeferenced rasters \(.tif, .tiff, .vrt\); "
                                         r".*b.jpg is not one"):
        predict(BlobModel(tile=96), [a, jpg], out=tmp_path / "out", mosaic=True)
    with pytest.raises(ValueError, match=r"mosaic, shard and engine write files: give out=FOLDER"):
        predict(BlobModel(tile=96), [a], mosaic=True)
    rotated = write_tif(tmp_path / "r.tif", squares_scene(100, 200), transform=t @ Affine.rotation(10))
    with pytest.raises(ValueError, match=r"r.tif: cannot join the mosaic: it is not north-up"):
        predict(BlobModel(tile=96), [rotated], out=tmp_path / "out2", mosaic=True)


def test_scenes_in_two_crss_merge_within_each_and_say_so(tmp_path, capsys):
    t = from_origin(500000.0, 4100000.0, 0.5, 0.5)
    a = write_tif(tmp_path / "a.tif", squares_scene(), transform=t, crs="EPSG:32633")
    b = write_tif(tmp_path / "b.tif", squares_scene(), transform=t, crs="EPSG:32634")
    out = tmp_path / "out"
    predict(BlobModel(tile=96), [a, b], out=out, merge_across_scenes=True, format="gpkg")
    err = capsys.readouterr().err
    assert "the scenes are in 2 CRSs; they were merged across scene edges within each CRS only" in err
    layers = sorted(name for name, _ in pyogrio.list_layers(out / "detections.gpkg"))
    assert layers == ["out_EPSG_32633", "out_EPSG_32634"]
    assert (out / "merged_EPSG_32633.geojson").is_file() and (out / "merged_EPSG_32634.geojson").is_file()


def test_geographic_and_compound_crs_still_work_and_warn(tmp_path, capsys):
    geo = write_tif(tmp_path / "geo.tif", squares_scene(), transform=from_origin(15.0, 37.0, 5e-6, 5e-6),
                    crs="EPSG:4326")
    out = tmp_path / "g"
    res = predict(BlobModel(tile=96), geo, out=out, format="gpkg")
    err = capsys.readouterr().err
    assert len(res[0].boxes) == 8 and "geographic CRS 'WGS 84' (degrees)" in err
    assert pyogrio.read_dataframe(out / "detections.gpkg").crs.to_epsg() == 4326

    comp = write_tif(tmp_path / "comp.tif", squares_scene(), crs="EPSG:32633+5773")
    out = tmp_path / "c"
    predict(BlobModel(tile=96), comp, out=out, geojson_wgs84=True, format="gpkg")
    err = capsys.readouterr().err
    assert "compound CRS" in err and "horizontal part 'WGS 84 / UTM zone 33N'" in err
    assert pyogrio.read_dataframe(out / "detections.gpkg").crs.to_epsg() == 32633
    assert len(pyogrio.read_dataframe(out / "detections_wgs84.geojson")) == 8


def test_the_model_field_names_the_model_file_or_its_run(tmp_path):
    from detect.inference.gis import model_name

    run = tmp_path / "trees_2026"
    (run / "checkpoints" / "epoch-0003").mkdir(parents=True)
    assert model_name(None, run / "model.keras") == "trees_2026"
    assert model_name(None, run / "checkpoints" / "epoch-0003" / "checkpoint.keras") == "trees_2026"
    assert model_name(None, run) == "trees_2026"
    assert model_name(None, tmp_path / "crowns_int8.tflite") == "crowns_int8"
