import math
import re

import pytest

from detect.config import ModelConfig, dump_yaml, load_yaml


def test_dict_and_yaml_round_trip(tmp_path):
    cfg = ModelConfig(num_classes=3, class_names=("a", "b", "c")).with_overrides(
        ["anchors.anchor_size=2", "postprocess.score_threshold=0.3", "freeze_batchnorm=true"])
    assert cfg.anchors.anchor_size == 2.0 and isinstance(cfg.anchors.anchor_size, float)
    assert cfg.postprocess.score_threshold == 0.3 and cfg.freeze_batchnorm is True
    dump_yaml(cfg.to_dict(), tmp_path / "c.yaml")
    assert ModelConfig.from_dict(load_yaml(tmp_path / "c.yaml")) == cfg


def test_prior_bias():
    assert math.isclose(1 / (1 + math.exp(-ModelConfig().prior_bias)), 0.01, rel_tol=1e-9)


@pytest.mark.parametrize("override, message", [
    ("anchors.anchor_sise=2", "unknown config key 'anchors.anchor_sise'"),
    ("nope.x=1", "unknown config section 'nope'"),
    ("num_classes=2.5", "num_classes must be an integer"),
    ("freeze_batchnorm=3", "freeze_batchnorm must be true/false"),
    ("backbone=vgg16", "backbone"),
    ("anchors.min_level=1", "need 2 <= min_level"),
    ("matcher.negative_iou=0.7", "negative_iou <= positive_iou"),
    ("loss.box_loss=l2", "box_loss"),
    ("anchors.aspect_ratios=0.5", "must be a list"),
    ("just_a_word", "key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        ModelConfig().with_overrides([override])


def test_class_names_must_match_num_classes():
    with pytest.raises(ValueError, match="class_names"):
        ModelConfig(num_classes=2, class_names=("a",))


def test_batchnorm_frozen_follows_pretrained_by_default():
    assert not ModelConfig().batchnorm_frozen
    assert ModelConfig(backbone_weights="imagenet").batchnorm_frozen
    assert not ModelConfig(backbone_weights="imagenet", freeze_batchnorm=False).batchnorm_frozen


def test_bad_yaml_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")


@pytest.mark.parametrize("override, hint", [
    ("epochs=1", "unknown config key 'epochs'; did you mean train.epochs?"),
    ("trian.epochs=1", "unknown config section 'trian' in 'trian.epochs'; did you mean train.epochs?"),
    ("model.anchors.size=3", "did you mean model.anchors.anchor_size"),
])
def test_unknown_override_keys_suggest_the_field(override, hint):
    from detect.config import DetectConfig

    with pytest.raises(ValueError, match=re.escape(hint)):
        DetectConfig().with_overrides([override])
