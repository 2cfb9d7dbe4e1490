import numpy as np
import pytest

from detect.imagery.rasters import ArraySource
from detect.imagery.tiling import (
    grid_alignment,
    merge_detections,
    seam_distance,
    tile_windows,
    world_phase,
)
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


def test_aligned_windows_golden_and_covering():
    # 100 x 70, tile 64, overlap 0.25, aligned to 16: the step 48 is a multiple already; the
    # last start is the first multiple of 16 at or past 100 - 64 = 36 (48: 12 px past the image,
    # which the reader pads) and past 70 - 64 = 6 (16: 10 px past)
    w = tile_windows(70, 100, 64, 0.25, align=16)
    np.testing.assert_array_equal(w, [[0, 0, 64, 64], [48, 0, 112, 64], [0, 16, 64, 80], [48, 16, 112, 80]])
    # step 0.79 * 512 = 404 px rounded down to 384; 2000 - 512 = 1488 -> last start 1504
    starts = sorted(set(tile_windows(600, 2000, 512, 0.21, align=32)[:, 0].tolist()))
    assert starts == [0, 384, 768, 1152, 1504]
    for h, wd, tile, overlap, align in ((517, 333, 128, 0.1, 32), (1000, 999, 256, 0.0, 64), (300, 700, 96, 0.5, 8)):
        w = tile_windows(h, wd, tile, overlap, align)
        covered = np.zeros((h, wd), bool)
        for x0, y0, x1, y1 in w:
            covered[y0:y1, x0:x1] = True
        assert covered.all() and (w[:, :2] % align == 0).all(), (h, wd, tile, overlap, align)
        assert ((w[:, 2] - w[:, 0]) == tile).all() and ((w[:, 3] - w[:, 1]) == tile).all()  # one size
        assert wd <= w[:, 2].max() < wd + align and h <= w[:, 3].max() < h + align
    # alignment 1 is the plain rule
    np.testing.assert_array_equal(tile_windows(517, 333, 128, 0.1, 1), tile_windows(517, 333, 128, 0.1))


def test_world_phase_puts_a_crop_on_the_whole_rasters_lattice():
    from rasterio.transform import Affine, from_origin

    # column 0 is lattice index round(500000 / 0.3) = 1666667, row 0 round(4000000 / -0.3) =
    # -13333333: the first aligned column is -1666667 mod 32 = 21, the first row 13333333 mod 32 = 21
    whole = from_origin(500000, 4000000, 0.3, 0.3)
    assert world_phase(whole, 1.0, 32) == (21, 21)
    crop = from_origin(500000 + 189 * 0.3, 4000000 - 50 * 0.3, 0.3, 0.3)  # 189 px right, 50 down
    assert world_phase(crop, 1.0, 32) == ((21 - 189) % 32, (21 - 50) % 32)
    # the windows' origins, in the whole raster's pixels, lie on one lattice
    a = tile_windows(2048, 2048, 512, 0.21, 32, world_phase(whole, 1.0, 32))
    b = tile_windows(2048 - 50, 2048 - 189, 512, 0.21, 32, world_phase(crop, 1.0, 32))
    assert len({int(v) % 32 for v in a[:, 0]} | {int(v + 189) % 32 for v in b[:, 0]}) == 1
    assert len({int(v) % 32 for v in a[:, 1]} | {int(v + 50) % 32 for v in b[:, 1]}) == 1
    assert a[:, 0].min() == 21 - 32 and 2048 <= a[:, 2].max() < 2048 + 32
    covered = np.zeros((2048 - 50, 2048 - 189), bool)
    for x0, y0, x1, y1 in b:
        covered[max(y0, 0):y1, max(x0, 0):x1] = True
    assert covered.all()
    # no lattice: rotated, missing, or alignment 1
    assert world_phase(Affine(0.3, 0.1, 500000, 0.1, -0.3, 4000000), 1.0, 32) == (0, 0)
    assert world_phase(None, 1.0, 32) == (0, 0) and world_phase(whole, 1.0, 1) == (0, 0)
    # rescaled: the lattice of the resampled pixels (0.6 m at scale 0.5)
    assert world_phase(whole, 0.5, 32) == (-round(500000 / 0.6) % 32, -round(4000000 / -0.6) % 32)


def test_read_tile_pads_the_strip_before_the_image():
    from detect.inference.predictor import read_tile

    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    tile = read_tile(ArraySource(image), (-3, -2, 5, 6), 1.0)
    assert tile.shape == (8, 8, 3)
    np.testing.assert_array_equal(tile[:2], 0)
    np.testing.assert_array_equal(tile[:, :3], 0)
    np.testing.assert_array_equal(tile[2:, 3:], image[:6, :5])
    # and past it at the right and bottom
    tile = read_tile(ArraySource(image), (4, 3, 12, 9), 1.0)
    assert tile.shape == (6, 8, 3)
    np.testing.assert_array_equal(tile[:3, :4], image[3:, 4:])
    np.testing.assert_array_equal(tile[3:], 0)
    np.testing.assert_array_equal(tile[:, 4:], 0)


def test_grid_alignment_keeps_the_step_within_a_quarter():
    assert grid_alignment(512, 0.21, 32) == 32     # 404 -> 384
    assert grid_alignment(256, 0.2, 128) == 64     # 204.8 -> 128 would lose 37%; 192 at 64
    assert grid_alignment(64, 0.5, 128) == 32      # step 32
    assert grid_alignment(100, 0.0, 1) == 1
    for tile, overlap, multiple in ((512, 0.21, 128), (300, 0.33, 64), (128, 0.9, 32)):
        align = grid_alignment(tile, overlap, multiple)
        step = tile * (1 - overlap)
        assert multiple % align == 0 and (align == 1 or step // align * align >= 0.75 * step)


def test_a_tiles_detections_do_not_depend_on_its_batch_mates():
    from detect.inference.predictor import infer_tiles

    class Recorder:  # a detector whose one box tells the shape it was given
        model_config = type("C", (), {"postprocess": type("P", (), {"max_detections": 5, "pre_nms_top_k": 10})})
        calls = []

        def predict_on_batch(self, batch):
            self.calls.append(batch.shape)
            b, h, w = batch.shape[:3]
            boxes = np.tile(np.array([[0, 0, w, h]], np.float32), (b, 5, 1))[:, :5]
            return {"boxes": boxes, "scores": batch.mean(axis=(1, 2, 3))[:, None].repeat(5, 1),
                    "labels": np.zeros((b, 5), np.int32), "num_detections": np.ones(b, np.int32),
                    "num_candidates": np.ones(b, np.int32), "capped": np.zeros(b, bool)}

    model = Recorder()
    big, small = np.full((64, 64, 3), 10.0), np.full((64, 40, 3), 20.0)
    alone = infer_tiles(model, [small], [(0, 0, 40, 64)])[0]
    mixed = infer_tiles(model, [big, small, None, big], [(0, 0, 64, 64), (0, 0, 40, 64), None, (0, 0, 64, 64)])
    assert mixed[2] is None and model.calls[-2:] == [(2, 64, 64, 3), (1, 64, 40, 3)]
    np.testing.assert_array_equal(mixed[1].boxes, alone.boxes)  # not padded to 64 px by its batch mates
    np.testing.assert_array_equal(mixed[1].scores, alone.scores)
    np.testing.assert_array_equal(mixed[1].boxes, [[0, 0, 40, 64]])


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


def test_truncated_copy_at_a_seam_merges_into_the_copy_seen_whole():
    # tiles [0,0,120,100] and [100,0,200,100]: tile 0 sees the object [90,40,110,60]
    # whole (10 px from its seam at x=120), tile 1 sees it cut at its left edge x=100 (a
    # seam, 0 px) and scores it higher. Plain IoU is 0.5 (no merge at 0.5); intersection
    # over the smaller box is 1.0, so they are one object, and the copy farther from its
    # tile's seams is kept with its own score, neither widened nor averaged.
    windows = np.array([[0, 0, 120, 100], [100, 0, 200, 100]])
    boxes = [[90, 40, 110, 60], [100, 40, 110, 60]]
    out, scores, _, idx = merge_detections(boxes, [0.6, 0.9], [2, 2], windows, height=100, width=200,
                                           return_index=True)
    assert len(out) == 1 and idx.tolist() == [0]
    np.testing.assert_allclose(out[0], [90, 40, 110, 60])
    np.testing.assert_allclose(scores, [0.6])


def test_duplicates_keep_the_most_central_copy_then_the_higher_score():
    # tiles [0,0,120,100] and [60,0,200,100] overlap on x 60..120; an object [70,40,90,60]
    # is whole in both: 30 px from tile 0's seam (x=120), 10 px from tile 1's (x=60).
    # Tile 1 scores it higher; tile 0's copy (more context) is kept.
    windows = np.array([[0, 0, 120, 100], [60, 0, 200, 100]])
    boxes = [[70, 40, 90, 60], [71, 41, 91, 61], [150, 10, 170, 30]]
    out, scores, _, idx = merge_detections(boxes, [0.5, 0.8, 0.7], [1, 1, 1], windows[[0, 1, 1]], height=100,
                                           width=200, return_index=True)
    assert idx.tolist() == [2, 0]  # by descending score: the lone object, then the central copy
    np.testing.assert_allclose(scores, [0.7, 0.5])
    # equally central copies: the higher score wins
    sym = np.array([[0, 0, 120, 100], [60, 0, 180, 100]])
    out, scores, _ = merge_detections([[80, 40, 100, 60], [80, 41, 100, 61]], [0.5, 0.8], [1, 1], sym,
                                      height=100, width=180)
    np.testing.assert_allclose(scores, [0.8])
    # the distances themselves: a seam-free tile (the whole image) is infinitely central
    np.testing.assert_allclose(seam_distance(np.array(boxes, float), windows[[0, 1, 1]].astype(float), 100, 200),
                               [30, 11, 90])
    assert seam_distance(np.array([[5.0, 5, 10, 10]]), np.array([[0.0, 0, 100, 100]]), 100, 100)[0] == np.inf


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


def test_a_box_wholly_in_the_padding_past_the_image_is_dropped_and_counted():
    """An aligned grid's last tile reaches past a 100 x 100 image (window 64..128): a box in the
    zero strip is nothing of the image (dropped, counted, noted); one across the edge is clipped
    to it; a box the model itself gave zero width stays as before, also one on the image's edge
    (a decoder clipping to a tile edge that is also the image's makes those: not padding)."""
    from detect.inference.predictor import CapCount, SceneMerger, TileResult
    from tests.models.conftest import tiny_config

    merger = SceneMerger(100, 100, 0.5)
    boxes = np.array([[110, 10, 120, 20], [90, 30, 110, 40], [70, 50, 70, 60], [100, 5, 100, 9]], np.float32)
    merger.add_tile((64, 0, 128, 64), TileResult(boxes, np.array([0.9, 0.8, 0.7, 0.6], np.float32),
                                                 np.zeros(4, np.int32)))
    det = merger.result(100, 100, 1.0)
    np.testing.assert_array_equal(det["boxes"], [[90, 30, 100, 40], [70, 50, 70, 60], [100, 5, 100, 9]])
    assert det["outside_boxes"] == 1
    caps = CapCount()
    caps.add(det)
    assert caps.warning(tiny_config().postprocess) == (
        "note: 1 detection(s) lay wholly in the zero padding past an image's edge (the outer tiles of an "
        "aligned grid reach past it) and were dropped")
