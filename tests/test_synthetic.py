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
