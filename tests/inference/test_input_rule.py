"""One input rule and one inference path: predict, evaluate --model and validation agree."""

import json

import cv2
import numpy as np
import pytest

from detect.cli.main import main
from detect.inference.coco_dataset import predict_coco
from detect.inference.predictor import CapCount, TileOptions, detect_image
from detect.models import build_retinanet, load_model
from tests.models.conftest import tiny_config


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 300 x 260 image (larger than a 128 px tile) + ground truth, and a saved model."""
    root = tmp_path_factory.mktemp("rule")
    rng = np.random.default_rng(5)
    img = rng.integers(0, 255, (260, 300, 3)).astype(np.uint8)
    (root / "images").mkdir()
    cv2.imwrite(str(root / "images" / "a.png"), img[..., ::-1])
    gt = {"images": [{"id": 42, "file_name": "a.png", "width": 300, "height": 260}],
          "annotations": [{"id": 1, "image_id": 42, "category_id": 9, "bbox": [10, 10, 30, 30],
                           "area": 900, "iscrowd": 0}],
          "categories": [{"id": 5, "name": "pool"}, {"id": 9, "name": "car"}, {"id": 11, "name": "building"}]}
    (root / "ann.json").write_text(json.dumps(gt))
    model = build_retinanet(tiny_config(
        postprocess={"score_threshold": 0.5, "iou_threshold": 0.5, "max_detections": 40,
                     "pre_nms_top_k": 1000},
        input={"scale": 1.0, "tile": 128, "overlap": 0.25, "category_ids": [5, 9, 11]}))
    model.save(root / "model.keras")
    return root, img, gt


def test_score_threshold_below_the_models_is_applied_exactly(scene):
    root, img, _ = scene
    model = load_model(root / "model.keras")
    assert len(detect_image(model, img)["scores"]) == 0  # random heads score ~0.01 < 0.5
    model.set_postprocess(score_threshold=0.001)
    low = detect_image(model, img)
    reference = build_retinanet(tiny_config(
        postprocess={"score_threshold": 0.001, "iou_threshold": 0.5, "max_detections": 40,
                     "pre_nms_top_k": 1000}, input={"scale": 1.0, "tile": 128, "overlap": 0.25}))
    reference.set_weights(model.get_weights())
    want = detect_image(reference, img)
    assert len(low["scores"]) > 0
    np.testing.assert_array_equal(low["boxes"], want["boxes"])
    np.testing.assert_array_equal(low["scores"], want["scores"])


def test_detection_cap_is_counted(scene):
    root, img, _ = scene
    model = load_model(root / "model.keras")
    model.set_postprocess(score_threshold=0.001, max_detections=3)
    det = detect_image(model, img)
    assert det["tiles"] == 9 and det["capped_tiles"] == 9  # 3x3 tiles of 128 at overlap 0.25
    assert det["top_k_capped_tiles"] == 0  # counted once, as the detection cap


def test_pre_nms_cap_is_counted(scene):
    root, img, _ = scene
    model = load_model(root / "model.keras")
    # 12 candidates enter NMS; the classes' near-identical random boxes collapse well below 40
    model.set_postprocess(score_threshold=0.001, max_detections=40, pre_nms_top_k=12)
    det = detect_image(model, img)
    assert det["capped_tiles"] == 0 and det["top_k_capped_tiles"] == 9
    caps = CapCount()
    caps.add(det)
    caps.add(det)
    assert "18 of 18 tiles had more candidates above the score threshold than pre_nms_top_k=12" \
        in caps.warning(model.model_config.postprocess)
    model.set_postprocess(pre_nms_top_k=100_000)  # every candidate considered: nothing to count
    det = detect_image(model, img)
    assert det["top_k_capped_tiles"] == 0 and CapCount().warning(model.model_config.postprocess) is None


def test_evaluate_and_predict_give_the_same_detections(scene, tmp_path, capsys):
    root, _, gt = scene
    common = ["--model", str(root / "model.keras"), "--score-threshold", "0.001",
              "--max-detections", "30"]
    assert main(["predict", *common, "--out", str(tmp_path / "p"), "--ann", str(root / "ann.json"),
                 str(root / "images" / "a.png")]) == 0
    assert "reached the detection cap of max_detections=30" in capsys.readouterr().err
    predicted = json.loads((tmp_path / "p" / "coco_results.json").read_text())
    assert {r["image_id"] for r in predicted} == {42}  # the ground truth's id, by file name
    assert {r["category_id"] for r in predicted} <= {5, 9, 11}
    assert main(["evaluate", "--ann", str(root / "ann.json"), "--images", str(root / "images"), *common,
                 "--save-predictions", str(tmp_path / "e.json")]) == 0
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert len(predicted) > 30  # tiles merged: more than one tile's cap

    def ordered(results):  # same detections; predict rounds corners, evaluate xywh (0.01 px)
        rows = sorted(results, key=lambda r: (r["category_id"], r["score"], r["bbox"][0], r["bbox"][1]))
        return [(r["category_id"], r["score"]) for r in rows], np.array([r["bbox"] for r in rows])

    (ka, ba), (kb, bb) = ordered(predicted), ordered(evaluated)
    assert ka == kb
    np.testing.assert_allclose(ba, bb, atol=0.02)


def test_model_category_ids_are_used_without_ground_truth(scene, tmp_path):
    root, _, _ = scene
    assert main(["predict", "--model", str(root / "model.keras"), "--score-threshold", "0.001",
                 "--out", str(tmp_path / "p"), str(root / "images" / "a.png")]) == 0
    results = json.loads((tmp_path / "p" / "coco_results.json").read_text())
    assert {r["category_id"] for r in results} <= {5, 9, 11}
    cats = json.loads((tmp_path / "p" / "images.json").read_text())["categories"]
    assert [c["id"] for c in cats] == [5, 9, 11]


def test_rule_scale_maps_boxes_back(scene):
    root, img, gt = scene
    model = load_model(root / "model.keras")
    model.set_postprocess(score_threshold=0.001)
    half = detect_image(model, img, TileOptions(scale=0.5))
    assert half["scale"] == 0.5 and half["tiles"] == 4  # 150 x 130 -> 2 x 2 tiles of 128
    assert half["boxes"][:, 2].max() <= 300 and half["boxes"][:, 3].max() <= 260
    results = predict_coco(model, gt, root / "images", options=TileOptions(scale=0.5), progress=False)
    # coco results round scores to 5 decimals: a last-bit difference between two runs of the
    # network can flip one rounding, so the tolerance is one rounding unit
    np.testing.assert_allclose(sorted(r["score"] for r in results),
                               sorted(np.round(half["scores"], 5)), atol=1.01e-5)
