"""Shared test fixtures: random *valid* boxes that check their own validity."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def random_boxes(rng: np.random.Generator, shape, *, extent=200.0, min_size=1.0, max_size=60.0):
    """Valid xyxy boxes ``shape + (4,)`` inside ``[0, extent]``; asserts validity."""
    xy = rng.uniform(0, extent - max_size, size=tuple(shape) + (2,))
    wh = rng.uniform(min_size, max_size, size=tuple(shape) + (2,))
    boxes = np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)
    assert np.all(boxes[..., 2] > boxes[..., 0]) and np.all(boxes[..., 3] > boxes[..., 1])
    return boxes


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
