#!/usr/bin/env python
"""Throughput of detect's ResNet-50-FPN RetinaNet (random weights), in one run.

- inference: images/second at 640x640, batch 1 and 8, post-processing (decode
  + NMS) included, through ``model.predict_on_batch``;
- training: images/second of ``train_step`` at 512x512, batch 2;
- ``--peer keras-hub``: the same measurements for keras_hub's
  RetinaNetObjectDetector with the same ResNet-50 depth and input size
  (``pip install -e ".[bench]"``), and the ratio ours / peer.
- ``--jit``: also time ours with XLA (``jit_compile=True``).
- ``--imported``: end to end on the COCO preset's architecture (ResNet-50-FPN,
  91 classes, random weights): keras-hub's ``predict()`` versus ``detect
  predict`` on the model ``detect import`` makes of it (saved as a preset
  folder first), at 512 and 800 px, decode and NMS included on both sides,
  and whether the detections are the same. Two regimes: trained-like
  outputs (the classification bias shifted so that about ``--above`` anchors
  per image score above 0.5, box deltas scaled to ~0.1: what a trained
  detector does on a typical image; keras-hub's NMS then walks every tile
  of anchors), and the raw random model (thousands above 0.5, boxes far
  outside the image; keras-hub's NMS stops early at 100).

Each figure is the median of ``--repeats`` timed calls after warm-up. Only
ratios from the same run mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from detect.models import build_retinanet  # noqa: E402


def _median_seconds(fn, repeats: int) -> float:
    fn()  # trace / compile
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _numpy(tree):
    return tf.nest.map_structure(np.asarray, tree)


def predict_step_fn(model, jit, with_y=False):
    """The model's own predict_step (network + decode + NMS) in one tf.function."""
    if with_y:  # keras-hub's predict_step unpacks (images, y)
        return tf.function(lambda x: model.predict_step((x, None)), jit_compile=jit)
    return tf.function(model.predict_step, jit_compile=jit)


def _targets(batch, rng, size):
    xy = rng.uniform(0, size - 100, (batch, 8, 2))
    wh = rng.uniform(20, 100, (batch, 8, 2))
    boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    labels = rng.integers(0, 80, (batch, 8)).astype(np.int32)
    return boxes, labels


def _measure(model, predict, train_jit: bool, repeats: int) -> dict[str, float]:
    """images/s of ``predict`` at 640x640 (b1, b8) and of train_step at 512x512 b2."""
    rng = np.random.default_rng(0)
    out = {}
    for batch in (1, 8):
        x = tf.constant(rng.uniform(0, 255, (batch, 640, 640, 3)).astype(np.float32))
        out[f"infer_640_b{batch}"] = batch / _median_seconds(lambda x=x: _numpy(predict(x)), repeats)
    boxes, labels = _targets(2, rng, 512)
    x = tf.constant(rng.uniform(0, 255, (2, 512, 512, 3)).astype(np.float32))
    y = {"boxes": tf.constant(boxes), "labels": tf.constant(labels)}
    train = tf.function(lambda x, y: model.train_step((x, y)), jit_compile=train_jit)
    out["train_512_b2"] = 2 / _median_seconds(lambda: _numpy(train(x, y)), repeats)
    return out


def bench_ours(args, jit: bool) -> dict[str, float]:
    model = build_retinanet(num_classes=80, backbone="resnet50")
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit)
    return _measure(model, predict_step_fn(model, jit), jit, args.repeats)


def bench_keras_hub(args) -> dict[str, float]:
    import keras_hub

    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[3, 4, 6, 3],
        stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
        use_pre_activation=False, image_shape=(None, None, 3))
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder, min_level=3, max_level=7, use_p5=False)
    model = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=80, bounding_box_format="xyxy")
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=False)
    return _measure(model, predict_step_fn(model, False, with_y=True), False, args.repeats)


def _hub_coco_architecture(size: int):
    """keras-hub's retinanet_resnet50_fpn_coco architecture, random weights, converter at ``size``."""
    import keras_hub

    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[3, 4, 6, 3],
        stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
        use_pre_activation=False, image_shape=(None, None, 3))
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=encoder, min_level=3, max_level=7, use_p5=False)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    converter = keras_hub.layers.RetinaNetImageConverter(
        image_size=(size, size), scale=list(1 / (255 * std)), offset=list(-mean / std))
    return keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=91, bounding_box_format="xyxy",
        preprocessor=keras_hub.models.RetinaNetObjectDetectorPreprocessor(image_converter=converter))


def _trained_like(hub_model, images, per_image: int) -> None:
    """Make the random model's outputs look like a trained detector's on these images:
    about ``per_image`` anchors per image score above keras-hub's 0.5 threshold (the
    classification bias shifted), and box deltas of ~0.1 (the regression layer scaled),
    so boxes stay near their anchors, inside the image.

    A random-weight model's outputs are large noise: left alone, thousands of anchors
    pass 0.5 and boxes land far outside the image, a regime no trained model is in
    (keras-hub's NMS then stops early at 100 boxes, and treats boxes with no positive
    coordinate as padding). Both sides get the same weights."""
    x = hub_model.preprocessor.image_converter(images)
    out = hub_model(x, training=False)
    best = np.sort(np.asarray(out["cls_logits"]).max(axis=2), axis=1)[:, ::-1]  # per image
    shift = -float(np.median(best[:, per_image - 1] + best[:, per_image]) / 2)
    layer = hub_model.classification_head.prediction_layer
    layer.bias.assign(layer.bias + shift)
    scale = 0.1 / float(np.std(np.asarray(out["bbox_regression"])))
    layer = hub_model.box_head.prediction_layer
    layer.kernel.assign(layer.kernel * scale)
    layer.bias.assign(layer.bias * scale)


def _compare_at(size: int, args, rng, per_image: int | None) -> str:
    """One row of :func:`bench_imported`: keras-hub predict() vs detect.predict at ``size``."""
    import tempfile

    import detect
    from detect.models.importers import import_detector

    hub_model = _hub_coco_architecture(size)
    images = rng.uniform(0, 255, (args.images, size, size, 3)).astype(np.float32)
    if per_image:
        _trained_like(hub_model, images, per_image)
    with tempfile.TemporaryDirectory() as tmp:
        hub_model.save_to_preset(tmp)
        ours = import_detector(tmp, verbose=False)
    out = {}
    t_hub = _median_seconds(lambda: out.update(hub=hub_model.predict(images, batch_size=1, verbose=0)),
                            args.repeats)
    t_ours = _median_seconds(lambda: out.update(ours=detect.predict(ours, images, batch_size=1)), args.repeats)
    n_hub = [int(n) for n in out["hub"]["num_detections"]]
    n_ours = [len(d) for d in out["ours"]]
    same = n_hub == n_ours and all(
        np.allclose(np.sort(np.clip(out["hub"]["boxes"][i, :n], 0, size), axis=0), np.sort(d.boxes, axis=0),
                    atol=1e-2)
        for i, (n, d) in enumerate(zip(n_hub, out["ours"])))
    regime = f"~{per_image} above 0.5" if per_image else "raw random"
    return (f"{regime:<16}{size:>6}{args.images / t_hub:>18.3f}{args.images / t_ours:>15.3f}"
            f"{t_hub / t_ours:>7.2f}x{f'{sum(n_hub)} / {sum(n_ours)}':>28}{'yes' if same else 'NO':>6}")


def bench_imported(args) -> None:
    """keras-hub predict() vs detect.predict on the imported model (see module doc)."""
    print(f"\n{'regime':<16}{'size':>6}{'keras-hub img/s':>18}{'detect img/s':>15}{'ratio':>8}"
          f"{'detections (hub / detect)':>28}{'same':>6}")
    for per_image in (args.above, None):
        for size in (512, 800):
            print(_compare_at(size, args, np.random.default_rng(0), per_image), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer", choices=["keras-hub"], help="also measure a peer implementation")
    p.add_argument("--jit", action="store_true", help="also measure ours with jit_compile=True")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--imported", action="store_true",
                   help="only the end-to-end comparison with keras-hub's predict() on an imported model")
    p.add_argument("--images", type=int, default=4, help="images per timed call for --imported")
    p.add_argument("--above", type=int, default=20,
                   help="--imported: anchors per image made to score above 0.5 (a trained "
                   "detector's regime; the random model's raw regime is measured too)")
    args = p.parse_args()
    if args.imported:
        bench_imported(args)
        return

    rows = {"detect": bench_ours(args, jit=False)}
    print("detect:", rows["detect"], flush=True)
    if args.jit:
        rows["detect (XLA)"] = bench_ours(args, jit=True)
    if args.peer == "keras-hub":
        rows["keras-hub"] = bench_keras_hub(args)
    keys = ["infer_640_b1", "infer_640_b8", "train_512_b2"]
    print(f"\n{'images/second':<16}" + "".join(f"{k:>16}" for k in keys))
    for name, r in rows.items():
        print(f"{name:<16}" + "".join(f"{r[k]:>16.3f}" for k in keys))
    if "keras-hub" in rows:
        print(f"{'ratio ours/peer':<16}" + "".join(
            f"{rows['detect'][k] / rows['keras-hub'][k]:>15.2f}x" for k in keys))


if __name__ == "__main__":
    main()
