import json

import numpy as np
import pytest

from detect.cli.main import main
from detect.imagery.images import BandRule
from detect.imagery.rasters import RasterSource, open_source
from detect.inference.predictor import TileOptions, detect_image, detect_source
from tests.inference.test_predict import EVERY, model_file  # noqa: F401  (fixture)
from tests.models.conftest import square_scenes

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

TRANSFORM = from_origin(500000.0, 4100000.0, 0.5, 0.5)  # 0.5 m pixels, UTM 33N


def write_tif(path, data, *, georef=True):
    """data [H, W, C] -> GeoTIFF (bands first)."""
    h, w, c = data.shape
    kw = dict(transform=TRANSFORM, crs="EPSG:32633") if georef else {}
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=c, dtype=data.dtype,
                       tiled=True, blockxsize=64, blockysize=64, **kw) as dst:
        dst.write(np.moveaxis(data, -1, 0))
    return path


def scene(size=160):
    images, _ = square_scenes(1, size=size, seed=4)
    return images[0].astype(np.uint8)


def test_windowed_raster_equals_in_memory(tmp_path, model_file):  # noqa: F811
    from detect.models import load_model

    model = load_model(model_file)
    img = scene()
    src = RasterSource(write_tif(tmp_path / "s.tif", img))
    opts = TileOptions(tile=96, overlap=0.25)
    a, b = detect_source(model, src, opts), detect_image(model, img, opts)
    assert a["tiles"] == b["tiles"] == 4 and len(a["scores"]) > 0
    np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-4)
    np.testing.assert_array_equal(src.read(10, 20, 50, 30), img[20:30, 10:50])


def test_geojson_uses_the_raster_transform_and_crs(tmp_path, model_file):  # noqa: F811
    from rasterio.features import bounds

    write_tif(tmp_path / "in.tif", scene())
    out = tmp_path / "out"
    assert main(["predict", "--model", str(model_file), "--out", str(out), "--tile", "96",
                 "--score-threshold", str(EVERY), str(tmp_path / "in.tif")]) == 0
    gj = json.loads((out / "geojson" / "in.geojson").read_text())
    pixel = json.loads((out / "detections" / "in.json").read_text())["detections"]
    assert gj["crs"]["properties"]["name"] == "EPSG:32633" and len(gj["features"]) == len(pixel) > 0
    for feat, det in zip(gj["features"], pixel):
        x0, y0, x1, y1 = det["box"]
        # x_map = 500000 + 0.5 * col, y_map = 4100000 - 0.5 * row
        want = (500000 + 0.5 * x0, 4100000 - 0.5 * y1, 500000 + 0.5 * x1, 4100000 - 0.5 * y0)
        np.testing.assert_allclose(bounds(feat["geometry"]), want, atol=1e-6)  # read by a GIS library
        assert feat["properties"]["label"] == det["label"]


def test_plain_tiff_gets_no_geojson(tmp_path, model_file):  # noqa: F811
    write_tif(tmp_path / "p.tif", scene(), georef=False)
    out = tmp_path / "out"
    assert main(["predict", "--model", str(model_file), "--out", str(out), str(tmp_path / "p.tif")]) == 0
    assert not (out / "geojson").exists() and (out / "detections" / "p.json").exists()


def test_sixteen_bit_multiband_and_band_selection(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(1000, 3000, (64, 80, 5)).astype(np.uint16)
    data[:, :, 4] = 60000  # a band far outside the others
    path = write_tif(tmp_path / "m.tif", data)
    with pytest.raises(ValueError, match="has 5 bands; choose"):
        open_source(path)
    with pytest.raises(ValueError, match=r"m.tif has 5 band\(s\); the model takes 3, and band 9 of --bands 1,2,9 does not exist"):
        open_source(path, BandRule(3, (1, 2, 9)))
    src = open_source(path, BandRule(3, (3, 2, 1)))
    lo, hi = src.levels
    assert 1000 <= lo < hi <= 3000  # from bands 3,2,1 only
    tile = src.read(0, 0, 40, 30)
    assert tile.dtype == np.uint8 and tile.shape == (30, 40, 3)
    assert tile.min() == 0 and tile.max() == 255  # stretched, clipped at the percentiles
    src.close()
