import contextlib
import copy
import io

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.evaluation import BACKENDS, AreaRange, evaluate, parse_area_ranges
from detect.evaluation.coco_eval import summary_lines
from tests.evaluation.conftest import make_case


def reference(gt, res, area_ranges=(), max_dets=None):
    """pycocotools itself, straight from its documentation."""
    with contextlib.redirect_stdout(io.StringIO()) as out:
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(res))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if max_dets:
            ev.params.maxDets = list(max_dets)
        for r in area_ranges:
            ev.params.areaRng.append(r.area)
            ev.params.areaRngLbl.append(r.name)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev, out.getvalue()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_stats_identical_to_pycocotools(backend, seed):
    gt, res = make_case(seed)
    ev, _ = reference(gt, res)
    got = evaluate(gt, res, backend=backend)
    assert got.stats == [float(s) for s in ev.stats]
    assert got.stats[0] > 0.05  # informative case


def test_summary_text_identical_to_pycocotools():
    gt, res = make_case(5)
    _, printed = reference(gt, res)
    lines = [ln for ln in printed.splitlines() if ln.startswith(" Average")]
    assert summary_lines(evaluate(gt, res).stats) == lines


@pytest.mark.parametrize("backend", BACKENDS)
def test_area_ranges_do_not_change_standard_stats_and_match_reference(backend):
    gt, res = make_case(7)
    ranges = parse_area_ranges("tiny:0:16,mid:16:40,big:40:inf")
    ev, _ = reference(gt, res, ranges)
    plain = evaluate(gt, res, backend=backend)
    got = evaluate(gt, res, backend=backend, area_ranges=ranges)
    # Bit-exact without extra ranges (test above); with them faster-coco-eval's
    # accumulation differs from pycocotools in the last bit (seen: 2e-17).
    assert got.stats == pytest.approx(plain.stats, abs=1e-12)
    assert got.stats == pytest.approx([float(s) for s in ev.stats], abs=1e-12)
    p = ev.eval["precision"]
    for j, r in enumerate(ranges):
        v = p[:, :, :, 4 + j, -1]
        assert got.area_stats[r.name]["AP"] == pytest.approx(float(v[v > -1].mean()), abs=1e-12)
        v50 = p[0, :, :, 4 + j, -1]
        assert got.area_stats[r.name]["AP50"] == pytest.approx(float(v50[v50 > -1].mean()), abs=1e-12)


def test_per_class_table_matches_reference():
    gt, res = make_case(4)
    ev, _ = reference(gt, res)
    got = evaluate(gt, res)
    p = ev.eval["precision"]
    for k, row in enumerate(got.per_class):
        v = p[:, :, k, 0, -1]
        want = float(v[v > -1].mean()) if (v > -1).any() else -1.0
        assert row["AP"] == pytest.approx(want, abs=1e-12)
        assert row["num_gt"] == sum(1 for a in gt["annotations"]
                                    if a["category_id"] == row["category_id"] and not a["iscrowd"])
    # the never-detected category has AP 0, not n/a
    assert got.per_class[-1]["AP"] == 0.0 and got.per_class[-1]["num_gt"] > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_results_give_zero_stats(backend):
    gt, _ = make_case(1)
    got = evaluate(gt, [], backend=backend)
    # pycocotools: 0 where ground truth exists, -1 where an area has none
    assert all(s in (0.0, -1.0) for s in got.stats) and got.stats[0] == 0.0


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.__setitem__("image_id", 999), "image ids not in the ground truth: \\[999\\]"),
    (lambda r: r.__setitem__("category_id", 42), "category ids not in the ground truth: \\[42\\]"),
    (lambda r: r["bbox"].__setitem__(0, float("nan")), "NaN/inf"),
    (lambda r: r.pop("score"), "without image_id"),
    (lambda r: r["bbox"].__setitem__(2, -3.0), "negative bbox"),
])
def test_bad_results_are_refused_clearly(mutate, message):
    gt, res = make_case(0)
    mutate(res[3])
    with pytest.raises(ValueError, match=message):
        evaluate(gt, res)


def test_bad_files(tmp_path):
    gt, _ = make_case(0)
    with pytest.raises(FileNotFoundError, match="results file"):
        evaluate(gt, str(tmp_path / "missing.json"))
    (tmp_path / "dt.json").write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="JSON list"):
        evaluate(gt, str(tmp_path / "dt.json"))
    (tmp_path / "gt.json").write_text("[]")
    with pytest.raises(ValueError, match="not a COCO instances file"):
        evaluate(str(tmp_path / "gt.json"), [])


def test_parse_area_ranges():
    assert parse_area_ranges("a:0:8, b:8:inf") == [AreaRange("a", 0, 8), AreaRange("b", 8, float("inf"))]
    assert AreaRange("a", 4, 8).area == [16, 64]
    for bad, why in (("a:0", "name:min:max"), ("a:8:4", "0 <= min < max"), ("a:x:4", "must be numbers"),
                     ("small:0:4", "'small' is built in \\(all, small, medium, large"),
                     ("a:0:4,a:4:8", "given twice")):
        with pytest.raises(ValueError, match=why):
            parse_area_ranges(bad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("max_dets", [(5, 50, 120), (100, 300, 1000)])
def test_other_max_dets_identical_to_pycocotools(backend, max_dets):
    gt, res = make_case(4)  # image 1 has > 100 detections: the last maxDets matters
    ev, text = reference(gt, res, max_dets=max_dets)
    got = evaluate(gt, res, backend=backend, max_dets=max_dets)
    assert got.stats == [float(s) for s in ev.stats]
    assert got.stats != evaluate(gt, res, backend=backend).stats
    assert (got.stats[0] == -1.0) == (100 not in max_dets)  # pycocotools' literal maxDets=100
    assert summary_lines(got.stats, max_dets) == text.strip("\n").splitlines()[-12:]
    assert f"maxDets={max_dets[2]:>3d}" in text


@pytest.mark.parametrize("bad", ["100,300", "300,100,1000", "a,b,c", "0,10,100"])
def test_bad_max_dets(bad):
    gt, res = make_case(0)
    with pytest.raises(ValueError, match="max-dets"):
        evaluate(gt, res, max_dets=bad)
