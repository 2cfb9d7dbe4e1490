import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import make_synthetic  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """``(annotations.json, images folder)``: 4 synthetic 64 px scenes."""
    root = tmp_path_factory.mktemp("data")
    ann = make_synthetic.make_dataset(root, images=4, size=64, seed=2)
    return ann, root / "images"
