"""Imported keras-hub / keras-cv RetinaNets compute what their sources compute.

Small detectors are built from config (no download), trained a few steps so
their outputs are not uniform, saved as their users save them, imported,
and compared: per-anchor class probabilities and decoded boxes to float32
tolerance, and ``detect.predict`` against the source's own ``predict()``.
"""

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

import detect
from detect.cli.main import main
from detect.models.importers import import_detector
from detect.ops import box_coder

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import make_synthetic  # noqa: E402

SIZE = 128
RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
TRAIN_X = RNG.uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
TRAIN_BOXES = np.array([[[10, 10, 50, 60], [60, 60, 120, 100]]] * 4, np.float32)
TRAIN_LABELS = np.array([[0, 2]] * 4)


def hub_anchor_order(model, num_anchors):
    """Index of each of our anchors in keras-hub's flattened order (ratio-major per location)."""
    a = model.model_config.anchors
    s, r = a.num_scales, len(a.aspect_ratios)
    per_location = np.array([(i % r) * s + i // r for i in range(s * r)])
    return (np.arange(num_anchors).reshape(-1, s * r)[:, per_location]).reshape(-1)


def ours_decoded(model, images):
    """Per-anchor class probabilities, decoded boxes and the scaled deltas of ``model``."""
    out = model(images)
    anchors = model.anchors(images)
    var = model.model_config.box_variances
    boxes = box_coder.decode(anchors, out["box_deltas"], var).numpy()
    return keras.ops.sigmoid(out["cls_logits"]).numpy(), boxes, out["box_deltas"].numpy() * var


def inside(boxes):
    """Boxes clipped to the image, and which of them still have an area (are in the image)."""
    clipped = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4), 0, SIZE)
    return clipped, (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])


def canonical(boxes, scores, labels):
    """Detections in one order independent of how ties were listed: by score, label, box."""
    order = np.lexsort((*np.round(boxes, 2).T[::-1], labels, -np.round(scores, 5)))
    return boxes[order], scores[order], labels[order]


def assert_same_detections(ours, theirs, n_images):
    """``ours``: detect.predict Results; ``theirs``: the source's predict() dict (xyxy).

    Both sides with a cap above their counts. keras' padded NMS treats a box with no
    positive coordinate as padding and drops it; detect clips every box to the image. So
    the detections compared are those that overlap the image, on both sides."""
    found = 0
    for b in range(n_images):
        n = int(theirs["num_detections"][b])
        assert n < 1000
        labels = theirs["labels"] if "labels" in theirs else theirs["classes"]
        tb, t_in = inside(theirs["boxes"][b, :n])
        t = canonical(tb[t_in], np.asarray(theirs["confidence"][b, :n])[t_in],
                      np.asarray(labels[b, :n]).astype(int)[t_in])
        d = ours[b]
        ob, o_in = inside(d.boxes)
        o = canonical(ob[o_in], d.scores[o_in], d.labels[o_in])
        np.testing.assert_allclose(o[0], t[0], atol=2e-3)
        np.testing.assert_allclose(o[1], t[1], atol=1e-5)
        np.testing.assert_array_equal(o[2], t[2])
        found += int(t_in.sum())
    assert found > 4  # the comparison saw real detections


def masked_boxes(ours, theirs, deltas):
    """Decoded boxes where detect's decode does not clamp the size (|dw|, |dh| * var <= log 62.5)."""
    ok = np.abs(deltas[..., 2:]).max(-1) < box_coder.MAX_LOG_SIZE_RATIO
    assert ok.mean() > 0.5
    return ours[ok], np.asarray(theirs)[ok]


# ---- keras-hub -------------------------------------------------------------------

@pytest.fixture(scope="module")
def hub_preset(tmp_path_factory):
    hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    enc = hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 16, 32, 32],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=False)
    # the non-default options: P6 from C5, GroupNorm heads, 2 head convs
    bb = hub.models.RetinaNetBackbone(image_encoder=enc, min_level=3, max_level=7, use_p5=True)
    converter = hub.layers.RetinaNetImageConverter(image_size=(SIZE, SIZE), scale=[1 / 58.0, 1 / 57.0, 1 / 57.5],
                                                   offset=[-2.1, -2.0, -1.8])
    det = hub.models.RetinaNetObjectDetector(
        backbone=bb, num_classes=3, bounding_box_format="xyxy", use_prediction_head_norm=True,
        pre_logits_num_conv_layers=2,
        preprocessor=hub.models.RetinaNetObjectDetectorPreprocessor(image_converter=converter))
    det.compile(optimizer=keras.optimizers.Adam(1e-3))
    det.fit(TRAIN_X, {"boxes": TRAIN_BOXES, "labels": TRAIN_LABELS}, epochs=3, batch_size=4, verbose=0)
    det.prediction_decoder = hub.layers.NonMaxSuppression(
        bounding_box_format="xyxy", from_logits=True, confidence_threshold=0.3, iou_threshold=0.5)
    folder = tmp_path_factory.mktemp("hub") / "preset"
    det.save_to_preset(str(folder))
    return folder, det, converter


def test_keras_hub_parity(hub_preset, tmp_path):
    folder, det, converter = hub_preset
    model = import_detector(str(folder))
    c = model.model_config
    assert (c.anchors.convention, c.p6_from, c.head_norm, c.head_convs) == ("keras_hub", "c5", "group", 2)
    assert c.postprocess.agnostic and not c.postprocess.clip_boxes and c.input.tile == SIZE
    assert c.postprocess.drop_nonpositive  # the padded NMS's rule (see test_postprocess)
    theirs = det(converter(IMAGES))  # raw outputs, on the converter's x * scale + offset
    probs, boxes, deltas = ours_decoded(model, IMAGES)
    order = hub_anchor_order(model, probs.shape[1])
    anchors = np.concatenate([np.asarray(v) for v in det.anchor_generator(IMAGES).values()])
    their_boxes = keras.utils.bounding_boxes.decode_deltas_to_boxes(
        anchors=anchors, boxes_delta=theirs["bbox_regression"], encoded_format="center_xywh",
        anchor_format="xyxy", box_format="xyxy", image_shape=(SIZE, SIZE, 3))
    their_probs = keras.ops.sigmoid(theirs["cls_logits"]).numpy()[:, order]
    assert their_probs.std() > 0.01  # trained: not uniform
    np.testing.assert_allclose(probs, their_probs, atol=2e-5)
    np.testing.assert_allclose(*masked_boxes(boxes, np.asarray(their_boxes)[:, order], deltas), rtol=1e-4, atol=2e-3)
    det.prediction_decoder = type(det.prediction_decoder)(
        bounding_box_format="xyxy", from_logits=True, confidence_threshold=0.3, max_detections=1000)
    # keras-hub's own decoder on its own outputs, run eagerly: its predict() (the same decoder
    # under tf.function) returned fewer boxes than its eager decoder on these weights
    x = converter(IMAGES)
    theirs = det.decode_predictions(det(x), x)
    assert_same_detections(detect.predict(model, IMAGES, max_detections=1000), theirs, 2)
    # saved and reloaded without the preset
    model.save(tmp_path / "m.keras")
    again = detect.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(again(IMAGES)["cls_logits"], model(IMAGES)["cls_logits"])


def test_import_cli_classes_and_bad_inputs(hub_preset, tmp_path, capsys):
    folder, det, _ = hub_preset
    names = tmp_path / "names.txt"
    names.write_text("tree\nbuilding\ncar\n")
    out = tmp_path / "imported.keras"
    assert main(["import", str(folder), "--out", str(out), "--classes", str(names)]) == 0
    assert "keras-hub RetinaNet" in capsys.readouterr().out
    assert detect.load_model(out).class_names == ("tree", "building", "car")
    # a classes file of another length: one line naming both counts, nothing written
    names.write_text("tree\nbuilding\n")
    bad_out = tmp_path / "bad.keras"
    assert main(["import", str(folder), "--out", str(bad_out), "--classes", str(names)]) == 2
    assert "2 class names, but the source has 3 classes" in capsys.readouterr().err
    assert not bad_out.exists()
    # a bare backbone preset (no detection heads)
    hub = pytest.importorskip("keras_hub")
    det.backbone.image_encoder.save_to_preset(str(tmp_path / "bare"))
    with pytest.raises(ValueError, match="bare backbone"):
        import_detector(str(tmp_path / "bare"))
    # a .keras that is not a model, and one that is another kind of model
    (tmp_path / "junk.keras").write_text("not a zip")
    with pytest.raises(ValueError, match="not a Keras model file"):
        import_detector(str(tmp_path / "junk.keras"))
    inp = keras.Input((4,))
    keras.Model(inp, keras.layers.Dense(2)(inp)).save(tmp_path / "dense.keras")
    with pytest.raises(ValueError, match="holds a Functional"):
        import_detector(str(tmp_path / "dense.keras"))
    # a classifier preset
    clf = hub.models.ImageClassifier(backbone=det.backbone.image_encoder, num_classes=2)
    clf.save_to_preset(str(tmp_path / "clf"))
    with pytest.raises(ValueError, match="preset of a ImageClassifier"):
        import_detector(str(tmp_path / "clf"))


def test_preset_name_offline_fails_fast_with_the_way_out():
    pytest.importorskip("keras_hub")
    with pytest.raises(ValueError, match="(?s)retinanet_resnet50_fpn_coco.*needs the network.*save_to_preset"):
        import_detector("retinanet_resnet50_fpn_coco")


def test_init_from_an_imported_source(hub_preset, tmp_path):
    """``detect train --init-from PRESET``: imported, then trained on the data's classes."""
    folder, _, _ = hub_preset
    ann = make_synthetic.make_dataset(tmp_path / "data", images=4, size=64, seed=2)
    names = [c["name"] for c in sorted(json.loads(Path(ann).read_text())["categories"], key=lambda c: c["id"])]
    run = tmp_path / "run"
    code = main(["train", "--train-ann", str(ann), "--train-images", str(tmp_path / "data" / "images"),
                 "--out", str(run), "--init-from", str(folder), "--set", "train.epochs=1",
                 "--set", "train.batch_size=2", "--set", "data.image_size=64"])
    assert code == 0
    model = detect.load_model(run / "model.keras")
    assert model.class_names == tuple(names)
    assert model.model_config.anchors.convention == "keras_hub"
    assert yaml.safe_load((run / "run.yaml").read_text())["init_from"] == str(folder.resolve())


# ---- keras-cv --------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras_cv_model():
    cv = pytest.importorskip("keras_cv")
    keras.utils.set_random_seed(0)
    bb = cv.models.ResNetBackbone(stackwise_filters=[8, 16, 32, 64], stackwise_blocks=[1, 1, 1, 1],
                                  stackwise_strides=[1, 2, 2, 2], include_rescaling=True,
                                  input_shape=(None, None, 3))
    m = cv.models.RetinaNet(num_classes=3, bounding_box_format="xyxy", backbone=bb)
    m.compile(optimizer=keras.optimizers.Adam(2e-3), box_loss="smoothl1", classification_loss="focal")
    m.fit(TRAIN_X, {"boxes": TRAIN_BOXES, "classes": TRAIN_LABELS.astype(np.float32)}, epochs=3, verbose=0)
    # keras-cv 0.9's fit on Keras 3 barely moves the class logits from the prior in 3 steps:
    # spread the prediction layers so that scores vary and detections pass the threshold
    rng = np.random.default_rng(1)
    for layer, bias in ((m.classification_head.prediction_layer, 3.0), (m.box_head.prediction_layer, 0.0)):
        kernel, b = layer.get_weights()
        layer.set_weights([kernel + rng.normal(0, 0.02, kernel.shape), b + bias + rng.normal(0, 0.3, b.shape)])
    return cv, m


@pytest.mark.parametrize("per_class", [False, True])
def test_keras_cv_parity(keras_cv_model, tmp_path, per_class):
    cv, m = keras_cv_model
    kind = cv.layers.MultiClassNonMaxSuppression if per_class else cv.layers.NonMaxSuppression
    m.prediction_decoder = kind(bounding_box_format="xyxy", from_logits=True, confidence_threshold=0.2)
    m.save(tmp_path / "cv.keras")
    src = keras.saving.load_model(tmp_path / "cv.keras")
    model = import_detector(str(tmp_path / "cv.keras"))
    c = model.model_config
    assert c.anchors.clip and c.postprocess.agnostic == (not per_class) and c.input_normalization == "raw"
    assert c.postprocess.drop_nonpositive == (not per_class)  # TF's padded NMS only in NonMaxSuppression
    theirs = src(IMAGES)
    probs, boxes, deltas = ours_decoded(model, IMAGES)
    assert np.asarray(keras.ops.sigmoid(theirs["classification"])).std() > 0.01
    np.testing.assert_allclose(probs, keras.ops.sigmoid(theirs["classification"]).numpy(), atol=2e-5)
    from keras_cv.src.bounding_box.converters import _decode_deltas_to_boxes

    anchors = np.concatenate([np.asarray(v) for v in src.anchor_generator(image_shape=(SIZE, SIZE, 3)).values()])
    their_boxes = _decode_deltas_to_boxes(anchors=anchors, boxes_delta=theirs["box"], anchor_format="xyxy",
                                          box_format="xyxy", variance=[0.1, 0.1, 0.2, 0.2],
                                          image_shape=(SIZE, SIZE, 3))
    np.testing.assert_allclose(*masked_boxes(boxes, their_boxes, deltas), rtol=1e-4, atol=2e-3)
    per_class_cap = {"max_detections_per_class": 1000} if per_class else {}
    src.prediction_decoder = kind(bounding_box_format="xyxy", from_logits=True, confidence_threshold=0.2,
                                  max_detections=1000, **per_class_cap)
    # the source decoder's threshold, below predict's default for an uncalibrated model (0.3)
    assert_same_detections(detect.predict(model, IMAGES, max_detections=1000, score_threshold=0.2),
                           src.predict(IMAGES, verbose=0), 2)
