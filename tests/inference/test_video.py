import json

import cv2
import numpy as np

from detect.cli.main import main
from tests.inference.test_predict import model_file  # noqa: F401  (fixture)
from tests.models.conftest import square_scenes


def write_video(path, frames):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_in_annotated_video_out(tmp_path, model_file):  # noqa: F811
    images, _ = square_scenes(9, size=96, seed=8)
    write_video(tmp_path / "clip.mp4", [im.astype(np.uint8) for im in images])
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 1000)
    out = tmp_path / "out"
    code = main(["predict", "--model", str(model_file), "--out", str(out), "--stride", "3",
                 "--save-images", str(tmp_path / "clip.mp4"), str(tmp_path / "bad.mp4")])
    assert code == 1  # the corrupt file is reported, the clip still processed
    rec = json.loads((out / "detections" / "clip.json").read_text())
    assert [f["frame"] for f in rec["frames"]] == [0, 3, 6] and (rec["width"], rec["height"]) == (96, 96)
    cap = cv2.VideoCapture(str(out / "images" / "clip.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 3
    names = {im["file_name"].rsplit("#", 1)[-1] for im in json.loads((out / "images.json").read_text())["images"]}
    assert names == {"frame=0", "frame=3", "frame=6"}
    assert not (out / "detections" / "bad.json").exists()
