#!/usr/bin/env python
"""Time detect's ops against TensorFlow's built-ins in one run.

- ``batched_nms`` vs ``tf.image.combined_non_max_suppression`` (clip_boxes=False)
  on a RetinaNet-like post-processing load, after checking both keep exactly
  the same detections;
- ``pairwise_iou`` and anchor generation at 1024 x 1024;
- the training matcher (``assign_targets``) on a CPU recipe's batch (4 crops of
  256 px, P2-P4, 9 anchors a cell, 60 objects a crop) with the general IoU and
  with the anchor grid's IoU (``AnchorGenerator.pairwise_iou``), after checking
  both give the same targets.

Times are medians over repeats, each op inside a ``tf.function`` and warmed up
first; the two NMS take turns in five rounds of --repeats back-to-back calls (see
``block_medians``). Only ratios measured in the same run are meaningful on a
shared machine.

    python tools/benchmark_ops.py [--batch 8] [--boxes 50000] [--classes 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from detect.ops.anchors import AnchorGenerator  # noqa: E402
from detect.ops.boxes import pairwise_iou  # noqa: E402
from detect.ops.matcher import assign_targets  # noqa: E402
from detect.ops.nms import batched_nms  # noqa: E402


def call_times(fn, *args, repeats: int) -> list[float]:
    """Seconds of ``repeats`` back-to-back calls of ``fn``, outputs fetched to NumPy."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, fn(*args))
        times.append(time.perf_counter() - t0)
    return times


def median_time(fn, *args, repeats: int) -> float:
    fn(*args)  # trace / compile
    return statistics.median(call_times(fn, *args, repeats=repeats))


def retinanet_like_load(rng, batch, n, k, *, dense: bool, image=1024.0):
    """Candidate boxes clustered around objects.

    sparse: scores look like a well-trained RetinaNet's: almost all far below
      0.05, a few hundred (box, class) pairs per image above it, so pre-NMS
      top-k is not binding.
    dense: like an under-trained model or a low threshold: tens of thousands
      of pairs per image above 0.05, so pre-NMS top-k does the real cut.
    """
    num_obj = 60
    centres = rng.uniform(50, image - 50, size=(batch, num_obj, 2))
    owner = rng.integers(0, num_obj, size=(batch, n))
    c = np.take_along_axis(centres, owner[..., None], 1) + rng.normal(0, 8, (batch, n, 2))
    wh = rng.uniform(16, 96, size=(batch, n, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], -1).astype(np.float32)
    if dense:
        scores = (rng.uniform(0, 1, (batch, n, k)) ** 30).astype(np.float32)
    else:
        scores = rng.uniform(0, 0.04, (batch, n, k)).astype(np.float32)  # background noise
    obj_class = rng.integers(0, k, size=(batch, num_obj))
    cls = np.take_along_axis(obj_class, owner, 1)
    strong = rng.uniform(0, 1, (batch, n)) < 0.01  # 1% of boxes fire on their class
    bi, ni = np.nonzero(strong)
    scores[bi, ni, cls[bi, ni]] = rng.uniform(0.05, 1.0, size=len(bi))
    return tf.constant(boxes), tf.constant(scores)


def block_medians(fns, *args, repeats: int, rounds: int = 5) -> list[float]:
    """Each function's time: the median over ``rounds`` of the median of ``repeats``
    back-to-back calls, the functions taking turns round by round, so that a burst of load
    on a shared machine shifts one round of each, not one function's whole measurement.
    Back-to-back calls measure steady throughput (caches and threads warm, as right after
    a network's forward pass); after ~50 ms idle every call is slower (see the README)."""
    for fn in fns:
        fn(*args)  # trace / compile
    rounds_of = [[] for _ in fns]
    for _ in range(rounds):
        for fn, medians in zip(fns, rounds_of):
            medians.append(statistics.median(call_times(fn, *args, repeats=repeats)))
    return [statistics.median(m) for m in rounds_of]


def same_detections(ours, theirs) -> bool:
    for b in range(ours.num_detections.shape[0]):
        n = int(ours.num_detections[b])
        if n != int(theirs.valid_detections[b]):
            return False
        a = np.concatenate([ours.boxes[b, :n], ours.scores[b, :n, None],
                            tf.cast(ours.labels[b, :n, None], tf.float32)], 1)
        t = np.concatenate([theirs.nmsed_boxes[b, :n], theirs.nmsed_scores[b, :n, None],
                            theirs.nmsed_classes[b, :n, None]], 1)
        if not np.allclose(a[np.lexsort(a.T)], t[np.lexsort(t.T)], atol=1e-5):
            return False
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--boxes", type=int, default=50_000, help="candidate boxes per image")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--top-k", type=int, default=1000, help="pre-NMS top-k")
    p.add_argument("--max-detections", type=int, default=100)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()

    rng = np.random.default_rng(0)
    ours_fn = tf.function(lambda b, s: batched_nms(
        b, s, iou_threshold=0.5, score_threshold=0.05,
        max_detections=args.max_detections, pre_nms_top_k=args.top_k))
    tf_fn = tf.function(lambda b, s: tf.image.combined_non_max_suppression(
        b[:, :, None, :], s, max_output_size_per_class=args.max_detections,
        max_total_size=args.max_detections, iou_threshold=0.5, score_threshold=0.05,
        clip_boxes=False))
    all_same = True
    for load in ("sparse", "dense"):
        boxes, scores = retinanet_like_load(rng, args.batch, args.boxes, args.classes,
                                            dense=load == "dense")
        above = int(tf.reduce_sum(tf.cast(scores > 0.05, tf.int32))) / args.batch
        print(f"\n{load} load: batch {args.batch}, {args.boxes} boxes x {args.classes} classes, "
              f"{above:.0f} pairs/image above score 0.05, pre-NMS top-k {args.top_k}")
        # When top-k binds, combined_nms (which has no top-k) sees more candidates;
        # the kept detections still agree unless a pair outside our top-k would
        # have made the final max_detections.
        same = same_detections(ours_fn(boxes, scores), tf_fn(boxes, scores))
        all_same &= same
        print(f"  same detections as combined_non_max_suppression: {same}")
        t_ours, t_tf = block_medians([ours_fn, tf_fn], boxes, scores, repeats=args.repeats)
        print(f"  batched_nms                      {t_ours * 1e3:8.2f} ms")
        print(f"  tf.image.combined_nms            {t_tf * 1e3:8.2f} ms")
        print(f"  speed-up (combined / ours)       {t_tf / t_ours:8.2f} x")
    print()

    a = tf.constant(rng.uniform(0, 1000, (args.batch, 1000, 4)).astype(np.float32))
    a = tf.concat([tf.minimum(a[..., :2], a[..., 2:]), tf.maximum(a[..., :2], a[..., 2:])], -1)
    for jit in (False, True):
        f = tf.function(lambda x: pairwise_iou(x, x), jit_compile=jit)
        t_iou = median_time(f, a, repeats=args.repeats)
        print(f"pairwise_iou [{args.batch},1000,4]^2 jit={jit!s:5}  {t_iou * 1e3:8.2f} ms")

    def fresh_anchors():
        return AnchorGenerator()((1024, 1024))

    t_anc = median_time(fresh_anchors, repeats=args.repeats)
    gen = AnchorGenerator()
    gen((1024, 1024))
    t_cached = median_time(lambda: gen((1024, 1024)), repeats=args.repeats)
    n = gen.num_anchors((1024, 1024))
    print(f"anchors 1024x1024 ({n} anchors)  {t_anc * 1e3:8.2f} ms uncached, "
          f"{t_cached * 1e6:.1f} us cached")
    all_same &= time_matcher(rng, args.repeats)
    if not all_same:
        raise SystemExit("detections or targets differ between the paths compared")


def time_matcher(rng, repeats: int) -> bool:
    """The matcher with the general and the grid IoU: same targets? times and ratio."""
    gen, size = AnchorGenerator(min_level=2, max_level=4, anchor_size=2, num_scales=3), (256, 256)
    anchors = gen(size)
    xy = rng.uniform(0, 226, (4, 60, 2))
    boxes = tf.constant(np.concatenate([xy, xy + rng.uniform(6, 30, (4, 60, 2))], -1), tf.float32)
    labels = tf.constant(rng.integers(0, 2, (4, 60)), tf.int32)
    kw = dict(positive_iou=0.5, negative_iou=0.4, allow_low_quality_matches=True, variances=(0.1, 0.1, 0.2, 0.2))
    general = tf.function(lambda b, lab: assign_targets(anchors, b, lab, **kw))
    grid = tf.function(lambda b, lab: assign_targets(
        anchors, b, lab, **kw, anchor_iou=lambda bx, v: gen.pairwise_iou(size, bx, v)))
    same = all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(general(boxes, labels), grid(boxes, labels)))
    t_general, t_grid = block_medians([general, grid], boxes, labels, repeats=repeats)
    print(f"\nmatcher, 4 x 256 px crops, {anchors.shape[0]} anchors, 60 objects each; same targets: {same}")
    print(f"  general IoU                      {t_general * 1e3:8.2f} ms")
    print(f"  anchor-grid IoU                  {t_grid * 1e3:8.2f} ms")
    print(f"  speed-up                         {t_general / t_grid:8.2f} x")
    return same


if __name__ == "__main__":
    main()
