import contextlib
import io
import json
import sys
from pathlib import Path

import pytest

from detect.cli.main import main
from tests.evaluation.conftest import make_case
from tests.evaluation.test_coco_eval import reference

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import make_synthetic  # noqa: E402


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_evaluate_predictions_file(tmp_path):
    gt, res = make_case(3)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(res))
    code, out, _ = run(["evaluate", "--ann", str(tmp_path / "gt.json"), "--predictions",
                        str(tmp_path / "dt.json"), "--area-ranges", "tiny:0:16,rest:16:inf",
                        "--report", str(tmp_path / "r.json"), "--plots", str(tmp_path / "plots")])
    assert code == 0
    _, printed = reference(gt, res)
    want = [ln for ln in printed.splitlines() if ln.startswith(" Average")]
    assert out.splitlines()[:12] == want
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["stats"]) == 12 and report["stat_names"][1] == "AP50"
    assert [r["name"] for r in report["area_ranges"]] == ["tiny", "rest"]
    assert report["area_ranges"][1]["max_side"] == "inf"
    assert {"overall", "per_class"} <= set(report["operating_point"])
    assert [r["category_id"] for r in report["per_class"]] == [1, 3, 7]  # ints, not strings
    # all classes, one per class, F1 against the threshold, the confusion matrix
    assert len(list((tmp_path / "plots").glob("*.png"))) == 3 + len(gt["categories"])
    assert (tmp_path / "plots" / "confusion_matrix.csv").is_file()


def test_evaluate_reports_bad_input_without_traceback(tmp_path):
    gt, res = make_case(0)
    res[0]["image_id"] = 12345
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(res))
    code, _, err = run(["evaluate", "--ann", str(tmp_path / "gt.json"), "--predictions", str(tmp_path / "dt.json")])
    assert code == 2 and "12345" in err and "Traceback" not in err
    code, _, err = run(["evaluate", "--ann", str(tmp_path / "gt.json"), "--model", "m.keras"])
    assert code == 2 and "model file 'm.keras' does not exist" in err  # before TensorFlow loads
    import zipfile

    with zipfile.ZipFile(tmp_path / "m.keras", "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("metadata.json", "{}")
    code, _, err = run(["evaluate", "--ann", str(tmp_path / "gt.json"), "--model", str(tmp_path / "m.keras")])
    assert code == 2 and "--images" in err


@pytest.mark.slow
def test_evaluate_with_model(tmp_path):
    from detect.models import build_retinanet
    from tests.models.conftest import tiny_config

    ann = make_synthetic.make_dataset(tmp_path / "data", images=5, size=96, seed=1)
    build_retinanet(tiny_config(postprocess={"score_threshold": 0.001, "iou_threshold": 0.5,
                                             "max_detections": 20, "pre_nms_top_k": 200})
                    ).save(tmp_path / "m.keras")
    code, out, _ = run(["evaluate", "--ann", str(ann), "--model", str(tmp_path / "m.keras"),
                        "--images", str(tmp_path / "data" / "images"), "--batch-size", "2",
                        "--save-predictions", str(tmp_path / "dt.json")])
    assert code == 0 and "Average Precision" in out
    dets = json.loads((tmp_path / "dt.json").read_text())
    assert len(dets) == 5 * 20  # every image, max_detections each at this threshold
    assert {d["category_id"] for d in dets} <= {1, 2, 3}  # mapped by class name


def test_ground_truth_problems_are_refused_or_warned(tmp_path):
    gt, res = make_case(3)
    (tmp_path / "dt.json").write_text(json.dumps(res))
    crowd = json.loads(json.dumps(gt))
    crowd["annotations"][0]["iscrowd"] = "0"
    (tmp_path / "crowd.json").write_text(json.dumps(crowd))
    code, _, err = run(["evaluate", "--ann", str(tmp_path / "crowd.json"), "--predictions", str(tmp_path / "dt.json")])
    assert code == 2 and "iscrowd '0' (str)" in err and "crowd.json" in err and "Traceback" not in err
    dup = json.loads(json.dumps(gt))
    dup["annotations"][1]["id"] = dup["annotations"][0]["id"]
    (tmp_path / "dup.json").write_text(json.dumps(dup))
    code, out, err = run(["evaluate", "--ann", str(tmp_path / "dup.json"), "--predictions", str(tmp_path / "dt.json")])
    assert code == 0 and "warning:" in err and "2 annotations share 1 id(s)" in err
    empty = {**gt, "annotations": []}
    (tmp_path / "empty.json").write_text(json.dumps(empty))
    code, out, err = run(["evaluate", "--ann", str(tmp_path / "empty.json"), "--predictions", str(tmp_path / "dt.json")])
    assert code == 0 and "holds no annotations" in err


def test_save_predictions_is_opt_in_and_never_overwrites(tmp_path, monkeypatch):
    gt, res = make_case(2)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(res))
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["evaluate", "--ann", "gt.json", "--predictions", "dt.json", "--save-predictions", "x.json"])
    assert code == 2 and "applies with --model only" in err
    (tmp_path / "detections.json").write_text("mine")
    import detect.cli.main

    monkeypatch.setattr(detect.cli.main, "_check_inputs", lambda args: None)  # no model needed to refuse
    code, _, err = run(["evaluate", "--ann", "gt.json", "--model", "m.keras", "--images", ".",
                        "--save-predictions", "detections.json"])
    assert code == 2 and "detections.json exists: pass --overwrite" in err
    assert (tmp_path / "detections.json").read_text() == "mine"
