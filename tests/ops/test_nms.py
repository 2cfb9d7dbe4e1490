import numpy as np
import pytest
import tensorflow as tf

from detect.ops.nms import batched_nms
from tests.conftest import random_boxes
from tests.ops.test_boxes import np_iou

#: The ModelConfig's post-processing defaults; a test passes what it varies.
NMS = dict(iou_threshold=0.5, score_threshold=0.05, max_detections=100, pre_nms_top_k=1000)


def nms(boxes, scores, **kw):
    return batched_nms(boxes, scores, **{**NMS, **kw})


def reference_nms(boxes, scores, iou_thr, score_thr, max_det, top_k):
    """Pure-Python greedy, class-aware NMS for one image. Returns [(box_idx, cls, score)]."""
    pairs = [(scores[n, c], n, c) for n in range(len(boxes)) for c in range(scores.shape[1])]
    pairs.sort(key=lambda p: -p[0])
    pairs = [p for p in pairs[:top_k] if p[0] > score_thr]
    iou = np_iou(boxes, boxes)
    kept = []
    for s, n, c in pairs:
        if all(not (kc == c and iou[kn, n] > iou_thr) for _, kn, kc in kept):
            kept.append((s, n, c))
    return [(n, c, s) for s, n, c in kept[:max_det]]


def clustered_case(rng, b, n, k):
    """Boxes in tight clusters so that most pairs overlap heavily."""
    centres = rng.uniform(50, 250, size=(b, 6, 2))
    pick = rng.integers(0, 6, size=(b, n))
    c = np.take_along_axis(centres, pick[..., None], axis=1) + rng.normal(0, 6, size=(b, n, 2))
    wh = rng.uniform(20, 40, size=(b, n, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], -1).astype(np.float32)
    scores = rng.uniform(0, 1, size=(b, n, k)).astype(np.float32)
    return boxes, scores


@pytest.mark.parametrize("iou_thr", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("top_k", [150, 60])  # 80 boxes above the threshold: gathered, pooled
def test_matches_python_reference(rng, iou_thr, top_k):
    boxes, scores = clustered_case(rng, 3, 80, 4)
    r = nms(boxes, scores, iou_threshold=iou_thr, score_threshold=0.2,
                    max_detections=50, pre_nms_top_k=top_k)
    for b in range(3):
        ref = reference_nms(boxes[b], scores[b], iou_thr, 0.2, 50, top_k)
        n = int(r.num_detections[b])
        assert n == len(ref) and n > 5
        np.testing.assert_allclose(r.boxes[b, :n], boxes[b, [p[0] for p in ref]])
        np.testing.assert_array_equal(r.labels[b, :n], [p[1] for p in ref])
        np.testing.assert_allclose(r.scores[b, :n], [p[2] for p in ref])
        # padding rows
        np.testing.assert_array_equal(r.labels[b, n:], -1)
        np.testing.assert_array_equal(r.scores[b, n:], 0.0)


def test_matches_tf_image_nms_per_image_and_class(rng):
    boxes, scores = clustered_case(rng, 2, 200, 3)
    r = nms(boxes, scores, iou_threshold=0.5, score_threshold=0.0,
                    max_detections=600, pre_nms_top_k=600)
    for b in range(2):
        ours = set()
        n = int(r.num_detections[b])
        for box, lab in zip(r.boxes[b, :n].numpy(), r.labels[b, :n].numpy()):
            ours.add((int(lab), tuple(np.round(box, 4))))
        theirs = set()
        for c in range(3):
            idx = tf.image.non_max_suppression(boxes[b][:, [1, 0, 3, 2]], scores[b, :, c], 1000,
                                               iou_threshold=0.5, score_threshold=0.0).numpy()
            theirs |= {(c, tuple(np.round(boxes[b, i], 4))) for i in idx}
        assert ours == theirs
        assert 20 < len(ours) < 600  # real suppression happened


def test_class_aware_overlapping_boxes_of_different_classes_survive():
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 10.5]]], np.float32)
    scores = np.array([[[0.9, 0.0], [0.0, 0.8]]], np.float32)
    r = nms(boxes, scores, iou_threshold=0.5, score_threshold=0.05, max_detections=5)
    assert int(r.num_detections[0]) == 2
    np.testing.assert_array_equal(r.labels[0, :2], [0, 1])
    # same class: the lower one goes
    scores = np.array([[[0.9], [0.8]]], np.float32)
    r = nms(boxes, scores, iou_threshold=0.5, score_threshold=0.05, max_detections=5)
    assert int(r.num_detections[0]) == 1


def test_chain_suppression_is_greedy_not_one_pass():
    # A suppresses B, B would suppress C, but B is gone so C survives.
    boxes = np.array([[[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]]], np.float32)
    scores = np.array([[[0.9], [0.8], [0.7]]], np.float32)
    r = nms(boxes, scores, iou_threshold=0.4, score_threshold=0.0, max_detections=3)
    np.testing.assert_allclose(r.scores[0], [0.9, 0.7, 0.0])


def test_empty_and_all_below_threshold():
    r = nms(np.zeros([2, 0, 4], np.float32), np.zeros([2, 0, 3], np.float32),
                    max_detections=7)
    assert r.boxes.shape == (2, 7, 4)
    np.testing.assert_array_equal(r.num_detections, [0, 0])
    r = nms(np.ones([1, 4, 4], np.float32), np.full([1, 4, 2], 0.01, np.float32),
                    score_threshold=0.05, max_detections=3)
    np.testing.assert_array_equal(r.num_detections, [0])
    np.testing.assert_array_equal(r.labels, -1)


def test_nan_scores_and_boxes_are_dropped():
    boxes = np.array([[[0, 0, 10, 10], [np.nan, 0, 10, 10], [20, 20, 30, 30]]], np.float32)
    scores = np.array([[[np.nan], [0.9], [0.5]]], np.float32)
    r = nms(boxes, scores, score_threshold=0.05, max_detections=3)
    assert int(r.num_detections[0]) == 1
    np.testing.assert_allclose(r.boxes[0, 0], [20, 20, 30, 30])


@pytest.mark.parametrize("top_k", [1000, 2])  # gathered route, pooled route (3 boxes above 2)
def test_a_nan_score_is_never_kept_and_leaves_other_boxes_alone(top_k):
    """A NaN pair never becomes a detection, whichever candidate route; boxes without NaN
    keep exactly their detections. (Whether the NaN box's other classes survive depends
    on the backend's maximum, see ``_scan``; both outcomes are accepted here.)"""
    boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]]], np.float32)
    scores = np.array([[[np.nan, 0.9], [0.8, np.nan], [0.7, 0.01], [0.02, 0.6]]], np.float32)
    r = nms(boxes, scores, pre_nms_top_k=top_k, max_detections=10)
    got = {(tuple(r.boxes[0, i].numpy()), int(r.labels[0, i]), float(r.scores[0, i]))
           for i in range(int(r.num_detections[0]))}
    assert all(np.isfinite(s) for *_, s in got)
    clean = {((40.0, 40.0, 50.0, 50.0), 0, np.float32(0.7)), ((60.0, 60.0, 70.0, 70.0), 1, np.float32(0.6))}
    if top_k == 1000:
        assert clean <= got
    assert got - clean <= {((0.0, 0.0, 10.0, 10.0), 1, np.float32(0.9)),
                           ((20.0, 20.0, 30.0, 30.0), 0, np.float32(0.8))}


def test_max_detections_and_top_k_truncate(rng):
    boxes = random_boxes(rng, (1, 50), extent=5000, max_size=10)  # disjoint-ish
    scores = rng.uniform(0.5, 1, (1, 50, 1)).astype(np.float32)
    r = nms(boxes, scores, max_detections=10, pre_nms_top_k=1000)
    assert int(r.num_detections[0]) == 10
    np.testing.assert_allclose(r.scores[0], np.sort(scores[0, :, 0])[::-1][:10])
    r = nms(boxes, scores, max_detections=10, pre_nms_top_k=4)
    assert int(r.num_detections[0]) == 4


@pytest.mark.parametrize("vote_iou", [0.0, 0.6])  # box voting compiles too
def test_xla_compilable(rng, vote_iou):
    boxes, scores = clustered_case(rng, 2, 40, 3)
    kw = dict(iou_threshold=0.5, score_threshold=0.1, max_detections=20, pre_nms_top_k=60, vote_iou=vote_iou)
    f = tf.function(lambda b, s: nms(b, s, static_shapes=True, **kw), jit_compile=True)
    got, want = f(boxes, scores), nms(boxes, scores, **kw)
    np.testing.assert_array_equal(got.num_detections, want.num_detections)
    np.testing.assert_array_equal(got.scores, want.scores)
    # plain NMS copies boxes; voting's weighted sums round in XLA's own order (measured: 2e-7 relative)
    np.testing.assert_allclose(got.boxes, want.boxes, rtol=1e-6 if vote_iou else 1e-7)


@pytest.mark.parametrize("static_shapes", [False, True])
@pytest.mark.parametrize("agnostic", [False, True])
def test_decode_only_the_candidates_equals_decoding_all(rng, static_shapes, agnostic):
    """``decode`` sees each candidate's own row and index: NMS over rows decoded on demand
    equals NMS over all boxes decoded first (here: rows are offsets from per-box origins,
    one of them NaN so validity is read from the decoded box)."""
    boxes, scores = clustered_case(rng, 2, 90, 3)
    scores[1, 7] = 0.99
    origin = rng.uniform(-20, 20, size=(90, 2)).astype(np.float32)
    rows = boxes - np.tile(origin, 2)[None]
    rows[1, 7] = np.nan

    def decode(r, idx):
        return r + tf.tile(tf.gather(origin, idx), [1, 1, 2])

    kw = dict(score_threshold=0.3, max_detections=40, pre_nms_top_k=100, static_shapes=static_shapes,
              agnostic=agnostic)
    got = nms(rows, scores, decode=decode, **kw)
    want = nms(np.where(np.isnan(rows), np.nan, boxes), scores, **kw)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
    assert not np.isclose(got.scores[1], 0.99).any() and int(got.num_detections[1]) > 3  # NaN box dropped


def reference_agnostic_nms(boxes, scores, iou_thr, score_thr, max_det):
    """Brute force: each box once, with its best class (lowest index on a tie) and score;
    greedy over all of them regardless of class."""
    best = scores.argmax(axis=1)
    top = scores.max(axis=1)
    order = sorted((i for i in range(len(boxes)) if top[i] > score_thr), key=lambda i: -top[i])
    iou = np_iou(boxes, boxes)
    kept = []
    for i in order:
        if all(iou[j, i] <= iou_thr for j in kept):
            kept.append(i)
    return [(i, int(best[i]), float(top[i])) for i in kept[:max_det]]


@pytest.mark.parametrize("iou_thr", [0.3, 0.6])
def test_agnostic_matches_brute_force(rng, iou_thr):
    boxes, scores = clustered_case(rng, 3, 90, 4)
    r = nms(boxes, scores, iou_threshold=iou_thr, score_threshold=0.3, max_detections=200, agnostic=True)
    aware = nms(boxes, scores, iou_threshold=iou_thr, score_threshold=0.3, max_detections=200)
    for b in range(3):
        ref = reference_agnostic_nms(boxes[b], scores[b], iou_thr, 0.3, 200)
        n = int(r.num_detections[b])
        assert n == len(ref) and n > 3
        np.testing.assert_allclose(r.boxes[b, :n], boxes[b, [p[0] for p in ref]])
        np.testing.assert_array_equal(r.labels[b, :n], [p[1] for p in ref])
        np.testing.assert_allclose(r.scores[b, :n], [p[2] for p in ref])
        # no two kept boxes overlap above the threshold, whatever their classes
        kept = r.boxes[b, :n].numpy()
        iou = np_iou(kept, kept) - np.eye(n)
        assert iou.max() <= iou_thr
        assert n < int(aware.num_detections[b])  # per class keeps more on the same boxes


def test_agnostic_one_label_per_object():
    # one object, two labels from the same box and a near-identical one: one detection, best class
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 10.5]]], np.float32)
    scores = np.array([[[0.6, 0.7], [0.9, 0.2]]], np.float32)
    r = nms(boxes, scores, iou_threshold=0.5, score_threshold=0.05, max_detections=5, agnostic=True)
    assert int(r.num_detections[0]) == 1
    assert int(r.labels[0, 0]) == 0 and float(r.scores[0, 0]) == pytest.approx(0.9)
    assert int(nms(boxes, scores, max_detections=5).num_detections[0]) == 2  # one per class


def test_exactly_tied_scores_are_visited_in_index_order(rng):
    """Scores from 3 values only: the tie rule (box index, then class) decides most suppressions.
    The reference's stable sort visits tied pairs in that order, as torchvision's NMS does."""
    boxes, _ = clustered_case(rng, 2, 120, 3)
    scores = rng.choice(np.float32([0.3, 0.6, 0.9]), size=(2, 120, 3))
    r = nms(boxes, scores, iou_threshold=0.4, score_threshold=0.2, max_detections=300, pre_nms_top_k=400)
    for b in range(2):
        ref = reference_nms(boxes[b], scores[b], 0.4, 0.2, 300, 400)
        n = int(r.num_detections[b])
        assert n == len(ref)
        np.testing.assert_allclose(r.boxes[b, :n], boxes[b, [p[0] for p in ref]])
        np.testing.assert_array_equal(r.labels[b, :n], [p[1] for p in ref])
    # and the first kept box of a tie: two identical boxes, equal scores -> the lower index
    two = np.float32([[[0, 0, 10, 10], [0, 0, 10, 10]]])
    r = nms(two, np.float32([[[0.5], [0.5]]]))
    assert int(r.num_detections[0]) == 1
    tie = nms(np.float32([[[0, 0, 10, 10], [1, 0, 11, 10]]]), np.float32([[[0.5], [0.5]]]))
    np.testing.assert_allclose(tie.boxes[0, 0], [0, 0, 10, 10])  # box 0 kept, box 1 suppressed


@pytest.mark.parametrize("num_classes", [1, 2, 6, 12])
def test_grid_of_whole_classes_equals_whole_problem(rng, num_classes):
    """NMS on the grid (whole classes packed in rows) keeps exactly what the single [k, k]
    problem over each image's pairs keeps: ties, a NaN box and an infinite score included."""
    from detect.ops.nms import _dense_keep, _grid, _grid_keep_jit, _size_bucket
    from detect.ops.nms_candidates import Pairs

    b, n = 3, 96
    boxes, _ = clustered_case(rng, b, n, 1)
    boxes[1, 5] = np.nan
    rows = []  # (class, image, box, score), one pair per box and class drawn
    for img in range(b):
        for box in range(n):
            for c in np.nonzero(rng.uniform(size=num_classes) < min(0.8, 1 / num_classes))[0]:
                rows.append((int(c), img, box, float(rng.choice([0.3, 0.6, 0.9]))))
    rows[7] = rows[7][:3] + (np.inf,)
    rows.sort(key=lambda r: r[:3])
    cls, image, box, score = (np.array(x) for x in zip(*rows))
    pairs = Pairs(tf.constant(image, tf.int32), tf.constant(box, tf.int32), tf.constant(cls, tf.int32),
                   tf.constant(score, tf.float32), None)
    grid, m = _grid(pairs, b, num_classes)
    assert int(tf.reduce_sum(grid[..., 3])) == len(rows)  # every pair placed once
    if num_classes == 12:  # several classes share a row
        assert grid.shape[1] // int(m) < num_classes
    cand = tf.gather(boxes, grid[..., 1], batch_dims=1)
    order, kept = _grid_keep_jit(grid, cand, tf.constant(0.4), num_classes, tf.zeros([m]))
    live = order.numpy() > np.iinfo(np.int64).min
    got = {(img, *grid[img, j, 1:3].numpy()) for img, j in zip(*np.nonzero(live))}
    np.testing.assert_array_equal(kept, live.sum(1))

    want = set()
    for img in range(b):
        mine = image == img
        cols = [tf.constant(x[mine][None]) for x in (box, cls, score)]
        valid = np.isfinite(score[mine]) & np.isfinite(boxes[img, box[mine]]).all(1)
        keep = _dense_keep(tf.gather(boxes[img], cols[0][0])[None], tf.cast(cols[1], tf.int32),
                           tf.constant(valid[None]), tf.cast(cols[2], tf.float32), tf.constant(0.4))
        want |= {(img, box[mine][j], cls[mine][j]) for j in np.nonzero(keep.numpy()[0])[0]}
    assert got == want
    assert 10 < len(want) < len(rows) - 10
    assert [int(_size_bucket(x, 16)) for x in (1, 17, 20, 21, 25, 33, 49, 65, 97, 129)] == \
        [16, 20, 20, 24, 32, 40, 64, 80, 128, 160]


def test_unknown_shapes_when_traced_give_the_same_detections(rng):
    """Traced with unknown batch, box count and class count (the dims are tensors then,
    the halves' split decided at run time), odd and even box counts, one image or three."""
    f = tf.function(lambda b, s: nms(b, s, score_threshold=0.3, max_detections=40),
                    input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None, None])])
    for b, n in ((3, 90), (1, 91)):
        boxes, scores = clustered_case(rng, b, n, 3)
        for x, y in zip(f(boxes, scores), nms(boxes, scores, score_threshold=0.3, max_detections=40)):
            np.testing.assert_array_equal(x, y)
        assert int(tf.reduce_min(f(boxes, scores).num_detections)) > 3


def test_next_fit_packs_whole_classes_in_order():
    """By hand: rows of 10 slots; a class starts a new row when it does not fit."""
    from detect.ops.nms import _next_fit_jit

    counts = tf.constant([[4, 5, 2, 10, 0, 3, 7], [0, 0, 0, 0, 0, 0, 0]], tf.int32)
    row, start, rows = _next_fit_jit(counts, tf.zeros([10]))
    np.testing.assert_array_equal(row[0], [0, 0, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(start[0], [0, 4, 0, 0, 10, 0, 3])
    np.testing.assert_array_equal(row[1], 0)  # no candidates: one (empty) row
    assert int(rows) == 4
    # classes too large to share rows: one row per class
    row, start, rows = _next_fit_jit(tf.constant([[6, 6, 6, 6]]), tf.zeros([10]))
    np.testing.assert_array_equal(row, [[0, 1, 2, 3]])
    np.testing.assert_array_equal(start, 0)
    assert int(rows) == 4
