import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from detect.config import ModelConfig
from detect.models import RetinaNet, build_retinanet, load_model
from detect.ops.boxes import pairwise_iou
from tests.models.conftest import square_scenes, tiny_config


@pytest.mark.parametrize("size", [(37, 91), (100, 130), (128, 128)])
def test_outputs_match_anchors_for_odd_sizes(tiny_model, size):
    x = np.zeros((2, *size, 3), np.float32)
    out = tiny_model(x)
    n = tiny_model.anchors(x).shape[0]
    assert out["cls_logits"].shape == (2, n, 3) and out["box_deltas"].shape == (2, n, 4)
    det = tiny_model.predict(x, verbose=0)
    assert det["boxes"].shape == (2, 100, 4) and det["num_detections"].shape == (2,)
    # boxes lie inside the (unpadded) image
    assert det["boxes"][..., 2].max() <= size[1] and det["boxes"][..., 3].max() <= size[0]


def test_prior_bias_gives_mean_sigmoid_one_percent(tiny_model):
    x = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    p = tf.sigmoid(tiny_model(x)["cls_logits"]).numpy()
    assert abs(p.mean() - 0.01) < 1e-3
    # the bias is on the classification head, not the box head
    bias = tiny_model.network.get_layer("cls_predict").bias.numpy()
    np.testing.assert_allclose(bias, -np.log(0.99 / 0.01), rtol=1e-6)
    np.testing.assert_array_equal(tiny_model.network.get_layer("box_predict").bias.numpy(), 0.0)


def _bn_stats(model):
    return [v.numpy().copy() for layer in model.backbone.layers
            if isinstance(layer, keras.layers.BatchNormalization)
            for v in (layer.moving_mean, layer.moving_variance)]


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_batchnorm_really_frozen(frozen):
    model = build_retinanet(tiny_config(freeze_batchnorm=frozen, backbone_norm="batch"))
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    images, targets = square_scenes(2, size=64)
    before = _bn_stats(model)
    model.fit(images, targets, epochs=1, batch_size=2, verbose=0)
    after = _bn_stats(model)
    same = all(np.array_equal(a, b) for a, b in zip(before, after))
    assert same == frozen


def test_freeze_stages_keeps_early_weights():
    model = build_retinanet(tiny_config(freeze_stages=2, zero_init_residual=False))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    stem = model.backbone.get_layer("conv1_conv").kernel.numpy().copy()
    stage2 = model.backbone.get_layer("conv2_block1_1_conv").kernel.numpy().copy()
    stage3 = model.backbone.get_layer("conv3_block1_1_conv").kernel.numpy().copy()
    images, targets = square_scenes(2, size=64)
    model.fit(images, targets, epochs=1, batch_size=2, verbose=0)
    np.testing.assert_array_equal(model.backbone.get_layer("conv1_conv").kernel.numpy(), stem)
    np.testing.assert_array_equal(model.backbone.get_layer("conv2_block1_1_conv").kernel.numpy(), stage2)
    assert not np.array_equal(model.backbone.get_layer("conv3_block1_1_conv").kernel.numpy(), stage3)


def test_save_load_round_trip(tmp_path):
    model = build_retinanet(tiny_config(postprocess={"score_threshold": 0.001, "iou_threshold": 0.5,
                                                     "max_detections": 50, "pre_nms_top_k": 500},
                                        anchors={"anchor_size": 2.0, "min_level": 3, "max_level": 6,
                                                 "num_scales": 2, "aspect_ratios": [1.0, 2.0]}))
    x = np.random.default_rng(1).uniform(0, 255, (2, 75, 120, 3)).astype(np.float32)
    want = model.predict(x, verbose=0)
    assert want["num_detections"].min() > 0
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    assert isinstance(loaded, RetinaNet)
    assert loaded.model_config == model.model_config
    assert loaded.class_names == ("pool", "car", "building")
    got = loaded.predict(x, verbose=0)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    # plain keras.models.load_model works too
    plain = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(plain.predict(x, verbose=0)["boxes"], want["boxes"])


def test_export_parity(tmp_path):
    from detect.exporters.saved_model import export_saved_model

    model = build_retinanet(tiny_config(postprocess={"score_threshold": 0.001, "iou_threshold": 0.5,
                                                     "max_detections": 40, "pre_nms_top_k": 300,
                                                     "vote_iou": 0.6}))
    x = np.random.default_rng(2).integers(0, 256, (2, 70, 99, 3)).astype(np.uint8)
    want = model.predict(x.astype(np.float32), verbose=0)
    model.set_postprocess(vote_iou=0.0)  # box voting moves boxes, not scores
    unvoted = model.predict(x.astype(np.float32), verbose=0)
    np.testing.assert_array_equal(unvoted["scores"], want["scores"])
    assert np.abs(unvoted["boxes"] - want["boxes"]).max() > 0.5
    model.set_postprocess(vote_iou=0.6)
    export_saved_model(model, tmp_path / "sm")
    serve = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    got = serve(images=tf.constant(x))
    assert want["num_detections"].min() > 0
    for k in want:
        np.testing.assert_allclose(got[k].numpy(), want[k], atol=1e-4)
    asset = json.loads((tmp_path / "sm" / "assets" / "detect.json").read_text())
    assert asset["class_names"] == ["pool", "car", "building"] and asset["input"]["tile"] == 512
    assert asset["config"] == model.model_config.to_dict() and asset["config"]["postprocess"]["vote_iou"] == 0.6
    with pytest.raises(FileExistsError):
        export_saved_model(model, tmp_path / "sm")


def test_fit_reduces_loss_on_fixed_batch():
    model = build_retinanet(tiny_config())
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, targets = square_scenes(4, size=64)
    first = float(model.compute_detection_losses(images, targets)["loss"])
    model.fit(images, targets, epochs=1, batch_size=4, verbose=0)  # one step
    last = float(model.compute_detection_losses(images, targets)["loss"])
    assert np.isfinite(first) and last < first


def test_all_padding_batch_trains_without_nan():
    model = build_retinanet(tiny_config())
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    images = np.zeros((2, 64, 64, 3), np.float32)
    targets = {"boxes": np.zeros((2, 3, 4), np.float32), "labels": -np.ones((2, 3), np.int32)}
    h = model.fit(images, targets, epochs=1, verbose=0).history
    assert np.isfinite(h["loss"][0]) and h["box_loss"][0] == 0.0


def test_parameter_count_resnet50_fpn_matches_reference():
    # Published RetinaNet ResNet-50-FPN, 80 classes (torchvision): 34,014,999.
    # Ours counts keras.applications' conv biases and BN statistics.
    model = build_retinanet(ModelConfig(num_classes=80, backbone="resnet50"))
    n = model.count_params()
    print(f"ResNet-50-FPN RetinaNet, 80 classes: {n:,} parameters")
    assert abs(n - 34_014_999) / 34_014_999 < 0.01
    # P6 from C5 (paper) adds a 2048->256 instead of 256->256 3x3 conv.
    c5 = build_retinanet(ModelConfig(num_classes=80, backbone="resnet50", p6_from="c5"))
    assert c5.count_params() - n == (2048 - 256) * 9 * 256


def test_mobilenet_backbone_and_group_norm():
    model = build_retinanet(tiny_config(backbone="mobilenetv2", mobilenet_alpha=0.35, head_norm="group",
                                        backbone_norm="batch"))
    x = np.zeros((1, 67, 45, 3), np.float32)
    assert model(x)["cls_logits"].shape[1] == model.anchors(x).shape[0]
    norms = [layer for layer in model.network.layers if isinstance(layer, keras.layers.GroupNormalization)]
    assert norms and all(layer.name.startswith(("cls_", "box_")) for layer in norms)  # heads only
    assert not any(isinstance(layer, keras.layers.GroupNormalization) for layer in model.backbone.layers)


def test_mixed_precision_outputs_and_loss_are_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_retinanet(tiny_config())
        model.compile(optimizer=keras.optimizers.SGD(0.01))
        images, targets = square_scenes(2, size=64)
        out = model(images)
        assert out["cls_logits"].dtype == tf.float32
        assert model.network.get_layer("cls_conv0").compute_dtype == "bfloat16"
        h = model.fit(images, targets, epochs=1, verbose=0).history
        assert np.isfinite(h["loss"][0])
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_weight_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="missing.h5.: no such weights file"):
        build_retinanet(tiny_config(backbone_weights=str(tmp_path / "missing.h5")))
    with pytest.raises(ValueError, match="no ImageNet weights for resnet18"):
        build_retinanet(tiny_config(backbone_weights="imagenet"))

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setitem(__import__("detect.models.backbones", fromlist=["x"])._RESNET_APPS,
                        "resnet50", offline)
    with pytest.raises(RuntimeError, match="offline.*backbone_weights=none"):
        build_retinanet(ModelConfig(num_classes=2, backbone="resnet50", backbone_weights="imagenet"))


def test_local_backbone_weights_file_is_loaded(tmp_path):
    from detect.models.backbones import build_backbone

    cfg = tiny_config(backbone_norm="batch")
    src, _ = build_backbone(cfg)
    path = tmp_path / "r18.weights.h5"
    # a full (headless) ResNet-18 weights file, as a user would bring
    src_full = keras.Model(src.inputs, src.outputs)
    src_full.save_weights(path)
    model = build_retinanet(tiny_config(backbone_weights=str(path), backbone_norm="batch"))
    np.testing.assert_array_equal(model.backbone.get_layer("conv1_conv").kernel.numpy(),
                                  src.get_layer("conv1_conv").kernel.numpy())
    assert model.model_config.batchnorm_frozen  # pretrained -> BN frozen by default


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.keras")
    other = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    other.save(tmp_path / "other.keras")
    with pytest.raises(ValueError, match="not a detect RetinaNet"):
        load_model(tmp_path / "other.keras")


@pytest.mark.slow
def test_overfits_a_few_images():
    # Frozen BN, as in detection fine-tuning: with batch statistics from 4
    # images the inference-mode network differs from the trained one (seen
    # here: train loss 0.014 vs inference loss 0.27 with BN updating).
    keras.utils.set_random_seed(0)
    model = build_retinanet(tiny_config(backbone_width=16, fpn_channels=32, head_convs=2,
                                        freeze_batchnorm=True))
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    images, targets = square_scenes(4, size=128, seed=3)
    model.fit(images, targets, epochs=300, batch_size=4, verbose=0)
    det = model.predict(images, verbose=0)
    found = total = 0
    for i in range(4):
        real = targets["labels"][i] >= 0
        gt, gl = targets["boxes"][i][real], targets["labels"][i][real]
        n = det["num_detections"][i]
        keep = det["scores"][i, :n] > 0.5
        boxes, labels = det["boxes"][i, :n][keep], det["labels"][i, :n][keep]
        iou = pairwise_iou(gt, boxes).numpy() if len(boxes) else np.zeros((len(gt), 0))
        hit = (iou >= 0.5) & (gl[:, None] == labels[None, :])
        found += int(hit.any(axis=1).sum())
        total += len(gt)
        assert len(boxes) <= len(gt) + 1  # at most one confident extra per image
    assert found == total


def test_fpn_upsample_is_nearest_and_crops_odd_sizes():
    from detect.models.fpn import ResizeToMatch

    x = tf.reshape(tf.range(6, dtype=tf.float32), [1, 2, 3, 1])
    out = ResizeToMatch()(x, tf.zeros([1, 3, 5, 1]))[0, :, :, 0].numpy()
    np.testing.assert_array_equal(out, [[0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [3, 3, 4, 4, 5]])
    np.testing.assert_array_equal(
        ResizeToMatch()(x, tf.zeros([1, 4, 6, 1])),
        tf.image.resize(x, [4, 6], method="nearest"))


def test_xla_train_step_compiles():
    model = build_retinanet(tiny_config())
    model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=True)
    images, targets = square_scenes(2, size=64)
    h = model.fit(images, targets, epochs=1, verbose=0).history
    assert np.isfinite(h["loss"][0])
    det = model.predict(images, verbose=0)  # static-shape NMS under XLA
    assert det["boxes"].shape == (2, 100, 4)


def test_p2_pyramid_matches_anchors_and_shares_p3_weights():
    p2 = build_retinanet(tiny_config(anchors={"min_level": 2, "max_level": 4}))
    p3 = build_retinanet(tiny_config(anchors={"min_level": 3, "max_level": 4}))
    x = np.zeros((1, 72, 40, 3), np.float32)
    n2 = p2.anchors(x).shape[0]
    # stride 4 on the image padded to a multiple of 16: 80 x 48 -> 20 x 12 cells more than P3
    assert n2 - p3.anchors(x).shape[0] == 20 * 12 * 9
    assert p2(x)["cls_logits"].shape[1] == n2
    # the same weights by path and shape, plus P2's lateral and output convs
    w2 = {v.path: tuple(v.shape) for v in p2.weights}
    w3 = {v.path: tuple(v.shape) for v in p3.weights}
    assert {k: w2[k] for k in w3} == w3
    assert {k.split("/")[-2] for k in set(w2) - set(w3)} == {"fpn_lateral2", "fpn_output2"}


def test_every_backbone_config_accepts_has_a_builder_and_a_stage_rule_that_resolve():
    from detect.config import BACKBONES
    from detect.config import backbones as registry

    assert BACKBONES and set(BACKBONES) == set(registry.SPECS)
    for name in BACKBONES:
        entry = registry.spec(name)
        for ref in filter(None, (entry.builder, entry.stage_rule, entry.torch_layout)):
            assert callable(registry.resolve(ref)), (name, ref)
        assert entry.normalization in ("caffe", "tf", "torch", "lite"), (name, entry.normalization)


def test_export_to_an_existing_file_is_refused_with_one_line(tmp_path, capsys):
    from detect.cli.main import main

    build_retinanet(tiny_config()).save(tmp_path / "m.keras")
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    assert main(["export", "--model", str(tmp_path / "m.keras"), "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert "taken.txt' is a file; a SavedModel is a folder" in err and "Traceback" not in err
    assert taken.read_text() == "keep me"


def test_the_detector_protocol_is_what_inference_takes(tmp_path):
    from detect.models.detector import Detector, as_detector, load_detector
    from tests.inference.blob_model import BlobModel

    model = build_retinanet(tiny_config())
    assert isinstance(model, Detector) and isinstance(BlobModel(), Detector)
    assert as_detector(model) is model
    assert model.class_names == model.model_config.labels == ("pool", "car", "building")
    # the digest follows the weights and the post-processing, not the object
    model.save(tmp_path / "m.keras")
    again = load_detector(tmp_path / "m.keras")
    assert again.digest() == model.digest()
    again.set_postprocess(score_threshold=0.3)
    assert again.digest() != model.digest()
    assert again.digest(postprocess=False) == model.digest(postprocess=False)  # only the threshold differs
    with pytest.raises(ValueError, match="got object"):
        as_detector(object())
    with pytest.raises(FileNotFoundError, match="without model.keras"):
        load_detector(tmp_path)  # a folder that is not a finished run


@pytest.mark.parametrize("norm, local", [("layer", True), ("none", True), ("group", False)])
def test_head_outputs_depend_on_the_tile_only_within_their_receptive_field(norm, local):
    """Subnets of 2 convs (3x3) see 2 + 1 cells around each output (the prediction conv adds one):
    features changed 10 cells away leave the output unchanged with LayerNorm (per-position
    statistics) or no norm, and change it with GroupNorm (statistics of the whole map)."""
    from detect.models.heads import build_heads

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(1, 16, 16, 8)).astype(np.float32)
    inp = keras.Input((16, 16, 8))
    cls, box = build_heads([inp], num_classes=2, num_anchors=1, channels=8, convs=2, norm=norm, prior_bias=-4.6)
    heads = keras.Model(inp, [cls, box])
    for w in heads.weights:  # random, not the near-zero init, so a change would show
        w.assign(rng.normal(size=w.shape).astype(np.float32) * 0.3)
    other = feats.copy()
    other[0, 12:, 12:] += 5.0  # far corner
    a, b = heads(feats), heads(other)
    for x, y in zip(a, b):
        x, y = np.asarray(x).reshape(16, 16, -1), np.asarray(y).reshape(16, 16, -1)
        near = np.abs(x - y).max(axis=-1)[:9, :9]  # every cell >= 3 cells from the change
        assert (near.max() == 0.0) == local, (norm, near.max())
