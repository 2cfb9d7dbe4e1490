"""``--engine ray``: a local 2-worker Ray Data run writes what one process writes; a dead address
fails in seconds without writing anything."""

import time

import numpy as np
import pytest

from detect.api import predict
from detect.cli.main import main
from detect.inference import jobs
from tests.inference.test_jobs import read_outputs, squares_scene, write_tif
from tests.inference.test_predict import EVERY, model_file  # noqa: F401  (fixture)


def test_unreachable_ray_address_fails_fast_and_writes_nothing(tmp_path, model_file, capsys):  # noqa: F811
    img = write_tif(tmp_path / "a.tif", squares_scene(100, 100))
    t0 = time.perf_counter()
    # port 9 (discard) on localhost: nothing listens, the connection is refused at once
    code = main(["predict", "--model", str(model_file), "--out", str(tmp_path / "out"), "--engine", "ray",
                 "--address", "127.0.0.1:9", str(img)])
    assert code == 2 and time.perf_counter() - t0 < 30
    err = capsys.readouterr().err
    assert "--address 127.0.0.1:9: no Ray head answers there" in err
    assert not (tmp_path / "out").exists()
    assert main(["predict", "--model", str(model_file), "--out", str(tmp_path / "out"), "--engine", "ray",
                 "--address", "nonsense", str(img)]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_two_workers_write_the_single_process_outputs(tmp_path, model_file, monkeypatch):  # noqa: F811
    pytest.importorskip("ray")
    monkeypatch.setattr(jobs, "UNIT_TILES", 4)
    path = write_tif(tmp_path / "scene.tif", squares_scene())
    kw = dict(tile=96, overlap=0.25, batch_size=2, score_threshold=EVERY)
    tiles = predict(model_file, path, out=tmp_path / "plain", **kw).summary["tiles"]
    res = predict(model_file, path, out=tmp_path / "ray", engine="ray", workers=2, **kw)
    assert res.summary["merged"] and res.summary["tiles"] == tiles
    want, got = read_outputs(tmp_path / "plain"), read_outputs(tmp_path / "ray")
    assert len(list((tmp_path / "ray" / "units").rglob("*.npz"))) == -(-tiles // 4)
    a, b = want[0]["scene.json"]["detections"], got[0]["scene.json"]["detections"]
    assert len(a) == len(b) > 20
    # workers run TensorFlow with one thread each: equal up to float rounding of the last digit,
    # which may swap two detections of near-equal score, so each is matched by label and box
    boxes_b = np.array([d["box"] for d in b], np.float64)
    taken = set()
    for d in a:
        gap = np.abs(boxes_b - np.array(d["box"])).max(axis=1)
        gap[[j for j, e in enumerate(b) if e["label"] != d["label"] or j in taken]] = np.inf
        j = int(gap.argmin())
        assert gap[j] <= 0.02 and abs(b[j]["score"] - d["score"]) <= 2e-5, (d, b[j])
        taken.add(j)
    assert len(taken) == len(b)
