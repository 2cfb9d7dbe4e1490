"""``detect slice`` (chips and their labels against a reference computed box by box) and
``detect doctor`` (the training report, alone)."""

import json

import numpy as np
import pytest

from detect.cli.main import main
from detect.datasets.slicing import chip_targets, slice_dataset
from detect.imagery.tiling import tile_windows
from tests.inference.test_jobs import squares_scene, write_tif

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

T = from_origin(500000.0, 4100000.0, 0.5, 0.5)
SQUARES = [(60, 10, 30), (130, 60, 28), (200, 140, 40), (255, 200, 36), (20, 220, 30), (300, 30, 26),
           (90, 250, 24), (330, 260, 22)]  # (x, y, side) as squares_scene draws them


def scene_dataset(tmp_path, nodata_right=False):
    img = squares_scene()
    if nodata_right:
        img[:, 250:] = 0
    (tmp_path / "scenes").mkdir()
    write_tif(tmp_path / "scenes" / "big.tif", img, transform=T)
    anns = [{"id": k + 1, "image_id": 1, "category_id": k % 3 + 1, "bbox": [x, y, s, s], "area": s * s,
             "iscrowd": 0} for k, (x, y, s) in enumerate(SQUARES) if not (nodata_right and x >= 250)]
    gt = {"images": [{"id": 1, "file_name": "big.tif", "width": 360, "height": 300}], "annotations": anns,
          "categories": [{"id": 1, "name": "pool"}, {"id": 2, "name": "car"}, {"id": 3, "name": "building"}]}
    (tmp_path / "ann.json").write_text(json.dumps(gt))
    return img, gt


def test_chip_targets_golden():
    boxes = np.array([[10, 10, 30, 30], [90, 10, 130, 30], [110, 10, 150, 30]], np.float64)
    crowd = np.array([False, False, True])
    kept, idx, ignore, ignore_idx, cut, clipped = chip_targets(boxes, crowd, (0, 0, 100, 100), 0.5)
    # box 0 whole; box 1 has 10 of 40 px of width inside (0.25 < 0.5): an ignore region; box 2 is
    # a crowd region outside the chip (x >= 110): gone
    np.testing.assert_allclose(kept, [[10, 10, 30, 30]])
    np.testing.assert_allclose(ignore, [[90, 10, 100, 30]])
    assert idx.tolist() == [0] and ignore_idx.tolist() == [1] and cut == 1 and clipped == 0
    kept, idx, ignore, _, cut, clipped = chip_targets(boxes, crowd, (50, 0, 150, 100), 0.5)
    # box 1 whole (offset by 50); box 2 (crowd) stays an ignore region, clipped to the chip
    np.testing.assert_allclose(kept, [[40, 10, 80, 30]])
    np.testing.assert_allclose(ignore, [[60, 10, 100, 30]])
    assert cut == 0 and clipped == 0


def test_slice_against_a_box_by_box_reference(tmp_path):
    img, gt = scene_dataset(tmp_path)
    summary = slice_dataset(tmp_path / "ann.json", tmp_path / "scenes", tmp_path / "chips", size=128,
                            overlap=0.25, min_visible=0.6, keep_empty=1.0, progress=False)
    out = json.loads((tmp_path / "chips" / "annotations.json").read_text())
    windows = tile_windows(300, 360, 128, 0.25)
    assert len(out["images"]) == len(windows) == summary.counts["chips"]
    boxes = np.array([[x, y, x + s, y + s] for x, y, s in SQUARES], np.float64)
    for im in out["images"]:
        x0, y0, x1, y1 = im["window"]
        # the reference, box by box
        want_kept, want_ignore = [], []
        for b in boxes:
            c = [max(b[0], x0), max(b[1], y0), min(b[2], x1), min(b[3], y1)]
            if c[2] <= c[0] or c[3] <= c[1]:
                continue
            share = (c[2] - c[0]) * (c[3] - c[1]) / ((b[2] - b[0]) * (b[3] - b[1]))
            (want_kept if share >= 0.6 else want_ignore).append([c[0] - x0, c[1] - y0, c[2] - x0, c[3] - y0])
        got = [a for a in out["annotations"] if a["image_id"] == im["id"]]
        as_xyxy = lambda rows: sorted([a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],  # noqa: E731
                                       a["bbox"][1] + a["bbox"][3]] for a in rows)
        np.testing.assert_allclose(as_xyxy([a for a in got if not a["iscrowd"]]) or np.zeros((0, 4)),
                                   sorted(want_kept) or np.zeros((0, 4)))
        np.testing.assert_allclose(as_xyxy([a for a in got if a["iscrowd"]]) or np.zeros((0, 4)),
                                   sorted(want_ignore) or np.zeros((0, 4)))
        # the chip holds the scene's pixels, georeferenced at its window
        with rasterio.open(tmp_path / "chips" / "images" / im["file_name"]) as ds:
            np.testing.assert_array_equal(np.moveaxis(ds.read(), 0, -1), img[y0:y1, x0:x1])
            assert ds.transform == T * T.translation(x0, y0) and ds.crs.to_epsg() == 32633
    # a training set detect reads without complaint
    from detect.datasets.coco import load_coco

    ds = load_coco(tmp_path / "chips" / "annotations.json", tmp_path / "chips" / "images")
    assert len(ds.samples) == len(windows) and not ds.report.counts()


def test_slice_keeps_a_share_of_empty_chips_and_skips_nodata(tmp_path, capsys):
    scene_dataset(tmp_path, nodata_right=True)
    args = ["slice", "--ann", str(tmp_path / "ann.json"), "--images", str(tmp_path / "scenes"), "--size", "96",
            "--overlap", "0", "--keep-empty", "1"]
    assert main([*args, "--out", str(tmp_path / "all")]) == 0
    table = capsys.readouterr().out
    out = json.loads((tmp_path / "all" / "annotations.json").read_text())
    # x chips start at 0, 96, 192, 264; the last (264..360) lies in the nodata part (x >= 250)
    assert len(out["images"]) == 12 and "nodata, skipped" in table
    assert all(im["window"][0] < 250 for im in out["images"])
    assert main([*args[:-1], "0", "--out", str(tmp_path / "none")]) == 0
    none = json.loads((tmp_path / "none" / "annotations.json").read_text())
    with_objects = {a["image_id"] for a in none["annotations"] if not a["iscrowd"]}
    assert {im["id"] for im in none["images"]} == with_objects  # no empty chip kept
    assert main([*args, "--out", str(tmp_path / "all")]) == 2  # not empty: refused
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "x"), "--min-visible", "0"]) == 2


def test_doctor_reports_like_training_and_draws(tmp_path, capsys):
    from detect.datasets.coco import load_coco, summary

    scene_dataset(tmp_path)
    png = tmp_path / "plots" / "dataset.png"
    assert main(["doctor", "--ann", str(tmp_path / "ann.json"), "--images", str(tmp_path / "scenes"),
                 "--plots", str(tmp_path / "plots")]) == 0
    text = capsys.readouterr().out
    assert summary(load_coco(tmp_path / "ann.json", tmp_path / "scenes")) in text  # training's own table
    assert "boxes per image: min 8, median 8, 95th percentile 8, max 8" in text
    assert "anchor coverage (best anchor IoU >= 0.5)" in text
    assert png.stat().st_size > 10_000
    from PIL import Image

    assert Image.open(png).size[0] > 500

    bad = json.loads((tmp_path / "ann.json").read_text())
    bad["images"].append(dict(bad["images"][0]))  # a duplicate image id: training refuses
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["doctor", "--ann", str(tmp_path / "bad.json"), "--images", str(tmp_path / "scenes")]) == 2
    assert "training would refuse this dataset" in capsys.readouterr().out
    # the old spelling (ANN positional, --png FILE) still works, with a one-line note
    assert main(["doctor", str(tmp_path / "ann.json"), "--images", str(tmp_path / "scenes"),
                 "--png", str(tmp_path / "old.png")]) == 0
    out = capsys.readouterr()
    assert "'detect doctor ANN' is now 'detect doctor --ann ANN'" in out.err and (tmp_path / "old.png").is_file()


def test_doctor_against_a_model_anchors(tmp_path, capsys):
    from detect.models import build_retinanet
    from tests.models.conftest import tiny_config

    scene_dataset(tmp_path)
    path = tmp_path / "m.keras"
    build_retinanet(tiny_config()).save(path)
    assert main(["doctor", "--ann", str(tmp_path / "ann.json"), "--images", str(tmp_path / "scenes"),
                 "--model", str(path)]) == 0
    assert f"anchors of {path}:" in capsys.readouterr().out
