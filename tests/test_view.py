"""The HTML view: self-contained, and in headless Chromium its boxes are drawn, coloured by
matching, and the score slider changes how many are shown."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from detect.api import predict
from detect.cli.main import main
from detect.view import match
from tests.inference.blob_model import BlobModel
from tests.models.conftest import square_scenes, write_square_dataset

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NAMES = ["pool", "car", "building"]


def test_match_golden():
    # two cars and one pool detected; ground truth: car A, car B (missed), a pool crowd region
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [20, 20, 30, 30]]
    labels, scores = [1, 1, 0, 1], [0.9, 0.8, 0.7, 0.6]
    gt_boxes = [[0, 0, 10, 10], [80, 80, 90, 90], [48, 48, 62, 62]]
    status, gt_score = match(boxes, labels, scores, gt_boxes, [1, 1, 0], [False, False, True])
    # the 0.9 car takes car A; the 0.8 car (IoU 0.82 with A, taken) is a false positive; the pool on a
    # crowd region is neither; the 0.6 car touches nothing
    assert status.tolist() == [1, 0, -1, 0] and gt_score.tolist() == [0.9, -1.0, -1.0]


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    """A predict output of 3 images with ground truth that has one object the model cannot see
    and lacks one that it finds."""
    root = tmp_path_factory.mktemp("view")
    images, targets = square_scenes(3, size=96, seed=5)
    gt = write_square_dataset(root / "images", images, targets, NAMES)
    found = len(gt["annotations"])
    gt["annotations"].append({"id": 99, "image_id": 1, "category_id": 1, "bbox": [2, 2, 6, 6], "area": 36,
                              "iscrowd": 0})  # nothing there: a missed object
    dropped = gt["annotations"].pop(0)  # in the image but not in the truth: a false positive
    (root / "ann.json").write_text(json.dumps(gt))
    res = predict(BlobModel(tile=96), root / "images", out=root / "out", ann=root / "ann.json", html=True)
    assert sum(len(d.boxes) for d in res) == found
    return root, gt, dropped


def test_view_is_self_contained(view):
    root, _, _ = view
    html = (root / "out" / "view.html").read_text()
    assert "<script src" not in html and "<link" not in html and "@import" not in html
    # the only URL is the SVG namespace (a name, never fetched)
    assert set(re.findall(r"https?://[^\s\"')]+", html)) == {"http://www.w3.org/2000/svg"}
    assert html.count("data:image/jpeg;base64,") == 3


def dom(path, fragment):
    run = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          f"file://{path}#{fragment}"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it)")
def test_boxes_drawn_and_the_score_slider_filters_them_in_chromium(view, tmp_path):
    root, gt, dropped = view
    page = root / "out" / "view.html"
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>',
                                page.read_text(), re.S).group(1))
    first = next(i for i, it in enumerate(data["items"]) if it["name"] == "0.png")
    item = data["items"][first]
    scores = sorted(d[5] for d in item["dets"])
    assert len(scores) >= 2

    def counts(score):
        d = dom(page, f"image={first}&score={score}")
        shown = int(re.search(r'id="shown">(\d+)<', d).group(1))
        return shown, d.count('class="det tp"'), d.count('class="det fp"'), d.count('class="gt missed"')

    everything = counts(0)
    assert everything[0] == len(item["dets"]) == everything[1] + everything[2]
    assert everything[2] == 1 and everything[3] == 1  # the unlabelled square; the invisible object
    cut = (scores[0] + scores[1]) / 2  # hides the lowest-scoring detection
    fewer = counts(cut)
    assert fewer[0] == len(scores) - 1 and fewer[0] == fewer[1] + fewer[2]
    none = counts(1)
    assert none[0] == 0 and none[1] + none[2] == 0
    # the sidebar counts what the slider shows: this image's entry and the total follow it
    at_cut = dom(page, f"image={first}&score={cut}")
    entry = re.search(rf'data-i="{first}"[^>]*>0\.png \(<span class="n">(\d+)</span>\)', at_cut)
    assert entry and int(entry.group(1)) == len(scores) - 1
    total = sum(1 for it in data["items"] for d in it["dets"] if d[5] >= cut)
    assert f"{total} detections at score &gt;= {cut:.2f}" in at_cut  # the DOM escapes ">"
    assert none[3] == sum(1 for g in item["gts"])  # every object is missed above every score

    # the screenshot has the true positives' green outlines at score 0 and none at score 1
    from PIL import Image

    def green_pixels(score):
        shot = tmp_path / f"shot_{score}.png"
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                        "--window-size=1000,800", "--hide-scrollbars", f"file://{page}#image={first}&score={score}"],
                       capture_output=True, timeout=120, check=True)
        px = np.asarray(Image.open(shot).convert("RGB")).astype(int)[60:, 270:]  # the image, not the legend
        # the outline colour #00c800; the images' green squares are (40, 255, 40)
        return int(((abs(px[..., 1] - 200) <= 12) & (px[..., 0] < 25) & (px[..., 2] < 25)).sum())

    assert green_pixels(0) > 100 and green_pixels(1) == 0


def test_view_command_and_evaluate_html(view, capsys):
    root, _, _ = view
    assert main(["view", str(root / "out"), "--html", str(root / "plain.html"), "--score-threshold", "0.4"]) == 0
    html = (root / "plain.html").read_text()
    assert '"gts":null' in html  # no ground truth given: coloured by class
    capsys.readouterr()
    # the old spellings (--out FILE, --score) still work, each with a one-line note
    assert main(["view", str(root / "out"), "--out", str(root / "old.html"), "--score", "0.4"]) == 0
    err = capsys.readouterr().err
    assert "--out is now --html" in err and "--score is now --score-threshold" in err
    assert (root / "old.html").read_text() == html
    # an existing page is not replaced without --overwrite
    assert main(["view", str(root / "out"), "--html", str(root / "plain.html")]) == 2
    assert "plain.html exists: pass --overwrite" in capsys.readouterr().err
    assert main(["view", str(root / "out"), "--html", str(root / "plain.html"), "--overwrite"]) == 0
    assert main(["evaluate", "--ann", str(root / "ann.json"), "--predictions", str(root / "out" / "coco_results.json"),
                 "--images", str(root / "images"), "--html", str(root / "eval.html")]) == 0
    assert (root / "eval.html").read_text().count("data:image/jpeg") == 3
    assert main(["evaluate", "--ann", str(root / "ann.json"), "--predictions",
                 str(root / "out" / "coco_results.json"), "--html", str(root / "x.html")]) == 2
    assert "--html needs --images" in capsys.readouterr().err


def test_view_skips_a_killed_writers_leftover_and_names_a_damaged_record(view, tmp_path, capsys):
    import shutil

    from detect.util import atomic

    root, _, _ = view
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    records = sorted((out / "detections").glob("*.json"))
    leftover = atomic.temporary_name(records[0])
    leftover.write_text('{"file": "1.png", "detec')  # a writer killed half way
    assert atomic.is_temporary(leftover) and not any(atomic.is_temporary(r) for r in records)
    assert main(["view", str(out), "--html", str(tmp_path / "v.html")]) == 0
    assert (tmp_path / "v.html").read_text().count("data:image/jpeg") == 3
    records[1].write_text('{"file": "2.png", "detec')  # a record damaged in place
    capsys.readouterr()
    assert main(["view", str(out), "--html", str(tmp_path / "w.html")]) == 2
    err = capsys.readouterr().err
    assert f"{records[1]}: damaged or half-written detection record (line 1 column" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_class_colours_are_not_the_true_false_missed_colours():
    from detect.imagery.images import CLASS_COLOURS

    reserved = [(0, 200, 0), (255, 32, 32), (255, 208, 0)]  # true / false positive, missed (template)
    for c in CLASS_COLOURS:
        assert min(sum((a - b) ** 2 for a, b in zip(c, r)) ** 0.5 for r in reserved) > 90, c
