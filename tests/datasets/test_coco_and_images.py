import json
import re

import cv2
import numpy as np
import pytest

from detect.config import DataConfig
from detect.datasets.coco import DataError, load_coco, summary
from detect.datasets.pipeline import make_dataset
from detect.imagery.images import read_image, to_uint8


def write_dataset(tmp_path, annotations, images=None, categories=None):
    (tmp_path / "img").mkdir(exist_ok=True)
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / "img" / name), np.full((50, 80, 3), 100, np.uint8))
    coco = {"images": images or [{"id": 1, "file_name": "a.png", "width": 80, "height": 50},
                                 {"id": 2, "file_name": "b.png", "width": 80, "height": 50}],
            "categories": categories or [{"id": 7, "name": "car"}, {"id": 3, "name": "pool"}],
            "annotations": annotations}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    return tmp_path / "ann.json", tmp_path / "img"


def ann(i, bbox, cat=7, image=1, crowd=0):
    return {"id": i, "image_id": image, "category_id": cat, "bbox": bbox, "iscrowd": crowd}


def test_reads_maps_categories_and_keeps_negatives(tmp_path):
    a, d = write_dataset(tmp_path, [ann(1, [10, 10, 20, 5]), ann(2, [0, 0, 5, 5], cat=3),
                                    ann(3, [30, 30, 10, 10], crowd=1)])
    ds = load_coco(a, d)
    assert ds.class_names == ["pool", "car"] and ds.category_ids == [3, 7]  # sorted ids
    s1 = next(s for s in ds.samples if s.image_id == 1)
    np.testing.assert_allclose(s1.boxes, [[10, 10, 30, 15], [0, 0, 5, 5], [30, 30, 40, 40]])
    np.testing.assert_array_equal(s1.labels, [1, 0, -2])  # crowd -> ignore region
    assert any(s.image_id == 2 and len(s.labels) == 0 for s in ds.samples)  # negative kept
    assert "images: 2 (1 without objects)" in summary(ds)


def test_problems_are_counted_and_named(tmp_path):
    a, d = write_dataset(tmp_path, [
        ann(1, [10, 10, 0, 5]), ann(2, [float("nan"), 0, 5, 5]), ann(3, [0, 0, 5, 5], cat=99),
        ann(4, [70, 40, 20, 20]), ann(5, [200, 200, 5, 5]), ann(6, [1, 1, 2, 2], image=42)])
    ds = load_coco(a, d)
    c = ds.report.counts()
    assert (c["empty_box"], c["nan_box"], c["unknown_category"], c["outside_box"], c["unknown_image"]) == (1, 1, 1, 1, 1)
    assert ds.report.clipped == 1 and c["clipped_box"] == 1
    s1 = next(s for s in ds.samples if s.image_id == 1)
    np.testing.assert_allclose(s1.boxes, [[70, 40, 80, 50]])  # clipped, kept
    assert any("annotation 3" in m and "99" in m for _, m in ds.report.problems)
    with pytest.raises(DataError, match="with --strict"):
        load_coco(a, d, strict=True)


def test_missing_image_is_skipped_or_strict_error(tmp_path):
    imgs = [{"id": 1, "file_name": "a.png", "width": 80, "height": 50},
            {"id": 2, "file_name": "gone.png", "width": 80, "height": 50}]
    a, d = write_dataset(tmp_path, [ann(1, [1, 1, 5, 5], image=2)], images=imgs)
    ds = load_coco(a, d)
    assert [s.image_id for s in ds.samples] == [1] and ds.report.counts()["missing_image"] == 1
    with pytest.raises(DataError):
        load_coco(a, d, strict=True)


@pytest.mark.parametrize("name", ["../a.png", "/etc/passwd"])
def test_paths_escaping_the_root_are_refused(tmp_path, name):
    imgs = [{"id": 1, "file_name": name, "width": 80, "height": 50}]
    a, d = write_dataset(tmp_path, [], images=imgs)
    with pytest.raises(DataError, match="escapes"):
        load_coco(a, d)


def test_duplicate_image_ids_are_refused(tmp_path):
    imgs = [{"id": 1, "file_name": "a.png", "width": 80, "height": 50},
            {"id": 1, "file_name": "b.png", "width": 80, "height": 50}]
    a, d = write_dataset(tmp_path, [], images=imgs)
    with pytest.raises(DataError, match="duplicate image id 1"):
        load_coco(a, d)


def test_image_reading_rules(tmp_path):
    from PIL import Image

    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.repeat(grey[..., None], 3, 2))
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0], bgra[..., 2], bgra[..., 3] = 10, 200, 7  # B=10, R=200, alpha 7
    cv2.imwrite(str(tmp_path / "c.png"), bgra)
    np.testing.assert_array_equal(read_image(tmp_path / "c.png")[0, 0], [200, 0, 10])  # RGB
    wide = np.linspace(1000, 5000, 100 * 3).astype(np.uint16).reshape(10, 10, 3)
    cv2.imwrite(str(tmp_path / "w.tif"), wide)
    out = read_image(tmp_path / "w.tif")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    np.testing.assert_array_equal(to_uint8(np.full((2, 2), 7, np.uint16)), 0)  # constant image
    grey16 = np.linspace(0, 60000, 100).astype(np.uint16).reshape(10, 10)
    cv2.imwrite(str(tmp_path / "g16.png"), grey16)  # a 16-bit grey PNG: stretched, then grey -> RGB
    out = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out, np.repeat(to_uint8(grey16)[..., None], 3, 2))
    assert out.min() == 0 and out.max() == 255
    grey_alpha = np.zeros((3, 3, 2), np.uint8)
    grey_alpha[..., 0], grey_alpha[..., 1] = 90, 255  # a grey + alpha PNG: grey, alpha dropped
    Image.fromarray(grey_alpha, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), 90)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="could not be decoded"):
        read_image(tmp_path / "bad.jpg")


def test_exif_orientation_is_honoured(tmp_path):
    from PIL import Image

    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = 255  # bright left strip, 40 wide x 20 high
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "o.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "o.jpg")
    assert out.shape == (40, 20, 3)  # displayed upright: 20 wide x 40 high
    assert out[:10].mean() > 200 and out[-10:].mean() < 50  # strip now at the top


def test_pipeline_batches_are_deterministic_and_padded(tmp_path):
    a, d = write_dataset(tmp_path, [ann(1, [10, 10, 20, 5])])
    ds = load_coco(a, d)
    cfg = DataConfig(image_size=64, max_boxes=5)
    batches = [make_dataset(ds, cfg, batch_size=2, training=True, seed=3) for _ in range(2)]
    (x1, y1), (x2, y2) = (next(iter(b)) for b in batches)
    assert x1.shape == (2, 128, 128, 3) and y1["boxes"].shape == (2, 5, 4)
    np.testing.assert_array_equal(x1, x2)
    assert (y1["labels"].numpy() == -1).sum() == 9  # one box, nine padding rows


def test_scale_resize_resamples_image_and_boxes_by_the_factor(tmp_path):
    a, d = write_dataset(tmp_path, [ann(1, [10, 10, 20, 5])])
    ds = load_coco(a, d)
    x, y = next(iter(make_dataset(ds, DataConfig(resize="scale", scale=1.5, max_boxes=2),
                                  batch_size=2, training=False)))
    img = x.numpy()[0]
    # 80 x 50 -> 120 x 75 (rounded), padded to 128 x 128 with zeros
    assert img.shape == (128, 128, 3)
    np.testing.assert_allclose(img[:75, :120], 100.0)
    assert not img[75:].any() and not img[:, 120:].any()
    np.testing.assert_allclose(y["boxes"].numpy()[0, 0], [15, 15, 45, 22.5])


def test_stream_depends_only_on_seed_and_skip_is_exact(tmp_path):
    import tensorflow as tf

    a, d = write_dataset(tmp_path, [ann(1, [10, 10, 20, 5]), ann(2, [5, 5, 9, 9], image=2)])
    ds = load_coco(a, d)
    cfg = DataConfig(image_size=64, max_boxes=4)

    def first(skip, global_seed, k):
        tf.random.set_seed(global_seed)
        it = make_dataset(ds, cfg, batch_size=1, training=True, seed=5, repeat=True, skip=skip)
        return [x.numpy() for x, _ in it.take(k)]

    full = first(0, 1, 6)
    tail = first(3, 99, 3)  # different global seed, resumed after 3 elements
    for x, y in zip(full[3:], tail):
        np.testing.assert_array_equal(x, y)


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_and_corrupt_images_are_skipped_at_load(tmp_path):
    a, d = write_dataset(tmp_path, [ann(1, [1, 1, 5, 5]), ann(2, [1, 1, 5, 5], image=2)])
    rng = np.random.default_rng(0)
    cv2.imwrite(str(d / "a.jpg"), rng.integers(0, 255, (50, 80, 3), dtype=np.uint8))
    coco = json.loads(a.read_text())
    coco["images"][0]["file_name"] = "a.jpg"
    a.write_text(json.dumps(coco))
    # OpenCV decodes a JPEG cut in half (grey-filling the rest); the check must not
    _truncate(d / "a.jpg")
    assert cv2.imread(str(d / "a.jpg")) is not None
    (d / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))  # header, then garbage
    ds = load_coco(a, d)
    assert ds.samples == [] and ds.report.counts() == {"unreadable_image": 2}
    text = summary(ds)
    assert "unreadable_image       2  not an image OpenCV reads, truncated or corrupt: image skipped" in text
    assert "a.jpg' is truncated or corrupt" in text
    with pytest.raises(DataError, match="2 problem"):
        load_coco(a, d, strict=True)


def test_size_mismatch_uses_the_real_size(tmp_path):
    imgs = [{"id": 1, "file_name": "a.png", "width": 100, "height": 100},
            {"id": 2, "file_name": "b.png", "width": 80, "height": 50}]
    # the box fits the listed 100 x 100, and is clipped to the real 80 x 50
    a, d = write_dataset(tmp_path, [ann(1, [60, 30, 30, 30])], images=imgs)
    ds = load_coco(a, d)
    s1 = next(s for s in ds.samples if s.image_id == 1)
    assert (s1.width, s1.height) == (80, 50)
    np.testing.assert_allclose(s1.boxes, [[60, 30, 80, 50]])
    assert ds.report.counts() == {"size_mismatch": 1, "clipped_box": 1}
    assert "is 80x50 but the annotations say 100x100" in summary(ds)
    batch = next(iter(make_dataset(ds, DataConfig(max_boxes=2), batch_size=2, training=False)))
    assert batch[0].shape[0] == 2  # both images decode: no hang, no crash


def test_box_values_that_are_not_numbers(tmp_path):
    a, d = write_dataset(tmp_path, [ann(1, ["a", 20, 40, 30]), ann(2, [1, 2, 3]), ann(3, [1, 1, 5, 5])])
    ds = load_coco(a, d)
    messages = [m for _, m in ds.report.problems]
    assert ds.report.counts() == {"malformed_box": 2}
    assert any("['a', 20, 40, 30] has a value that is not a number" in m for m in messages)
    block = summary(ds)
    assert "problems: ," not in block and "malformed_box          2" in block


def test_image_broken_after_load_is_skipped_by_the_pipeline(tmp_path, capsys):
    a, d = write_dataset(tmp_path, [ann(1, [1, 1, 5, 5]), ann(2, [1, 1, 5, 5], image=2)])
    ds = load_coco(a, d)
    (d / "b.png").write_bytes(b"not an image any more")
    batches = list(make_dataset(ds, DataConfig(max_boxes=2), batch_size=2, training=False))
    assert len(batches) == 1 and batches[0][0].shape[0] == 1  # the good image only
    assert "b.png" in capsys.readouterr().err


@pytest.mark.parametrize("crowd", ["0", "1", 2, None, [0]])
def test_an_iscrowd_that_is_not_0_or_1_is_refused(tmp_path, crowd):
    """A string "0" is truthy: accepted, it would make every object a crowd region."""
    a, d = write_dataset(tmp_path, [ann(1, [10, 10, 20, 5]), ann(2, [0, 0, 5, 5], crowd=crowd)])
    with pytest.raises(DataError, match=rf"1 annotation\(s\) have an iscrowd that is not 0 or 1, e.g. "
                                        rf"annotation 2: iscrowd {re.escape(repr(crowd))}"):
        load_coco(a, d)


def test_booleans_are_accepted_as_iscrowd(tmp_path):
    a, d = write_dataset(tmp_path, [ann(1, [10, 10, 20, 5], crowd=False), ann(2, [0, 0, 5, 5], crowd=True)])
    s1 = next(s for s in load_coco(a, d).samples if s.image_id == 1)
    np.testing.assert_array_equal(s1.labels, [1, -2])


def test_duplicate_ids_names_and_no_annotations_are_counted_warnings(tmp_path):
    a, d = write_dataset(tmp_path, [ann(5, [10, 10, 20, 5]), ann(5, [0, 0, 5, 5]), ann(6, [1, 1, 4, 4])],
                         categories=[{"id": 7, "name": "car"}, {"id": 3, "name": "car"}])
    ds = load_coco(a, d)
    c = ds.report.counts()
    assert (c["duplicate_annotation_id"], c["duplicate_category_name"]) == (1, 1)
    messages = dict(ds.report.problems)
    assert "2 annotations share 1 id(s): 5 (2x)" in messages["duplicate_annotation_id"]
    assert "categories 7, 3 are all named 'car'" in messages["duplicate_category_name"]
    assert sum(len(s.labels) for s in ds.samples) == 3  # all kept
    with pytest.raises(DataError, match="with --strict"):
        load_coco(a, d, strict=True)
    (tmp_path / "e").mkdir()
    empty, d2 = write_dataset(tmp_path / "e", [])
    assert load_coco(empty, d2).report.counts()["no_annotations"] == 1


def _bomb_png(path, width=60000, height=60000):
    """A 1 x 1 PNG whose header (IHDR, CRC fixed) claims ``width`` x ``height`` pixels."""
    import struct
    import zlib

    ok, buf = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))
    data = bytearray(buf.tobytes())
    data[16:24] = struct.pack(">II", width, height)  # IHDR's width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # its CRC (type + fields)
    path.write_bytes(bytes(data))
    return path


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    from detect.imagery.images import MAX_IMAGE_PIXELS, inspect_image

    bomb = _bomb_png(tmp_path / "bomb.png")
    message = r"bomb.png' claims 3,600,000,000 pixels, more than the 1,073,741,824 .*OPENCV_IO_MAX_IMAGE_PIXELS"
    assert MAX_IMAGE_PIXELS == 1 << 30
    with pytest.raises(ValueError, match=message):
        read_image(bomb)
    with pytest.raises(ValueError, match=message):
        inspect_image(bomb)
    # between the limit and Pillow's own refusal: the size is read from the header
    over = _bomb_png(tmp_path / "over.png", 40000, 30000)
    with pytest.raises(ValueError, match=r"claims 40000 x 30000 = 1,200,000,000 pixels"):
        read_image(over)
    # just under the limit is not refused for its size (this one then fails to decode: 1 real pixel)
    near = _bomb_png(tmp_path / "near.png", 32768, 32768)
    with pytest.raises(ValueError) as err:
        inspect_image(near)
    assert "claims" not in str(err.value)
    # in a dataset: that image is skipped and counted, the good one kept
    a, d = write_dataset(tmp_path, [ann(1, [10, 10, 20, 5])])
    _bomb_png(d / "b.png")
    ds = load_coco(a, d)
    assert ds.report.counts()["unreadable_image"] == 1 and len(ds.samples) == 1
    assert any("claims 3,600,000,000 pixels" in m for _, m in ds.report.problems)


def test_exif_orientation_is_honoured_by_the_dataset_check(tmp_path):
    """Stored 40 x 20, shown 20 x 40: boxes in the shown orientation are inside, no size mismatch."""
    from PIL import Image

    from detect.imagery.images import inspect_image

    (tmp_path / "img").mkdir()
    im = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "img" / "o.jpg", exif=exif, quality=95)
    assert inspect_image(tmp_path / "img" / "o.jpg") == (20, 40)
    coco = {"images": [{"id": 1, "file_name": "o.jpg", "width": 20, "height": 40}],
            "categories": [{"id": 1, "name": "car"}],
            "annotations": [ann(1, [2, 25, 10, 12], cat=1)]}  # y 25..37: inside 40 high, outside 20
    (tmp_path / "a.json").write_text(json.dumps(coco))
    ds = load_coco(tmp_path / "a.json", tmp_path / "img")
    assert not ds.report.problems
    np.testing.assert_allclose(ds.samples[0].boxes, [[2, 25, 12, 37]])
