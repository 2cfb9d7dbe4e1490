"""Box voting after NMS (``batched_nms(vote_iou=...)``): golden values by hand, a pure-Python
reference on clustered boxes (class-aware and agnostic, both NMS routes), and the edge cases
(NaN candidates, zero-area boxes); NMS's choices, scores and labels never change."""

import numpy as np
import pytest

from detect.config import PostprocessConfig
from tests.ops.test_boxes import np_iou
from tests.ops.test_nms import clustered_case, nms, reference_agnostic_nms, reference_nms


def test_golden_two_boxes_vote_a_third_only_suppresses_another_class_is_apart():
    boxes = np.array([[[0, 0, 10, 10],      # A, car 0.9: kept
                       [1, 0, 11, 10],      # B, car 0.6: IoU with A 90 / 110 = 0.818, votes
                       [0, 0, 10, 5.5],     # D, car 0.5: IoU 0.55, suppressed (> 0.5), no vote (< 0.6)
                       [0.5, 0, 10.5, 10]]], np.float32)  # C: the other class only, 0.7
    scores = np.array([[[0.9, 0.0], [0.6, 0.0], [0.5, 0.0], [0.0, 0.7]]], np.float32)
    plain = nms(boxes, scores, iou_threshold=0.5)
    voted = nms(boxes, scores, iou_threshold=0.5, vote_iou=0.6)
    assert int(voted.num_detections[0]) == 2
    np.testing.assert_array_equal(voted.scores, plain.scores)
    np.testing.assert_array_equal(voted.labels, plain.labels)
    np.testing.assert_array_equal(voted.labels[0, :2], [0, 1])
    # (0.9 * A + 0.6 * B) / 1.5: x0 = 0.6 / 1.5 = 0.4, x1 = (9 + 6.6) / 1.5 = 10.4
    np.testing.assert_allclose(voted.boxes[0, 0], [0.4, 0, 10.4, 10], atol=1e-5)
    np.testing.assert_allclose(voted.boxes[0, 1], boxes[0, 3], atol=1e-5)  # alone in its class
    np.testing.assert_array_equal(voted.boxes[0, 2:], 0.0)  # padding rows stay 0
    # a vote threshold below D's IoU lets it vote too: (0.9 A + 0.6 B + 0.5 D) / 2.0
    low = nms(boxes, scores, iou_threshold=0.5, vote_iou=0.5)
    np.testing.assert_allclose(low.boxes[0, 0], [0.3, 0, 10.3, (9 + 6 + 2.75) / 2.0], atol=1e-5)


def reference_vote(boxes, members, kept_box_idx, vote_iou):
    """Score-weighted mean of the ``members`` ((box index, score) pairs) whose IoU with the
    kept box is >= ``vote_iou``, in float64."""
    iou = np_iou(boxes[[kept_box_idx]], boxes[[n for n, _ in members]])[0]
    picked = [(boxes[n].astype(np.float64), s) for (n, s), o in zip(members, iou) if o >= vote_iou]
    return sum(s * b for b, s in picked) / sum(s for _, s in picked)


@pytest.mark.parametrize("static_shapes", [False, True])
@pytest.mark.parametrize("top_k", [1000, 60])  # every pair above the threshold; cut to 60
@pytest.mark.parametrize("vote_iou", [0.5, 0.7])
def test_class_aware_voting_matches_reference(rng, static_shapes, top_k, vote_iou):
    boxes, scores = clustered_case(rng, 3, 80, 3)
    kw = dict(iou_threshold=0.5, score_threshold=0.2, max_detections=50, pre_nms_top_k=top_k,
              static_shapes=static_shapes)
    plain, voted = nms(boxes, scores, **kw), nms(boxes, scores, vote_iou=vote_iou, **kw)
    moved = 0
    for b in range(3):
        n = int(voted.num_detections[b])
        assert n == int(plain.num_detections[b]) and n > 5
        np.testing.assert_array_equal(voted.scores[b], plain.scores[b])
        np.testing.assert_array_equal(voted.labels[b], plain.labels[b])
        pairs = sorted(((scores[b, i, c], i, c) for i in range(80) for c in range(3)), key=lambda p: -p[0])
        cands = [p for p in pairs[:top_k] if p[0] > 0.2]
        for row, (i, c, _) in enumerate(reference_nms(boxes[b], scores[b], 0.5, 0.2, 50, top_k)):
            want = reference_vote(boxes[b], [(j, s) for s, j, cj in cands if cj == c], i, vote_iou)
            np.testing.assert_allclose(voted.boxes[b, row], want, rtol=1e-5, atol=1e-4)
            moved += not np.allclose(want, boxes[b, i], atol=1e-3)
    assert moved > 3  # the test would notice voting switched off


def test_agnostic_voting_ignores_labels_like_the_suppression(rng):
    boxes, scores = clustered_case(rng, 2, 90, 4)
    r = nms(boxes, scores, iou_threshold=0.4, score_threshold=0.3, max_detections=200, agnostic=True,
            vote_iou=0.6)
    for b in range(2):
        top = scores[b].max(axis=1)
        members = [(j, top[j]) for j in range(90) if top[j] > 0.3]
        ref = reference_agnostic_nms(boxes[b], scores[b], 0.4, 0.3, 200)
        assert int(r.num_detections[b]) == len(ref)
        for row, (i, label, score) in enumerate(ref):
            assert int(r.labels[b, row]) == label and float(r.scores[b, row]) == pytest.approx(score)
            np.testing.assert_allclose(r.boxes[b, row], reference_vote(boxes[b], members, i, 0.6),
                                       rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("static_shapes", [False, True])
def test_nan_candidates_do_not_vote_and_zero_area_boxes_stay(static_shapes):
    boxes = np.array([[[0, 0, 10, 10], [np.nan, 0, 10, 10], [0, 0, np.nan, np.nan], [0.5, 0, 10.5, 10],
                       [20, 20, 20, 30]]], np.float32)  # the last has zero width: IoU 0 even with itself
    scores = np.array([[[0.9], [0.95], [0.8], [0.5], [0.7]]], np.float32)
    r = nms(boxes, scores, vote_iou=0.5, static_shapes=static_shapes)
    assert int(r.num_detections[0]) == 2
    assert np.isfinite(r.boxes.numpy()).all()
    np.testing.assert_allclose(r.boxes[0, 0], [(0.25) / 1.4, 0, (9 + 5.25) / 1.4, 10], atol=1e-5)
    np.testing.assert_array_equal(r.boxes[0, 1], [20, 20, 20, 30])


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_vote_iou_out_of_range_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=r"postprocess\.vote_iou.*" + str(bad)):
        PostprocessConfig(vote_iou=bad).validate()
    PostprocessConfig(vote_iou=0.0).validate()
    PostprocessConfig(vote_iou=1.0).validate()
