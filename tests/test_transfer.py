"""--init-from: weights by layer path and shape, class logits remapped by name."""

import keras
import numpy as np
import pytest

from detect.models import build_retinanet
from detect.training.transfer import init_from, load_source
from tests.models.conftest import tiny_config


def _randomised(model, seed):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    return model


def test_weights_copied_by_path_and_logits_remapped_by_class_name():
    source = _randomised(build_retinanet(tiny_config(num_classes=2, class_names=("car", "tree"))), 1)
    target = build_retinanet(tiny_config(num_classes=2, class_names=("tree", "bus")))
    before = {w.path: w.numpy().copy() for w in target.weights}
    theirs = {w.path: w.numpy() for w in source.weights}
    report = init_from(target, source)
    for w in target.weights:
        if not w.path.startswith("cls_predict/"):
            np.testing.assert_array_equal(w.numpy(), theirs[w.path], err_msg=w.path)
    anchors = target.model_config.anchors.num_scales * len(target.model_config.anchors.aspect_ratios)
    for name in ("cls_predict/kernel", "cls_predict/bias"):
        got = next(w for w in target.weights if w.path == name).numpy()
        for a in range(anchors):  # channel a * K + k
            np.testing.assert_array_equal(got[..., a * 2 + 0], theirs[name][..., a * 2 + 1])  # tree <- tree
            np.testing.assert_array_equal(got[..., a * 2 + 1], before[name][..., a * 2 + 1])  # bus: as built
    prior = -np.log((1 - 0.01) / 0.01)
    bias = next(w for w in target.weights if w.path == "cls_predict/bias").numpy()
    np.testing.assert_allclose(bias[1::2], prior, rtol=1e-6)  # the new class starts from the prior
    assert (report.kept_classes, report.new_classes, report.dropped_classes) == (["tree"], ["bus"], ["car"])
    assert not report.reinitialised and report.loaded_params < report.total_params
    assert "kept tree; new (prior bias) bus; source classes not used car" in "\n".join(report.lines("s.keras"))


def test_mismatched_shapes_are_reinitialised_and_said():
    source = _randomised(build_retinanet(tiny_config(fpn_channels=16)), 2)
    target = build_retinanet(tiny_config(fpn_channels=8))
    report = init_from(target, source)
    assert report.reinitialised and set(report.reinitialised.values()) == {"shape differs"}
    assert any(p.startswith("conv1") for p in report.loaded)  # the backbone still loads
    assert "re-initialised" in "\n".join(report.lines("s"))


def test_a_different_backbone_is_refused():
    source = build_retinanet(tiny_config(backbone_width=16))
    target = build_retinanet(tiny_config(backbone_width=8))
    with pytest.raises(ValueError, match=r"backbone is resnet18 \(width 16\), this model's resnet18 \(width 8\)"):
        init_from(target, source)


def test_a_file_that_is_not_a_detect_model(tmp_path):
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.save(tmp_path / "plain.keras")
    with pytest.raises(ValueError, match=r"--init-from .*plain.keras: not a detect model"):
        load_source(tmp_path / "plain.keras")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_source(tmp_path / "missing.keras")
    with pytest.raises(FileNotFoundError, match="neither model.keras nor a checkpoint"):
        load_source(tmp_path)


def test_width_is_compared_only_where_it_applies():
    """backbone_width means nothing for efficientnet_lite0 (or a source): a stale value in one
    config must not refuse an otherwise identical model."""
    source = build_retinanet(num_classes=2, backbone="efficientnet_lite0", fpn_channels=8, head_convs=1,
                             backbone_width=64)
    target = build_retinanet(num_classes=2, backbone="efficientnet_lite0", fpn_channels=8, head_convs=1,
                             backbone_width=32)
    report = init_from(target, source)
    assert not report.reinitialised
    for a, b in zip(target.weights, source.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
