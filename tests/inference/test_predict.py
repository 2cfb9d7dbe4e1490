import csv
import json

import cv2
import numpy as np
import pytest

from detect.cli.main import main
from detect.inference.predictor import TileOptions, detect_image
from tests.models.conftest import square_scenes, tiny_config

#: model_file's own score threshold. Its random weights score below predict's default for an
#: uncalibrated model (0.3), so tests that need its detections pass this explicitly.
EVERY = 0.005


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from detect.models import build_retinanet

    path = tmp_path_factory.mktemp("m") / "m.keras"
    build_retinanet(tiny_config(postprocess={"score_threshold": EVERY, "iou_threshold": 0.5,
                                             "max_detections": 30, "pre_nms_top_k": 300})).save(path)
    return path


def test_tiled_equals_untiled_when_scene_fits_one_tile(model_file):
    from detect.models import load_model

    model = load_model(model_file)
    images, _ = square_scenes(1, size=96, seed=1)
    img = images[0].astype(np.uint8)
    got = detect_image(model, img, TileOptions(tile=128))
    want = model.predict(img[None].astype(np.float32), verbose=0)
    n = int(want["num_detections"][0])
    assert got["tiles"] == 1 and n > 0
    # merging may only drop same-class duplicates NMS already removed: identical here
    np.testing.assert_allclose(got["boxes"], want["boxes"][0, :n], atol=1e-4)
    np.testing.assert_allclose(got["scores"], want["scores"][0, :n], atol=1e-6)


def test_folder_run_interrupted_and_rerun_lists_each_image_once(model_file, tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    images, _ = square_scenes(3, size=96, seed=2)
    for i, img in enumerate(images):
        cv2.imwrite(str(src / f"s{i}.png"), img.astype(np.uint8))
    (src / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"

    import detect.inference.run as run

    real = run.detect_source
    calls = {"n": 0}

    def dies_on_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        return real(*a, **k)

    monkeypatch.setattr(run, "detect_source", dies_on_third)
    every = ["--score-threshold", str(EVERY)]
    assert main(["predict", "--model", str(model_file), "--out", str(out), *every, str(src)]) == 130  # Ctrl-C
    monkeypatch.setattr(run, "detect_source", real)
    # sorted inputs: broken.png (fails to decode, before detection), s0, s1 done, killed on s2
    assert sorted(p.name for p in (out / "detections").glob("*.json")) == ["s0.json", "s1.json"]
    assert main(["predict", "--model", str(model_file), "--out", str(out), *every, "--save-images", str(src)]) == 1
    rows = list(csv.DictReader((out / "detections.csv").open()))
    assert {r["file"].split("/")[-1] for r in rows} == {"s0.png", "s1.png", "s2.png"}
    images_json = json.loads((out / "images.json").read_text())
    names = [im["file_name"].split("/")[-1] for im in images_json["images"]]
    assert sorted(names) == ["s0.png", "s1.png", "s2.png"]  # each exactly once
    assert [p.name for p in (out / "images").glob("*.jpg")] == ["s2.jpg"]  # only s2 ran again
    assert not list(out.rglob("*.tmp"))


def test_bad_arguments(model_file, tmp_path):
    assert main(["predict", "--model", str(model_file), "--out", str(tmp_path), str(tmp_path / "nope")]) == 2
    assert main(["predict", "--model", str(model_file), "--out", str(tmp_path), "--overlap", "1.5",
                 str(tmp_path)]) == 2
    assert main(["predict", "--model", str(model_file), "--out", str(tmp_path), "--tile", "0",
                 str(tmp_path)]) == 2


def test_rerun_with_another_model_or_settings_is_refused(model_file, tmp_path, capsys):
    from detect.inference.outputs import model_digest
    from detect.models import load_model

    src = tmp_path / "src"
    src.mkdir()
    images, _ = square_scenes(1, size=96, seed=3)
    cv2.imwrite(str(src / "a.png"), images[0].astype(np.uint8))
    out = tmp_path / "out"
    base = ["predict", "--model", str(model_file), "--out", str(out), str(src)]
    assert main(base) == 0
    assert main(base) == 0 and "0 image(s) processed, 1 already done" in capsys.readouterr().out
    assert main([*base, "--score-threshold", "0.2"]) == 2  # the change is named, not "another model"
    err = capsys.readouterr().err
    assert "holds results made with other settings (score_threshold 0.005 there, 0.2 now, " in err
    assert "another model" not in err
    assert main([*base, "--tile", "64"]) == 2
    assert "tile 512 there, 64 now" in capsys.readouterr().err  # tiny_config's tile is the default 512
    assert main([*base, "--tile", "64", "--overwrite"]) == 0
    assert json.loads((out / "predict.json").read_text())["tile"] == 64
    # a folder from a detect without box voting is reused (it had it off), a change is named
    stamp = json.loads((out / "predict.json").read_text())
    del stamp["postprocess"]["vote_iou"]
    (out / "predict.json").write_text(json.dumps(stamp))
    capsys.readouterr()
    assert main([*base, "--tile", "64"]) == 0 and "1 already done" in capsys.readouterr().out
    assert main([*base, "--tile", "64", "--vote-iou", "0.6"]) == 2
    assert "(vote_iou 0.0 there, 0.6 now;" in capsys.readouterr().err
    # the digest follows the weights, not the file
    model = load_model(model_file)
    before = model_digest(model)
    model.network.get_layer("cls_predict").bias.assign(model.network.get_layer("cls_predict").bias + 1)
    assert model_digest(model) != before and model_digest(load_model(model_file)) == before
    # ... and not the post-processing, fingerprinted on its own
    again = load_model(model_file)
    again.set_postprocess(score_threshold=0.3)
    assert model_digest(again) == before


def test_inputs_literal_names_globs_and_looping_links(tmp_path, capsys):
    """A name that exists is that file, brackets and all; a glob matching nothing is an error;
    a looping link in a folder is skipped with a counted warning, the good image kept."""
    from detect.imagery.inputs import expand_sources

    odd = tmp_path / "image #2 [draft] é.png"
    plain = tmp_path / "a.png"
    for f in (odd, plain):
        cv2.imwrite(str(f), np.zeros((8, 8, 3), np.uint8))
    assert expand_sources([str(odd), str(plain)]) == [odd, plain]
    assert expand_sources([str(tmp_path / "*.png")]) == sorted([odd, plain])
    with pytest.raises(FileNotFoundError, match=r"as a glob pattern it matches no image or video"):
        expand_sources([str(tmp_path / "image [final].png")])
    folder = tmp_path / "scenes"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.jpg"), np.zeros((8, 8, 3), np.uint8))
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    (folder / "gone.jpg").symlink_to(folder / "nowhere.jpg")
    capsys.readouterr()
    assert expand_sources([str(folder), str(folder / "good.jpg")]) == [folder / "good.jpg"]
    err = capsys.readouterr().err
    assert "skipped 2 entries of" in err and "gone.jpg, loop.jpg" in err


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_one_line(model_file, tmp_path, capsys):
    import os

    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    out = tmp_path / "ro"
    out.mkdir()
    os.chmod(out, 0o555)
    try:
        assert main(["predict", "--model", str(model_file), "--out", str(out), str(img)]) == 2
    finally:
        os.chmod(out, 0o755)
    err = capsys.readouterr().err
    assert "no permission to write" in err and "Traceback" not in err


def test_permission_errors_are_one_line(capsys, monkeypatch):
    """Root ignores read-only folders (CI runs as root): the handler itself, with a raised error."""
    from detect.cli import main as cli

    def refuse(args):
        raise PermissionError(13, "Permission denied", "/data/out/predict.tmp1-abcd1234.json")

    args = cli.build_parser().parse_args(["view", "x"])
    args.handler = refuse
    monkeypatch.setattr(cli, "_check_inputs", lambda a: None)
    assert cli._handle(args) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("detect view: error: no permission to write /data/out/predict.tmp1-abcd1234.json: "
                           "choose a folder you can write to (--out) or change its permissions")


def test_names_that_differ_only_in_extension_get_separate_outputs():
    from pathlib import Path

    from detect.inference.outputs import output_stem

    files = [Path("d/site.jpg"), Path("d/site.png"), Path("e/site.jpg"), Path("d/other.png")]
    names = [output_stem(f, files) for f in files]
    assert names == ["d__site_jpg", "d__site_png", "e__site", "other"]
    assert len(set(names)) == len(names)


def test_a_bomb_beside_a_good_image_fails_alone(model_file, tmp_path, capsys):
    from tests.datasets.test_coco_and_images import _bomb_png

    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), np.full((64, 64, 3), 90, np.uint8))
    _bomb_png(folder / "bomb.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(model_file), "--out", str(out), str(folder)]) == 1
    err = capsys.readouterr().err
    assert "claims 3,600,000,000 pixels" in err and "skipped 1 entry" in err and "Traceback" not in err
    assert [p.name for p in (out / "detections").glob("*.json")] == ["good.json"]


def test_a_truncated_jpeg_is_a_counted_failure_recorded_in_the_output_folder(model_file, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    images, _ = square_scenes(2, size=96, seed=4)
    for i, img in enumerate(images):
        cv2.imwrite(str(src / f"s{i}.jpg"), img.astype(np.uint8))
    whole = (src / "s1.jpg").read_bytes()
    (src / "s1.jpg").write_bytes(whole[: len(whole) // 2])  # cut short: OpenCV would grey-fill it
    out = tmp_path / "out"
    assert main(["predict", str(src), "--model", str(model_file), "--out", str(out)]) == 1
    err = capsys.readouterr()
    assert "s1.jpg" in err.err and "truncated or corrupt" in err.err
    assert "1 image(s) processed, 0 already done, 1 failed" in err.out
    failed = json.loads((out / "failed.json").read_text())
    assert [f["file"] for f in failed] == [str(src / "s1.jpg")] and "truncated" in failed[0]["error"]
    assert not (out / "detections" / "s1.json").exists()
    # the file mended, a rerun does the missing input only and clears the record of failures
    (src / "s1.jpg").write_bytes(whole)
    assert main(["predict", str(src), "--model", str(model_file), "--out", str(out)]) == 0
    assert "1 image(s) processed, 1 already done, 0 failed" in capsys.readouterr().out
    assert not (out / "failed.json").exists()


def test_a_second_predict_into_a_folder_in_use_is_refused_naming_the_first(model_file, tmp_path, capsys):
    import os
    import socket
    import subprocess
    import sys

    from detect.inference.outputs import LOCK

    src = tmp_path / "in"
    src.mkdir()
    images, _ = square_scenes(1, size=96, seed=6)
    cv2.imwrite(str(src / "s0.png"), images[0].astype(np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    # a live process (this test's child) holds the folder
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                            "started": "2026-12-05 10:00:00"}))
        assert main(["predict", str(src), "--model", str(model_file), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"being written by another detect predict (pid {holder.pid}" in err and "Traceback" not in err
        assert not (out / "detections").exists()  # nothing written
    finally:
        holder.kill()
        holder.wait()
    # that process is gone: its lock is taken over with a note, and released at the end
    assert main(["predict", str(src), "--model", str(model_file), "--out", str(out)]) == 0
    assert "left its lock" in capsys.readouterr().err
    assert (out / "detections" / "s0.json").is_file() and not (out / LOCK).exists()
    assert os.listdir(out)  # the run's outputs
