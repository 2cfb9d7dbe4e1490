import numpy as np
import pytest

from detect.imagery.rasters import ArraySource
from detect.imagery.tiling import merge_detections, tile_windows
from detect.inference.predictor import TileOptions


def test_tile_windows_golden():
    # 100 wide x 70 high, tile 64, overlap 0.25 -> step 48; x starts [0, 36] (last flush
    # with the right edge), y starts [0, 6]
    w = tile_windows(70, 100, 64, 0.25)
    np.testing.assert_array_equal(w, [[0, 0, 64, 64], [36, 0, 100, 64], [0, 6, 64, 70], [36, 6, 100, 70]])
    np.testing.assert_array_equal(tile_windows(40, 50, 64, 0.2), [[0, 0, 50, 40]])  # one small tile
    with pytest.raises(ValueError, match="overlap"):
        tile_windows(10, 10, 64, 1.0)


def test_every_pixel_covered():
    w = tile_windows(517, 333, 128, 0.1)
    covered = np.zeros((517, 333), bool)
    for x0, y0, x1, y1 in w:
        covered[y0:y1, x0:x1] = True
    assert covered.all() and (w[:, 2] - w[:, 0] == 128).all()


def test_object_split_by_seam_is_reported_once_with_full_extent():
    # Image 200x100, tiles [0,0,120,100] and [80,0,200,100] (40 px overlap). A car
    # [70, 40, 130, 60] is wider than the overlap, so neither tile sees it whole:
    # tile 0 reports [70,40,120,60] (cut at its seam x=120), tile 1 [80,40,130,60]
    # (cut at x=80). IoU 0.57 would do here too, but IoS is 0.8 for any such split.
    windows = np.array([[0, 0, 120, 100], [80, 0, 200, 100]])
    boxes = [[70, 40, 120, 60], [80, 40, 130, 60], [10, 10, 20, 20]]
    out, scores, labels = merge_detections(boxes, [0.9, 0.8, 0.7], [1, 1, 1],
                                           windows[[0, 1, 0]], height=100, width=200)
    assert len(out) == 2
    np.testing.assert_allclose(out[0], [70, 40, 130, 60])  # the object's full extent
    np.testing.assert_allclose(scores, [0.9, 0.7])


def test_truncated_copy_at_a_seam_merges_into_the_higher_scoring_box():
    # tiles [0,0,120,100] and [100,0,200,100]: tile 0 sees the object [90,40,110,60]
    # whole, tile 1 sees it cut at its left edge x=100 (a seam) and scores it higher.
    # Plain IoU is 0.5 (no merge at 0.5); intersection over the smaller box is 1.0,
    # so they are one object, and the higher-scoring detection is what is kept,
    # neither widened nor averaged.
    windows = np.array([[0, 0, 120, 100], [100, 0, 200, 100]])
    boxes = [[90, 40, 110, 60], [100, 40, 110, 60]]
    out, scores, _ = merge_detections(boxes, [0.6, 0.9], [2, 2], windows, height=100, width=200)
    assert len(out) == 1
    np.testing.assert_allclose(out[0], [100, 40, 110, 60])
    np.testing.assert_allclose(scores, [0.9])


def test_different_classes_and_image_edges_are_not_merged():
    windows = np.array([[0, 0, 100, 100]] * 2)
    boxes = [[0, 0, 30, 30], [0, 0, 20, 20]]  # nested, touching the IMAGE edge, same class
    out, _, _ = merge_detections(boxes, [0.9, 0.8], [0, 0], windows, height=100, width=100)
    assert len(out) == 2  # IoU 0.44, and no seam: both kept
    out, _, _ = merge_detections([[0, 0, 30, 30]] * 2, [0.9, 0.8], [0, 1], windows, height=100, width=100)
    assert len(out) == 2  # class-aware


def test_abutting_parts_merge_only_with_abut_and_enough_shared_edge():
    # scenes [0, 100) and [100, 200) in x touch at x = 100 (a mosaic: no overlap)
    windows = [[0, 0, 100, 100], [100, 0, 200, 100]]
    halves = [[80, 10, 100, 40], [100, 12, 130, 40]]  # one object cut at x = 100
    # tiles (abut 0): parts that only touch are not duplicates
    out, _, _ = merge_detections(halves, [0.9, 0.8], [1, 1], windows, height=100, width=200)
    assert len(out) == 2
    # mosaic: they share 28 of the shorter 28 px of edge (> 0.6): one box, their union
    out, scores, _ = merge_detections(halves, [0.8, 0.9], [1, 1], windows, height=100, width=200, abut=1.0)
    np.testing.assert_allclose(out, [[80, 10, 130, 40]])
    assert scores.tolist() == [pytest.approx(0.9)]
    # sharing 10 of 30 px of edge (0.33): two objects side by side
    out, _, _ = merge_detections([[80, 10, 100, 40], [100, 30, 130, 60]], [0.9, 0.8], [1, 1], windows,
                                 height=100, width=200, abut=1.0)
    assert len(out) == 2
    # 3 px apart across the edge: not touching
    out, _, _ = merge_detections([[80, 10, 97, 40], [100, 10, 130, 40]], [0.9, 0.8], [1, 1], windows,
                                 height=100, width=200, abut=1.0)
    assert len(out) == 2
    # other class: kept apart
    out, _, _ = merge_detections(halves, [0.9, 0.8], [1, 2], windows, height=100, width=200, abut=1.0)
    assert len(out) == 2


class _CountingSource(ArraySource):
    """An ArraySource that records its reads (thread-safely enough: one reader thread)
    and raises on its ``fail_at``-th read."""

    def __init__(self, image, name, fail_at=None):
        super().__init__(image, name)
        self.reads, self.fail_at, self.closed = 0, fail_at, False

    def read(self, *window):
        assert not self.closed, f"{self.name} read after close"
        self.reads += 1
        if self.reads == self.fail_at:
            raise OSError(f"{self.name}: bad block")
        return super().read(*window)

    read_or_none = read


def test_read_ahead_gives_each_source_its_own_tiles_and_surfaces_read_errors():
    """Tiles are read one batch ahead on a thread: results equal one source at a time,
    a read error reaches the caller, and closing the generator early leaves no read
    running (the caller closes its sources right after)."""
    from detect.inference.predictor import detect_many, detect_source
    from tests.inference.blob_model import BlobModel
    from tests.models.conftest import square_scenes

    model = BlobModel(tile=64, overlap=0.25)
    images = square_scenes(5, size=150, seed=4)[0].astype(np.uint8)
    opts = TileOptions(batch_size=3)
    together = list(detect_many(model, [ArraySource(im, f"i{k}") for k, im in enumerate(images)], opts))
    for im, det in zip(images, together):
        alone = detect_source(model, ArraySource(im), opts)
        np.testing.assert_array_equal(det["boxes"], alone["boxes"])
        assert det["tiles"] == alone["tiles"] == 9 and len(det["boxes"]) >= 1

    bad = [_CountingSource(im, f"s{k}", fail_at=5 if k == 2 else None) for k, im in enumerate(images)]
    with pytest.raises(OSError, match="s2: bad block"):
        list(detect_many(model, bad, opts))

    sources = [_CountingSource(im, f"c{k}") for k, im in enumerate(images)]
    gen = detect_many(model, iter(sources), opts)
    next(gen)
    gen.close()  # joins the reader thread
    for s in sources:
        s.closed = True
    reads = [s.reads for s in sources]
    assert reads[0] == 9 and sum(reads) < 45  # not everything was read ahead
