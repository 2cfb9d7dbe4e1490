"""Jobs of (scene, window) units: shards add up to one process, resume, merge, nodata windows."""

import json

import numpy as np
import pytest

from detect.api import predict
from detect.cli.main import main
from detect.inference import jobs
from detect.inference.jobs import Unit, parse_shard, shard_units
from tests.inference.blob_model import BlobModel
from tests.inference.test_predict import EVERY, model_file  # noqa: F401  (fixture)

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

TRANSFORM = from_origin(500000.0, 4100000.0, 0.5, 0.5)
COLOURS = np.array([[255, 40, 40], [40, 255, 40], [40, 40, 255]], np.uint8)


def write_tif(path, data, *, transform=TRANSFORM, crs="EPSG:32633", nodata=None):
    h, w, c = data.shape
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=c, dtype=data.dtype, tiled=True,
                       blockxsize=64, blockysize=64, transform=transform, crs=crs, nodata=nodata) as dst:
        dst.write(np.moveaxis(data, -1, 0))
    return path


def squares_scene(h=300, w=360):
    """Grey background with squares, several across tile seams (tile 96, step 72) and unit edges."""
    img = np.full((h, w, 3), 90, np.uint8)
    for k, (x, y, s) in enumerate([(60, 10, 30), (130, 60, 28), (200, 140, 40), (255, 200, 36), (20, 220, 30),
                                   (300, 30, 26), (90, 250, 24), (330, 260, 22)]):
        img[y:y + s, x:x + s] = COLOURS[k % 3]
    return img


def read_outputs(out):
    recs = {p.name: json.loads(p.read_text()) for p in sorted((out / "detections").glob("*.json"))}
    return recs, (out / "detections.csv").read_text()


# ---- shard specs and the split ----------------------------------------------------


def test_shard_spec_parsing():
    assert parse_shard("0/1") == (0, 1) and parse_shard("2/3") == (2, 3) and parse_shard(None) is None
    with pytest.raises(ValueError, match=r"--shard 3/2: the shard index counts from 0 and must be below 2"):
        parse_shard("3/2")
    with pytest.raises(ValueError, match=r"--shard 0/0: the number of shards must be at least 1"):
        parse_shard("0/0")
    with pytest.raises(ValueError, match="expected I/N with whole numbers"):
        parse_shard("a/b")
    with pytest.raises(ValueError, match="must be below 2"):
        parse_shard("-1/2")


def test_shards_partition_units_contiguously_balanced_by_pixels():
    rng = np.random.default_rng(0)
    pixels = rng.integers(1, 100, 57) ** 2  # very unequal units
    job = {"units": [[0, k, k, k + 1, int(p)] for k, p in enumerate(pixels)]}
    total = pixels.sum()
    for n in (1, 2, 3, 7):
        parts = [shard_units(job, (i, n)) for i in range(n)]
        got = [u.index for part in parts for u in part]
        assert got == list(range(57))  # each unit once, shards in order: contiguous runs
        for part in parts:  # each shard within one unit of its share
            assert abs(sum(u.pixels for u in part) - total / n) <= pixels.max()
    assert [u.index for u in shard_units(job, None)] == list(range(57))


def test_unit_file_round_trip_is_exact(tmp_path):
    from detect.inference.predictor import TileResult

    rng = np.random.default_rng(1)
    tiles = [TileResult(rng.random((3, 4), dtype=np.float32) * 100, rng.random(3, dtype=np.float32),
                        np.array([0, 2, 1], np.int32), True, False), None,
             TileResult(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)),
             TileResult(rng.random((1, 4), dtype=np.float32), np.float32([0.3]), np.int32([1]), False, True)]
    jobs.save_unit(tmp_path / "u.npz", tiles)
    back = jobs.load_unit(tmp_path / "u.npz")
    assert back[1] is None and len(back) == 4
    for a, b in zip(tiles, back):
        if a is None:
            continue
        np.testing.assert_array_equal(a.boxes, b.boxes)  # bit-exact: float32 stored as float32
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert (a.at_max, a.at_top_k) == (b.at_max, b.at_top_k)


# ---- N shards == one process ------------------------------------------------------


@pytest.mark.slow
def test_n_shards_give_exactly_one_process_detections(tmp_path, model_file, monkeypatch):  # noqa: F811
    """A random model (detections everywhere, on every seam) over a raster whose tiles form 5 or more
    units: 1, 2 and 3 shards write the records and CSV of a plain single-process run, byte for byte."""
    from detect.models import load_model

    monkeypatch.setattr(jobs, "UNIT_TILES", 4)
    model = load_model(model_file)
    path = write_tif(tmp_path / "scene.tif", squares_scene())
    kw = dict(tile=96, overlap=0.25, batch_size=2, score_threshold=EVERY)
    units = -(-predict(model, path, out=tmp_path / "plain", **kw).summary["tiles"] // 4)
    assert units >= 5  # several units: shards split the work
    want = read_outputs(tmp_path / "plain")
    assert sum(len(r["detections"]) for r in want[0].values()) > 20
    for n in (1, 2, 3):
        out = tmp_path / f"shards{n}"
        for i in range(n):
            res = predict(model, path, out=out, shard=f"{i}/{n}", **kw)
            assert res.summary["merged"] == (i == n - 1)  # the last shard finds every unit done
        assert len(list((out / "units").rglob("*.npz"))) == units
        assert read_outputs(out) == want, f"{n} shards"


def test_killed_shard_resumes_only_missing_units_and_merge_names_incomplete(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(jobs, "UNIT_TILES", 4)
    model = BlobModel(tile=96, overlap=0.25)
    path = write_tif(tmp_path / "scene.tif", squares_scene())
    out = tmp_path / "out"
    r0 = predict(model, path, out=out, shard="0/2")
    assert r0.summary["merged"] is False and not (out / "detections.csv").exists()
    # merging now leaves the scene out, naming it, and the CLI says so by its exit code
    assert main(["merge", str(out)]) == 1
    assert "scene.tif" in capsys.readouterr().err and not (out / "detections" / "scene.json").exists()
    predict(model, path, out=out, shard="1/2")
    full = read_outputs(out)
    # a shard killed after some units: remove one unit's result; the rerun redoes that unit only
    victim = sorted((out / "units" / "scene").glob("*.npz"))[1]
    victim.unlink()
    model.tiles_seen = 0
    job = json.loads((out / "job.json").read_text())
    unit = Unit(*job["units"][1])
    res = predict(model, path, out=out, shard="0/2")
    assert model.tiles_seen == unit.stop - unit.first == 4 and res.summary["merged"]
    assert read_outputs(out) == full
    # 8 squares, each found once although most cross tile seams
    assert len(full[0]["scene.json"]["detections"]) == 8


def test_shards_refuse_a_folder_of_another_job(tmp_path):
    model = BlobModel(tile=96)
    a = write_tif(tmp_path / "a.tif", squares_scene())
    b = write_tif(tmp_path / "b.tif", squares_scene(200, 200))
    out = tmp_path / "out"
    predict(model, a, out=out, shard="0/2")
    with pytest.raises(FileExistsError, match="holds another job"):
        predict(model, [a, b], out=out, shard="1/2")


def test_cli_shard_errors_and_merge_without_job(tmp_path, model_file, capsys):  # noqa: F811
    img = write_tif(tmp_path / "a.tif", squares_scene(100, 100))
    for spec in ("3/2", "0/0"):
        assert main(["predict", "--model", str(model_file), "--out", str(tmp_path / "o"), "--shard", spec,
                     str(img)]) == 2
        assert f"--shard {spec}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["merge", str(tmp_path)]) == 2
    assert "has no job.json" in capsys.readouterr().err
    (tmp_path / "job.json").write_text('{"format": ')  # damaged: named, not a bare JSON error
    assert main(["merge", str(tmp_path)]) == 2
    assert f"{tmp_path / 'job.json'}: damaged or half-written job file" in capsys.readouterr().err


# ---- nodata windows ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["nodata_value", "zero_padding", "mask_16bit"])
def test_windows_of_only_nodata_are_skipped_and_counted(tmp_path, kind, capsys):
    """The right 60% of a 300x360 scene holds no data: its windows never reach the model."""
    img = squares_scene()
    if kind == "mask_16bit":
        data = img.astype(np.uint16) * 100
        data[:, 150:] = 65535
        path = write_tif(tmp_path / "s.tif", data, nodata=65535)
    else:
        img[:, 150:] = 0
        path = write_tif(tmp_path / "s.tif", img, nodata=0 if kind == "nodata_value" else None)
    model = BlobModel(tile=96, overlap=0.25)
    res = predict(model, path, out=tmp_path / "out")
    # aligned to the model's 32 px stride (step 72 -> 64): x windows start at 0, 64, 128, 192,
    # 256, 288 and y at 0, 64, 128, 192, 224; the last three columns lie in x >= 150, on 5 rows
    assert res.summary["blank_tiles"] == 15 and res.summary["tiles"] == 30
    assert model.tiles_seen == 15
    assert "15 of 30 tiles held only nodata and were skipped" in capsys.readouterr().err
    if kind != "mask_16bit":  # (16-bit data is stretched: colours differ)
        # the squares left of the nodata edge are found (the one at x 130..158 cut at 150)
        assert len(res[0].boxes) == 4


def test_merge_from_another_working_directory(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_tif(tmp_path / "a" / "scene.tif", squares_scene(200, 200))
    monkeypatch.chdir(tmp_path / "a")
    model = BlobModel(tile=96)
    predict(model, "scene.tif", out="out", shard="0/2")
    predict(model, "scene.tif", out="out", shard="1/2")  # merges
    want = read_outputs(tmp_path / "a" / "out")
    (tmp_path / "a" / "out" / "detections" / "scene.json").unlink()
    monkeypatch.chdir(tmp_path / "b")  # e.g. a dependent SLURM job started elsewhere
    assert main(["merge", str(tmp_path / "a" / "out")]) == 0
    assert read_outputs(tmp_path / "a" / "out") == want and want[0]["scene.json"]["file"] == "scene.tif"
