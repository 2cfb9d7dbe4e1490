import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import make_synthetic  # noqa: E402


def test_deterministic_and_valid(tmp_path):
    a = make_synthetic.make_dataset(tmp_path / "a", images=6, size=96, seed=3, empty_fraction=0.3)
    b = make_synthetic.make_dataset(tmp_path / "b", images=6, size=96, seed=3, empty_fraction=0.3)
    assert a.read_bytes() == b.read_bytes()
    for f in (tmp_path / "a" / "images").iterdir():
        assert f.read_bytes() == (tmp_path / "b" / "images" / f.name).read_bytes()
    coco = json.loads(a.read_text())
    boxes = np.array([x["bbox"] for x in coco["annotations"]])
    assert len(boxes) > 5
    assert (boxes[:, 2] >= 2).all() and (boxes[:, 3] >= 2).all()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 96 + 1e-6).all()
    ids = {x["image_id"] for x in coco["annotations"]}
    assert len(ids) < 6  # some scenes are empty negatives


def test_bundled_sample_is_present():
    root = Path(__file__).resolve().parent.parent / "data" / "sample"
    coco = json.loads((root / "annotations.json").read_text())
    assert len(coco["images"]) == 48
    assert all((root / "images" / im["file_name"]).is_file() for im in coco["images"])


def test_urban_scenes_are_deterministic_valid_and_never_hide_an_object(tmp_path):
    """The benchmark's second look: the same arguments give the same files; boxes lie in the image;
    objects may touch but never cover one another (an occluded object keeps no full-size box)."""
    import make_urban_aerial

    a = make_urban_aerial.make_dataset(tmp_path / "a", images=8, size=256, seed=4)
    b = make_urban_aerial.make_dataset(tmp_path / "b", images=8, size=256, seed=4)
    assert a.read_bytes() == b.read_bytes()
    for f in (tmp_path / "a" / "images").iterdir():
        assert f.read_bytes() == (tmp_path / "b" / "images" / f.name).read_bytes()
    coco = json.loads(a.read_text())
    assert {c["name"] for c in coco["categories"]} == {"aircraft", "roof", "boat"}
    boxes = np.array([x["bbox"] for x in coco["annotations"]])
    assert len(boxes) > 20
    assert (boxes[:, 2:] >= 4).all() and (boxes[:, :2] >= 0).all()
    assert (boxes[:, 0] + boxes[:, 2] <= 256 + 1e-6).all() and (boxes[:, 1] + boxes[:, 3] <= 256 + 1e-6).all()
    by_image = {}
    for x in coco["annotations"]:
        by_image.setdefault(x["image_id"], []).append(x["bbox"])
    for bbs in by_image.values():  # no box lies inside another (the occupancy rule)
        for i, (x, y, w, h) in enumerate(bbs):
            for j, (u, v, s, t) in enumerate(bbs):
                assert i == j or not (u <= x and v <= y and x + w <= u + s and y + h <= v + t)
