"""Backbones from files and presets: the detector's backbone computes what the source computes,
and the saved detector needs neither the source file nor (for Keras' own layers) keras-hub."""

import json
import shutil
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import detect
from detect.config import ModelConfig
from detect.models import build_retinanet
from detect.models.backbones import _basic_resnet

HEAD = dict(num_classes=2, fpn_channels=16, head_convs=1, anchors={"min_level": 3, "max_level": 5})
IMAGE = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)


def assert_same(ours, theirs, atol=0.0):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=atol)


@pytest.fixture(scope="module")
def extractor():
    """A small feature extractor: C3, C4, C5 of a width-8 ResNet-18 with random weights."""
    base = _basic_resnet((2, 2, 2, 2), 8, "fe")
    return keras.Model(base.inputs, [base.get_layer(f"conv{s}_block2_out").output for s in (3, 4, 5)])


def test_keras_feature_extractor_file(extractor, tmp_path):
    extractor.save(tmp_path / "fe.keras")
    m = build_retinanet(backbone_weights=str(tmp_path / "fe.keras"), **HEAD)
    assert m.model_config.backbone == "source" and m.model_config.normalization == "unit"
    x = m.normalize(IMAGE)
    np.testing.assert_allclose(np.asarray(x), IMAGE / 255, rtol=1e-6)
    assert_same(m.backbone(x), extractor(x))
    m.save(tmp_path / "det.keras")
    (tmp_path / "fe.keras").unlink()  # the detector carries the backbone's graph and weights
    again = detect.load_model(tmp_path / "det.keras")
    assert_same([again(IMAGE)["cls_logits"]], [m(IMAGE)["cls_logits"]])


def test_named_layers_and_bad_taps(extractor, tmp_path):
    base = _basic_resnet((2, 2, 2, 2), 8, "whole")
    base.save(tmp_path / "whole.keras")  # one output (C5): taps picked by name
    names = ("conv2_block2_out", "conv3_block2_out", "conv4_block2_out", "conv5_block2_out")
    m = build_retinanet(backbone_weights=str(tmp_path / "whole.keras"), backbone_layers=names,
                        **{**HEAD, "anchors": {"min_level": 2, "max_level": 5}})
    x = m.normalize(IMAGE)
    assert_same(m.backbone(x), keras.Model(base.inputs, [base.get_layer(n).output for n in names])(x))
    with pytest.raises(ValueError, match=r"no layer named \['conv9_out'\]"):
        build_retinanet(backbone_weights=str(tmp_path / "whole.keras"), backbone_layers=("conv9_out",), **HEAD)
    with pytest.raises(ValueError, match=r"strides \[32\]"):
        build_retinanet(backbone_weights=str(tmp_path / "whole.keras"), **HEAD)
    extractor.save(tmp_path / "fe.keras")
    with pytest.raises(ValueError, match="min_level 2 .* needs C2"):
        build_retinanet(backbone_weights=str(tmp_path / "fe.keras"), **{**HEAD, "anchors": {"min_level": 2}})


def test_saved_model_feature_extractor_travels_inside_the_detector(extractor, tmp_path):
    class Features(tf.Module):
        def __init__(self):
            self.net = extractor

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images):
            c3, c4, c5 = self.net(images)
            return {"c3": c3, "c4": c4, "c5": c5}

    tf.saved_model.save(Features(), str(tmp_path / "sm"))
    m = build_retinanet(backbone_weights=str(tmp_path / "sm"), backbone_layers=("c3", "c4", "c5"), **HEAD)
    x = m.normalize(IMAGE)
    assert_same(m.backbone(x), extractor(x), atol=1e-5)
    assert not m.backbone.trainable_weights  # a SavedModel's graph runs frozen
    m.save(tmp_path / "det.keras")
    shutil.rmtree(tmp_path / "sm")
    again = detect.load_model(tmp_path / "det.keras")
    assert_same([again(IMAGE)["cls_logits"]], [m(IMAGE)["cls_logits"]])
    from detect.models.factory import inference_copy

    assert_same([inference_copy(again)(IMAGE)["cls_logits"]], [m(IMAGE)["cls_logits"]])


def test_keras_hub_preset_folder(tmp_path):
    hub = pytest.importorskip("keras_hub")
    bb = hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 16, 16, 16],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=False)
    bb.save_to_preset(str(tmp_path / "preset"))
    converter = hub.layers.ImageConverter(scale=[1 / 58.0, 1 / 57.0, 1 / 57.5], offset=[-2.1, -2.0, -1.8])
    converter.save_to_preset(str(tmp_path / "preset"))
    m = build_retinanet(backbone_weights=str(tmp_path / "preset"), freeze_stages=2, **HEAD)
    c = m.model_config
    # the converter's x * scale + offset, as mean / std in the model
    assert c.normalization == "custom"
    np.testing.assert_allclose(np.asarray(m.normalize(IMAGE)), IMAGE * [1 / 58.0, 1 / 57.0, 1 / 57.5]
                               + [-2.1, -2.0, -1.8], rtol=1e-5, atol=1e-5)
    x = m.normalize(IMAGE)
    theirs = keras.Model(bb.inputs, [bb.pyramid_outputs[k] for k in ("P2", "P3", "P4", "P5")])(x)
    assert_same(m.backbone(x), theirs)
    # stages by keras-hub's names: the stem and stack0 (conv2) frozen
    frozen = {layer.name for layer in m.backbone.layers if layer.weights and not layer.trainable}
    assert "conv1_conv" in frozen and "stack0_block0_1_conv" in frozen and "stack1_block0_1_conv" not in frozen
    m.save(tmp_path / "det.keras")
    with zipfile.ZipFile(tmp_path / "det.keras") as z:
        # Keras' own layers: loads without keras-hub
        assert '"module": "keras_hub' not in z.read("config.json").decode()
    shutil.rmtree(tmp_path / "preset")
    again = detect.load_model(tmp_path / "det.keras")
    assert again.model_config.input_mean == c.input_mean
    assert_same([again(IMAGE)["cls_logits"]], [m(IMAGE)["cls_logits"]])


def test_keras_hub_preset_name_offline_says_what_to_do():
    pytest.importorskip("keras_hub")
    with pytest.raises(RuntimeError, match="(?s)could not load keras-hub preset 'no_such_preset_xyz'.*save_to_preset"):
        build_retinanet(backbone_weights="keras_hub:no_such_preset_xyz", **HEAD)


def test_source_backbone_config_rules(tmp_path):
    c = ModelConfig(num_classes=1, backbone_weights="keras_hub:resnet_50_imagenet")
    assert c.backbone == "source"
    with pytest.raises(ValueError, match="backbone 'source' needs backbone_weights"):
        ModelConfig(num_classes=1, backbone="source")
    # a saved model's source folder need not exist where it is loaded
    assert ModelConfig.from_dict({"num_classes": 1, "backbone": "source",
                                  "backbone_weights": "/gone/preset"}).backbone == "source"
    json.dumps(c.to_dict())


def test_init_from_a_detector_with_a_source_backbone(extractor, tmp_path):
    from dataclasses import replace

    from detect.training.transfer import build_like, init_from

    extractor.save(tmp_path / "fe.keras")
    src = build_retinanet(backbone_weights=str(tmp_path / "fe.keras"), **HEAD)
    (tmp_path / "fe.keras").unlink()  # fine-tuning needs only the detector
    target = build_like(replace(src.model_config, num_classes=1, class_names=("0",)), src)
    report = init_from(target, src)
    assert report.kept_classes == ["0"]
    x = target.normalize(IMAGE)
    assert_same(target.backbone(x), src.backbone(x))
