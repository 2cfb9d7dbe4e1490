"""The Python API (detect.predict / evaluate / train / export / load_model) and its result objects."""

import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

import detect
from detect.cli.main import main
from detect.inference.predictor import TileOptions, detect_image
from detect.structures import Detections
from tests.inference.test_predict import EVERY, model_file  # noqa: F401  (fixture)
from tests.models.conftest import square_scenes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import make_synthetic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(backbone="resnet18", backbone_width=8, fpn_channels=16, head_convs=1, image_size=64,
            max_boxes=10, batch_size=2, epochs=1, warmup_steps=2, optimizer="sgd", learning_rate=0.005)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three 96 px scenes as PNG files."""
    src = tmp_path_factory.mktemp("in")
    images, _ = square_scenes(3, size=96, seed=5)
    for i, img in enumerate(images):
        cv2.imwrite(str(src / f"s{i}.png"), img.astype(np.uint8)[..., ::-1])
    return src


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch run trained through detect.train (checkpoint + final model)."""
    root = tmp_path_factory.mktemp("train")
    ann = make_synthetic.make_dataset(root, images=4, size=64, seed=3)
    return detect.train(ann, root / "images", root / "run", **TINY, verbose=0), ann, root / "images"


# ---- loading ----------------------------------------------------------------------


def test_keras_load_model_works_after_import_detect_alone(run):
    r, _, _ = run
    checkpoint = next((r.path / "checkpoints").glob("epoch-*/checkpoint.keras"))
    code = ("import sys, keras, detect\n"
            "for p in sys.argv[1:]:\n"
            "    m = keras.models.load_model(p)\n"
            "    print(type(m).__name__, getattr(m, 'optimizer', None) is not None)\n")
    out = subprocess.run([sys.executable, "-c", code, str(r.path / "model.keras"), str(checkpoint)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # the final model is the inference artefact (no optimizer); the checkpoint keeps it for --resume
    assert out.stdout.split("\n")[:2] == ["RetinaNet False", "RetinaNet True"]


def test_final_model_file_carries_no_optimizer_state(run):
    r, _, _ = run
    with zipfile.ZipFile(r.path / "model.keras") as z:
        config = json.loads(z.read("config.json"))
    assert not config.get("compile_config")
    with zipfile.ZipFile(next((r.path / "checkpoints").glob("epoch-*/checkpoint.keras"))) as z:
        assert json.loads(z.read("config.json")).get("compile_config")


def test_run_object(run):
    r, _, _ = run
    assert isinstance(r.model, detect.load_model(r.path).__class__)
    assert [m["epoch"] for m in r.metrics] == [1] and r.metrics[0]["loss"] > 0
    assert detect.load_model(r.path).class_names == r.model.class_names


def test_config_overrides_by_name_and_path():
    from detect.api import config_overrides

    assert config_overrides({"epochs": 3, "train__learning_rate": 0.01, "aspect_ratios": (1.0,)}) == {
        "train.epochs": 3, "train.learning_rate": 0.01, "model.anchors.aspect_ratios": [1.0]}
    with pytest.raises(TypeError, match=r"unknown option 'epoch'.*did you mean.*epochs"):
        config_overrides({"epoch": 3})
    with pytest.raises(TypeError, match="unknown option 'train__nope'"):
        config_overrides({"train__nope": 3})


# ---- predict ----------------------------------------------------------------------


def test_predict_array_equals_the_inference_path(model_file):  # noqa: F811
    model = detect.load_model(model_file)
    images, _ = square_scenes(2, size=96, seed=1)
    batch = images.astype(np.uint8)
    results = detect.predict(model, batch, score_threshold=EVERY)
    assert len(results) == 2 and [d.source for d in results] == ["array[0]", "array[1]"]
    for d, img in zip(results, batch):
        want = detect_image(model, img, TileOptions())
        # two images share a batch here, one per call there: float round-off only
        np.testing.assert_allclose(d.boxes, np.asarray(want["boxes"]), atol=1e-4)
        np.testing.assert_allclose(d.scores, np.asarray(want["scores"]), atol=1e-6)
        assert (d.width, d.height) == (96, 96) and len(d) == len(want["scores"]) > 0
    single = detect.predict(model, batch[0], score_threshold=EVERY)
    np.testing.assert_allclose(single[0].boxes, results[0].boxes, atol=1e-4)


def test_detections_indexing_filter_and_conversions():
    d = Detections(source="a.png", boxes=np.array([[0, 0, 10, 20], [5, 5, 7, 9], [1, 2, 3, 4]], np.float32),
                   scores=np.array([0.9, 0.5, 0.2], np.float32), labels=np.array([1, 0, 1], np.int32),
                   names=("car", "tree"), width=50, height=40)
    assert len(d) == 3 and d.class_names == ["tree", "car", "tree"]
    assert len(d[d.scores > 0.3]) == 2 and d[1:].class_names == ["car", "tree"] and len(d[0]) == 1
    assert d.filter(score=0.3, classes=["tree"]).scores.tolist() == pytest.approx([0.9])
    assert len(d.filter(classes=[0])) == 1
    with pytest.raises(ValueError, match="unknown class 'bus'"):
        d.filter(classes=["bus"])
    assert d.to_coco(7, category_ids=[11, 12])[0] == {"image_id": 7, "category_id": 12,
                                                       "bbox": [0.0, 0.0, 10.0, 20.0],
                                                       "score": pytest.approx(0.9)}
    assert d.to_dicts()[1] == {"box": [5.0, 5.0, 7.0, 9.0], "label": "car", "label_id": 0,
                               "score": pytest.approx(0.5)}
    image = np.zeros((40, 50, 3), np.uint8)
    drawn = d.plot(image)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8 and drawn.any()
    # same pixels as the CLI's drawing (BGR there), in RGB order here
    from detect.imagery.drawing import draw

    np.testing.assert_array_equal(drawn, draw(image, {"boxes": d.boxes, "scores": d.scores,
                                                      "labels": d.labels}, d.names)[..., ::-1])
    with pytest.raises(ValueError, match="not georeferenced"):
        d.to_geodataframe()


def test_predict_with_out_writes_what_the_cli_writes(model_file, folder, tmp_path):  # noqa: F811
    assert main(["predict", "--model", str(model_file), "--out", str(tmp_path / "cli"), "--score-threshold",
                 str(EVERY), str(folder)]) == 0
    results = detect.predict(str(model_file), folder, out=tmp_path / "api", score_threshold=EVERY)
    for name in ("detections.csv", "coco_results.json", "images.json"):
        assert (tmp_path / "cli" / name).read_text() == (tmp_path / "api" / name).read_text(), name
    assert sorted(p.name for p in (tmp_path / "api" / "detections").iterdir()) == ["s0.json", "s1.json",
                                                                                   "s2.json"]
    # the Results hold what the per-image files hold (those round to 2 decimals)
    for d in results:
        rec = json.loads((tmp_path / "api" / "detections" / f"{Path(d.source).stem}.json").read_text())
        assert len(rec["detections"]) == len(d)
        np.testing.assert_allclose([r["box"] for r in rec["detections"]], d.boxes.reshape(-1, 4), atol=0.006)
    # a rerun skips every image and reads its detections back
    again = detect.predict(str(model_file), folder, out=tmp_path / "api", score_threshold=EVERY)
    assert again.summary["skipped_done"] == 3 and [len(d) for d in again] == [len(d) for d in results]


def test_predict_leaves_the_models_post_processing_alone(model_file, folder):  # noqa: F811
    model = detect.load_model(model_file)
    before = model.model_config
    few = detect.predict(model, folder, max_detections=2, score_threshold=0.001)
    assert all(len(d) <= 2 for d in few) and model.model_config == before
    many = detect.predict(model, folder, score_threshold=EVERY)
    assert sum(len(d) for d in many) > sum(len(d) for d in few) and model.model_config == before


def test_predict_a_geotiff_keeps_its_georeferencing(model_file, tmp_path):  # noqa: F811
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    images, _ = square_scenes(1, size=96, seed=4)
    path = tmp_path / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=96, height=96, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 0.5, 0.5)) as dst:
        dst.write(images[0].astype(np.uint8).transpose(2, 0, 1))
    (d,) = detect.predict(model_file, path, score_threshold=0.001)
    assert d.crs.to_epsg() == 32633 and len(d) > 0
    gdf = d.to_geodataframe()
    x0, y0, x1, y1 = d.boxes[0]
    assert gdf.crs.to_epsg() == 32633 and len(gdf) == len(d)
    assert gdf.geometry.iloc[0].bounds == pytest.approx((500000 + 0.5 * x0, 4000000 - 0.5 * y1,
                                                         500000 + 0.5 * x1, 4000000 - 0.5 * y0))


def test_bad_sources_and_options_name_the_value(model_file, folder, tmp_path):  # noqa: F811
    model = detect.load_model(model_file)
    with pytest.raises(ValueError, match=r"shape \(96, 96\)"):
        detect.predict(model, np.zeros((96, 96), np.uint8))
    with pytest.raises(FileNotFoundError, match="nope.png"):
        detect.predict(model, tmp_path / "nope.png")
    with pytest.raises(ValueError, match="neither an image array nor a path"):
        detect.predict(model, [3])
    with pytest.raises(ValueError, match="mixes arrays and paths"):
        detect.predict(model, [np.zeros((8, 8, 3), np.uint8), str(folder)])
    (tmp_path / "clip.mp4").write_bytes(b"\0")
    with pytest.raises(ValueError, match="names images and videos"):
        detect.predict(model, [folder / "s0.png", tmp_path / "clip.mp4"])
    with pytest.raises(TypeError, match="score_treshold"):
        detect.predict(model, folder, score_treshold=0.5)
    with pytest.raises(ValueError, match="tile must be at least 32"):
        detect.predict(model, folder, tile=8)
    with pytest.raises(ValueError, match="out, ann, bands and save_images apply to files"):
        detect.predict(model, np.zeros((64, 64, 3), np.uint8), out=tmp_path / "o")
    with pytest.raises(ValueError, match="expected an RGB image"):
        detect.predict(model, np.zeros((64, 64, 4), np.uint8))


def test_float_images_in_0_1_warn_once(model_file):  # noqa: F811
    model = detect.load_model(model_file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detect.predict(model, np.full((2, 64, 64, 3), 0.5, np.float32))
    scaled = [w for w in caught if "0..1" in str(w.message)]
    assert len(scaled) == 1 and "image * 255" in str(scaled[0].message)


# ---- evaluate ------------------------------------------------------------------------


def test_evaluate_model_results_and_cli_agree(run, tmp_path):
    r, ann, images = run
    report = detect.evaluate(r.model, ann, images, max_dets="1,10,100", score_threshold=0.001)
    assert len(report.stats) == 12 and report.stat_names[:2] == ["AP", "AP50"]
    assert {c["name"] for c in report.per_class} == set(r.model.class_names)
    assert "overall" in report.operating_point and str(report).startswith(" Average Precision")
    # predict -> Results -> evaluate gives the same numbers (same detections, ids by file name;
    # the folder's images share batches in another order: float round-off only, which can swap
    # two near-equal scores of a barely trained model and move an AP by a few 1e-4)
    results = detect.predict(r.model, images, score_threshold=0.001)
    assert detect.evaluate(results, ann).stats == pytest.approx(report.stats, abs=1e-3)
    assert main(["evaluate", "--ann", str(ann), "--images", str(images), "--model", str(r.path / "model.keras"),
                 "--score-threshold", "0.001", "--save-predictions", str(tmp_path / "d.json"),
                 "--report", str(tmp_path / "rep.json")]) == 0
    assert json.loads((tmp_path / "rep.json").read_text())["stats"] == pytest.approx(report.stats, abs=1e-9)
    assert detect.evaluate(tmp_path / "d.json", ann).stats == pytest.approx(report.stats, abs=1e-9)
    files = report.plot(tmp_path / "plots")
    assert files and all(f.suffix == ".png" and f.stat().st_size > 0 for f in files)


def test_evaluate_bad_input(run):
    r, ann, _ = run
    with pytest.raises(ValueError, match="needs images"):
        detect.evaluate(r.model, ann)
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        detect.evaluate("nothing.json", ann)


def test_export(run, tmp_path):
    """The API's export serves the trained model's own detections, with its class names beside them."""
    import tensorflow as tf

    r, _, _ = run
    out = detect.export(r.path / "model.keras", tmp_path / "sm")
    model = detect.load_model(r.path)
    x = np.random.default_rng(5).integers(0, 256, (2, 96, 80, 3)).astype(np.uint8)
    model.set_postprocess(score_threshold=0.001)  # candidates enough to compare, whatever was learned
    detect.export(model, tmp_path / "sm_low")
    want = model.predict(x.astype(np.float32), verbose=0)
    got = tf.saved_model.load(str(tmp_path / "sm_low")).signatures["serving_default"](images=tf.constant(x))
    assert want["num_detections"].min() > 0
    for k in want:
        np.testing.assert_allclose(got[k].numpy(), want[k], atol=1e-4)
    asset = json.loads((out / "assets" / "detect.json").read_text())
    assert asset["class_names"] == list(r.model.class_names)
    assert asset["config"] == r.model.model_config.to_dict()
    with pytest.raises(FileExistsError):
        detect.export(r.path / "model.keras", tmp_path / "sm")


def test_predict_a_video_gives_one_item_per_frame(model_file, tmp_path):  # noqa: F811
    from tests.inference.test_video import write_video

    images, _ = square_scenes(5, size=96, seed=8)
    frames = [im.astype(np.uint8) for im in images]
    write_video(tmp_path / "clip.mp4", frames)
    model = detect.load_model(model_file)
    results = detect.predict(model, tmp_path / "clip.mp4", stride=2, score_threshold=0.001)
    assert [d.frame for d in results] == [0, 2, 4]
    assert [d.source for d in results] == [f"{tmp_path / 'clip.mp4'}#frame={i}" for i in (0, 2, 4)]
    # each frame ran through the same path as an image array of the decoded frame
    cap = cv2.VideoCapture(str(tmp_path / "clip.mp4"))
    decoded = [cap.read()[1][..., ::-1].copy() for _ in range(5)]
    model.set_postprocess(score_threshold=0.001)
    want = detect_image(model, decoded[2], TileOptions())
    np.testing.assert_allclose(results[1].boxes, np.asarray(want["boxes"]), atol=1e-4)
    assert results[1].plot().shape == (96, 96, 3)  # the frame is read back from the video


def test_train_init_from_a_run_takes_its_architecture_and_weights(run, tmp_path, capsys):
    r, ann, images = run
    # no architecture given: the source's (resnet18, width 8) is used, not the default resnet50
    again = detect.train(ann, images, tmp_path / "r2", init_from=r.path, epochs=1, image_size=64,
                         max_boxes=10, batch_size=2, verbose=0)
    c = again.model.model_config
    assert (c.backbone, c.backbone_width, c.fpn_channels) == ("resnet18", 8, 16)
    assert c.anchors == r.model.model_config.anchors
    out = capsys.readouterr().out
    assert f"init from {r.path}: {len(r.model.weights)} weights loaded" in out
    assert "kept " + ", ".join(r.model.class_names) in out


def test_no_submodule_shadows_an_api_name():
    # importing detect/<name>.py sets detect.<name> to the module: an API function of that
    # name would turn into a module after the first such import (detect.export once did)
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(detect.__path__, "detect."):
        if info.name != "detect.__main__":
            importlib.import_module(info.name)
    for name in detect.__all__:
        assert callable(getattr(detect, name)) and not isinstance(getattr(detect, name), type(detect)), name


def test_uncalibrated_predict_keeps_scores_from_the_default_and_evaluate_every_one(model_file, tmp_path,  # noqa: F811
                                                                                   capsys):
    from detect.config.defaults import UNCALIBRATED_SCORE_THRESHOLD as floor

    root = tmp_path / "d"
    ann = make_synthetic.make_dataset(root, images=3, size=96, seed=8)
    images = root / "images"
    model = detect.load_model(model_file)
    assert not model.model_config.postprocess.class_thresholds and model.model_config.postprocess.score_threshold < floor
    capsys.readouterr()
    default = detect.predict(model, images)
    assert f"model not calibrated: detections scoring >= {floor:g} are kept" in capsys.readouterr().out
    low = model.model_config.postprocess.score_threshold
    every = detect.predict(model, images, score_threshold=low)
    assert "not calibrated" not in capsys.readouterr().out  # an explicit threshold is not a default
    assert sum(len(b) for b in every) > sum(len(a) for a in default)  # the default cut something
    for a, b in zip(default, every):  # exactly the detections at or above the default, same boxes
        keep = b.scores >= floor
        assert (a.scores >= floor).all() and len(a) == int(keep.sum())
        np.testing.assert_allclose(a.boxes, b.boxes[keep], atol=1e-4)
    assert model.model_config.postprocess.class_thresholds == ()  # the model itself is unchanged
    # evaluation scores every detection the model outputs: the same as with the low threshold
    assert detect.evaluate(model, ann, images).stats == pytest.approx(
        detect.evaluate(model, ann, images, score_threshold=low).stats, abs=1e-12)


def test_evaluate_calibrate_then_predict_writes_at_the_calibrated_thresholds(model_file, tmp_path,  # noqa: F811
                                                                             capsys):
    root = tmp_path / "d"
    ann = make_synthetic.make_dataset(root, images=3, size=96, seed=8)
    images = root / "images"
    rep = detect.evaluate(model_file, ann, images, calibrate=tmp_path / "cal.keras")
    path, _ = rep.written["calibrated"]
    cal = detect.load_model(path)
    pp = cal.model_config.postprocess
    thresholds = np.array(pp.class_thresholds)
    assert len(thresholds) == 3 and pp.calibration.startswith("annotations.json (3 images")
    assert (thresholds > pp.score_threshold).any()  # a real operating point, not the NMS floor
    # evaluation ignores the calibration: the same AP as the model it came from
    assert detect.evaluate(path, ann, images).stats == pytest.approx(rep.stats, abs=1e-12)
    capsys.readouterr()
    at_cal = detect.predict(path, images)
    assert "score thresholds calibrated per class on annotations.json" in capsys.readouterr().out
    every = detect.predict(path, images, score_threshold=pp.score_threshold)  # one threshold instead
    for a, b in zip(at_cal, every):
        assert (a.scores >= thresholds[a.labels]).all()
        keep = b.scores >= thresholds[b.labels]
        assert len(a) == int(keep.sum()) < len(b) or len(a) == len(b) == int(keep.sum())
        np.testing.assert_allclose(a.boxes, b.boxes[keep], atol=1e-4)
    assert sum(len(a) for a in at_cal) < sum(len(b) for b in every)
    with pytest.raises(FileExistsError, match="cal.keras exists"):
        detect.evaluate(model_file, ann, images, calibrate=path)
    with pytest.raises(ValueError, match="calibrate applies to a model only"):
        detect.evaluate(rep.detections, ann, calibrate=tmp_path / "x.keras")
