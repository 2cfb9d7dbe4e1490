"""LiteRT (TFLite) export and inference: parity with the Keras model, quantisation, metadata, bad input."""

import json

import keras
import numpy as np
import pytest

from detect.cli.main import main
from detect.exporters.litert import export_tflite
from detect.inference.predictor import detect_image
from detect.models.litert_model import LiteRTModel, read_metadata
from detect.ops.boxes import pairwise_iou
from tests.models.conftest import square_scenes, tiny_config, write_square_dataset

pytest.importorskip("ai_edge_litert")  # the [lite] extra; make installs it

# no cap is reached: which near-equal scores make a cap is float rounding, not parity
#: Pixel noise of the scenes that compare arithmetic (see ``square_scenes``): on flat grey
#: tiles the dynamic-range file's logits were off by up to 4.5, float32's by 3e-3.
TEXTURE = 12.0

POST = {"score_threshold": 0.005, "iou_threshold": 0.5, "max_detections": 1000, "pre_nms_top_k": 10000}


@pytest.fixture(scope="module")
def random_model():
    """Untrained, GroupNorm backbone and heads, many low-score detections: a strict parity load."""
    from detect.models import build_retinanet

    keras.utils.set_random_seed(7)  # the same weights every run: the tolerances below are measured on them
    return build_retinanet(tiny_config(postprocess=POST, input={"tile": 256}))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(model, dataset folder)``: a tiny model fitted to square scenes, and 6 annotated
    scenes (annotations.json + images/) for calibration and the parity report."""
    from detect.models import build_retinanet

    keras.utils.set_random_seed(3)
    model = build_retinanet(tiny_config(backbone_width=16, fpn_channels=32, head_convs=2, input={"tile": 128},
                                        postprocess={"score_threshold": 0.05, "max_detections": 20}))
    images, targets = square_scenes(16, size=128, seed=5, texture=TEXTURE)
    model.compile(optimizer=keras.optimizers.AdamW(0.003))
    model.fit(images, targets, batch_size=4, epochs=40, verbose=0)
    folder = tmp_path_factory.mktemp("calib")
    val, vt = square_scenes(6, size=128, seed=8, texture=TEXTURE)
    gt = write_square_dataset(folder / "images", val, vt, model.class_names)
    (folder / "annotations.json").write_text(json.dumps(gt))
    return model, folder


def test_group_norm_as_4d_ops_equals_keras_group_norm():
    from detect.exporters.litert import _group_norm_4d

    rng = np.random.default_rng(0)
    layer = keras.layers.GroupNormalization(groups=4, epsilon=1e-3)
    x = rng.normal(3.0, 2.0, (2, 5, 7, 12)).astype(np.float32)
    layer.build(x.shape)
    layer.gamma.assign(rng.normal(1, 0.5, 12).astype(np.float32))
    layer.beta.assign(rng.normal(0, 0.5, 12).astype(np.float32))
    want = np.asarray(layer(x))
    got = np.asarray(_group_norm_4d(layer, x))
    np.testing.assert_allclose(got, want, atol=2e-5)
    # by hand for one image and group: standardise over H, W and the group's 3 channels
    g = x[1, :, :, 3:6]
    hand = (g - g.mean()) / np.sqrt(g.var() + 1e-3) * np.asarray(layer.gamma)[3:6] + np.asarray(layer.beta)[3:6]
    np.testing.assert_allclose(got[1, :, :, 3:6], hand, atol=2e-5)


@pytest.mark.parametrize("mode,bands", [("caffe", 3), ("torch", 3), ("bands", 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_numba_normalisation_equals_the_keras_layer_then_zero_padding(mode, bands, dtype):
    """The LiteRT path normalises in numba; the values must be the Keras layer's, bit for bit
    (same float32 operations), with zeros in the padding ``RetinaNet.call`` adds."""
    from detect.models.backbones import ImageNormalization, normalization_affine
    from detect.models.litert_model import Normalization, normalized_padded

    extra = {"band_mean": (90.0, 80.5, 70.25, 60.0), "band_std": (30.0, 20.0, 25.5, 10.0)} if mode == "bands" else {}
    config = tiny_config(input_bands=bands, input_normalization=mode, **extra)
    batch = np.random.default_rng(1).uniform(0, 255, (2, 37, 50, bands)).astype(dtype)
    got = normalized_padded(Normalization(config), batch, 32)
    assert got.shape == (2, 64, 64, bands) and got.dtype == np.float32
    want = np.asarray(ImageNormalization(*normalization_affine(config)[1:], normalization_affine(config)[0])(
        batch.astype(np.float32)))
    np.testing.assert_array_equal(got[:, :37, :50], want)
    assert not got[:, 37:].any() and not got[:, :, 50:].any()
    if mode == "caffe":  # BGR order: the first output band is blue minus its mean
        np.testing.assert_array_equal(got[0, 0, 0, 0], np.float32(batch[0, 0, 0, 2]) - np.float32(103.939))


def test_float32_file_gives_the_keras_network_outputs(random_model, tmp_path):
    path = export_tflite(random_model, tmp_path / "m.tflite")
    lite = LiteRTModel(path, threads=1)
    assert lite.tile == 256 and lite.class_names == random_model.class_names
    images, _ = square_scenes(1, size=300, seed=3)
    # tiles smaller than the tile rule run at 128 x 128 and 256 x 128, as Keras pads them
    # (GroupNorm statistics see the padding); a full 256 px tile
    for tile in (images[0][:96, :80], images[0][:200, :100], images[0][:256, :256]):
        batch = tile[None].astype(np.float32)
        cls, box, hp, wp = lite.raw_outputs(batch)
        want = random_model(batch)
        assert (hp, wp) == random_model.padded_size(batch)
        # float32 through other kernels (seen up to 1.6e-4 over seeds); a padding or
        # normalisation error moves far more (the fixed-size input of 2066704 cost 0.1 AP50)
        np.testing.assert_allclose(cls, want["cls_logits"], atol=5e-4)
        np.testing.assert_allclose(box, want["box_deltas"], atol=5e-4)


def test_layer_norm_heads_export_to_the_keras_network_outputs(tmp_path):
    """``head_norm: layer`` (the pretrained recipe's) converts as it computes: LayerNorm over the
    last axis of 4-D maps, no rewrite needed."""
    from detect.models import build_retinanet

    keras.utils.set_random_seed(5)
    model = build_retinanet(tiny_config(head_norm="layer", backbone_norm="batch", postprocess=POST,
                                        input={"tile": 128}))
    lite = LiteRTModel(export_tflite(model, tmp_path / "ln.tflite"), threads=1)
    batch = square_scenes(1, size=128, seed=4)[0].astype(np.float32)
    cls, box, _, _ = lite.raw_outputs(batch)
    want = model(batch)
    np.testing.assert_allclose(cls, want["cls_logits"], atol=5e-4)
    np.testing.assert_allclose(box, want["box_deltas"], atol=5e-4)


def test_float32_file_gives_the_keras_detections(trained, tmp_path):
    """Same detections on a trained model (scores well apart: no near-tie decides anything)."""
    model, _ = trained
    lite = LiteRTModel(export_tflite(model, tmp_path / "m.tflite"))
    images, _ = square_scenes(3, size=200, seed=13, texture=TEXTURE)
    for img in images.astype(np.uint8):
        want, got = detect_image(model, img), detect_image(lite, img)
        assert len(want["boxes"]) > 0 and len(got["boxes"]) == len(want["boxes"])
        np.testing.assert_allclose(got["boxes"], want["boxes"], atol=0.01)
        np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-4)
        np.testing.assert_array_equal(got["labels"], want["labels"])


def _matched(want, got, min_score, truth=None):
    """Fraction of ``want``'s detections above ``min_score`` (with ``truth``: only those at
    IoU >= 0.5 with a ground-truth box of their label) that ``got`` has with the same label
    at IoU >= 0.9, the largest coordinate difference of those matches, and how many were compared."""
    keep = want["scores"] > min_score
    if truth is not None:
        real = truth["labels"] >= 0
        hit = np.asarray(pairwise_iou(want["boxes"], truth["boxes"][real])) >= 0.5
        keep &= (hit & (want["labels"][:, None] == truth["labels"][real][None])).any(1)
    boxes, labels = want["boxes"][keep], want["labels"][keep]
    if not len(boxes):
        return 1.0, 0.0, 0
    iou = np.asarray(pairwise_iou(boxes, got["boxes"])) * (labels[:, None] == got["labels"][None])
    best = iou.argmax(1)
    ok = iou.max(1) >= 0.9
    return ok.mean(), float(np.abs(boxes[ok] - got["boxes"][best[ok]]).max()) if ok.any() else 0.0, len(boxes)


def _found(detections, targets, min_score):
    """Which ground-truth boxes ``targets`` (padded, label -1) have a detection above
    ``min_score`` of their label at IoU >= 0.5."""
    real = targets["labels"] >= 0
    boxes, labels = targets["boxes"][real], targets["labels"][real]
    keep = detections["scores"] > min_score
    iou = np.asarray(pairwise_iou(boxes, detections["boxes"][keep]))
    return ((iou >= 0.5) & (labels[:, None] == detections["labels"][keep][None])).any(1)


@pytest.mark.parametrize("quantize", ["float16", "dynamic"])
def test_float16_and_dynamic_files_stay_within_a_box_tolerance(trained, quantize, tmp_path):
    """Confident detections of real squares (score > 0.5, IoU >= 0.5 with a square of their
    label) are the Keras model's within 1.5 px, and every square the Keras model finds
    (score > 0.3) the file finds too. Other detections are not compared one by one:
    dynamic-range files move a score by 0.1 and more on these scenes (float16: ~1e-3),
    enough to change which of two overlapping near-equal boxes NMS keeps, and a confident
    box that straddles two squares has no well-defined place (one moved 1.7 px, IoU 0.88,
    after a change that moved the tiny model's first loss by 1e-6)."""
    model, folder = trained
    lite = LiteRTModel(export_tflite(model, tmp_path / f"{quantize}.tflite", quantize=quantize))
    assert read_metadata(lite.path)["quantize"] == quantize
    images, targets = square_scenes(4, size=200, seed=21, texture=TEXTURE)
    confident = found = 0
    for i, img in enumerate(images.astype(np.uint8)):
        want, got = detect_image(model, img), detect_image(lite, img)
        truth = {k: v[i] for k, v in targets.items()}
        share, err, compared = _matched(want, got, 0.5, truth)
        confident += compared
        assert share == 1.0 and err < 1.5, (i, share, err)
        by_keras = _found(want, truth, 0.3)
        found += int(by_keras.sum())
        assert _found(got, truth, 0.3)[by_keras].all(), i
    assert confident >= 4 and found >= 4  # the trained model finds the squares


def test_int8_export_with_parity_report(trained, tmp_path, capsys):
    model, folder = trained
    model.save(tmp_path / "m.keras")
    out = tmp_path / "m-int8.tflite"
    assert main(["export", "--model", str(tmp_path / "m.keras"), "--format", "tflite", "--quantize", "int8",
                 "--calibration", str(folder), "--calibration-tiles", "6", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "calibrating int8 on 6 tiles from 6 images" in text and "parity on 6 calibration images" in text
    rows = {line.split()[0]: [float(v) for v in line.split()[1:3]] for line in text.splitlines()
            if line.strip().startswith(("keras ", "tflite "))}
    assert rows["keras"][0] > 0.5  # trained: AP50 well above chance
    assert abs(rows["tflite"][0] - rows["keras"][0]) < 0.1  # int8 keeps most of it
    # the file is int8 inside and runs through predict with the same outputs as a .keras model
    lite = LiteRTModel(out)
    kinds = {d["dtype"] for d in lite.interpreter.get_tensor_details()}
    assert np.int8 in kinds
    # GroupNorm's variance as a product, not SQUARED_DIFFERENCE (no int8 XNNPACK kernel:
    # its reference kernel made int8 GroupNorm models slower than float32)
    ops = {op["op_name"] for op in lite.interpreter._get_ops_details()}
    assert {"MEAN", "MUL", "CONV_2D"} <= ops and "SQUARED_DIFFERENCE" not in ops
    res = tmp_path / "pred"
    assert main(["predict", "--model", str(out), "--out", str(res), "--threads", "1", str(folder / "images")]) == 0
    assert len(list((res / "detections").glob("*.json"))) == 6


def test_bad_files_and_tiles_are_refused_with_the_reason(random_model, tmp_path):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def plain(x):
        return x * 2.0

    foreign = tmp_path / "plain.tflite"
    foreign.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([plain.get_concrete_function()]).convert())
    with pytest.raises(ValueError, match="not exported by 'detect export --format tflite'"):
        LiteRTModel(foreign)
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ValueError, match="junk.tflite"):
        LiteRTModel(tmp_path / "junk.tflite")
    path = export_tflite(random_model, tmp_path / "m.tflite")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_tflite(random_model, path)
    with pytest.raises(ValueError, match="--calibration"):
        export_tflite(random_model, tmp_path / "q.tflite", quantize="int8")
    # images with other bands than the network's: named, not read out of bounds by the kernel
    with pytest.raises(ValueError, match=r"takes images \[B, h, w, 3\], got an array of shape \(1, 64, 64, 4\)"):
        LiteRTModel(path).predict_on_batch(np.zeros((1, 64, 64, 4), np.uint8))
