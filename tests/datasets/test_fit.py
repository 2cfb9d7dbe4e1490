import numpy as np
import pytest

from detect.config import DetectConfig
from detect.datasets.coco import CocoDataset, DataReport, Sample
from detect.datasets.fit import fit_to_data


def _dataset(counts, size=256, side=20.0):
    rng = np.random.default_rng(0)
    samples = []
    for i, n in enumerate(counts):
        xy = rng.uniform(0, size - side, (n, 2))
        boxes = np.concatenate([xy, xy + side], 1).astype(np.float32)
        samples.append(Sample(path=None, image_id=i + 1, width=size, height=size, boxes=boxes,
                              labels=np.zeros(n, np.int32)))
    return CocoDataset(samples, [7], ["tree"], DataReport())


def test_unpinned_settings_follow_the_data():
    cfg = DetectConfig().with_overrides(["data.resize=none"])
    fitted, lines = fit_to_data(cfg, _dataset([3, 180, 40]))
    assert fitted.data.max_boxes == 180
    # tile 512 on 256 px images: 4x the area -> 3 x 180 x 4
    assert fitted.model.postprocess.max_detections == 3 * 180 * 4
    assert fitted.model.postprocess.pre_nms_top_k >= 4 * fitted.model.postprocess.max_detections
    assert fitted.model.input.tile == 512 and fitted.model.input.scale == 1.0
    assert fitted.model.input.category_ids == (7,)
    assert fitted.model.anchors.anchor_size * 8 <= 24  # 20 px objects: anchors start small
    assert any("anchor coverage" in line for line in lines)


def test_fixed_resize_sets_the_scale():
    cfg = DetectConfig().with_overrides(["data.resize=fixed", "data.image_size=512"])
    fitted, _ = fit_to_data(cfg, _dataset([5, 5], size=256))
    assert fitted.model.input.scale == 2.0


def test_pinned_settings_are_kept_and_caps_counted():
    cfg = DetectConfig().with_overrides(["data.resize=none", "data.max_boxes=50",
                                         "model.anchors.anchor_size=2",
                                         "model.postprocess.max_detections=100"])
    fitted, lines = fit_to_data(cfg, _dataset([3, 180, 60]))
    assert fitted.data.max_boxes == 50 and fitted.model.anchors.anchor_size == 2.0
    assert fitted.model.postprocess.max_detections == 100
    text = "\n".join(lines)
    assert "drops 140 ground-truth boxes in 2 image(s)" in text  # 130 + 10
    assert "max_detections=100 is below the densest image's 180" in text


def _upsampling(side, *overrides, size=256):
    cfg = DetectConfig().with_overrides(["data.resize=none", *overrides])
    return fit_to_data(cfg, _dataset([20, 20], size=size, side=side))


def test_small_objects_are_upsampled_to_the_target_side():
    # median side 16 px, target 24: x1.5; the model's input scale follows (prediction resamples)
    fitted, lines = _upsampling(16.0, "data.target_object_side=24")
    assert (fitted.data.resize, fitted.data.scale) == ("scale", 1.5)
    assert fitted.model.input.scale == 1.5
    assert fitted.model.input.tile == 512  # 256 px images x1.5 = 384; a tile is at least 512
    assert "data.scale = 1.5: images upsampled x1.5 because the objects' median side 16.0 px" in "\n".join(lines)
    # the anchors are fitted to the boxes as the model sees them (x1.5): 24 px objects
    low = fitted.model.anchors.anchor_size * 2 ** fitted.model.anchors.min_level
    assert 12 <= low <= 24


def test_upsampling_rounds_and_caps():
    fitted, _ = _upsampling(18.0, "data.target_object_side=24")
    assert fitted.data.scale == 1.33  # 24 / 18 rounded to 2 decimals
    fitted, lines = _upsampling(8.0, "data.target_object_side=24")
    assert fitted.data.scale == 2.0  # 3 wanted, capped
    assert "(capped at x2; median after it 16.0 px)" in "\n".join(lines)


def test_objects_at_the_target_side_or_pinned_scales_are_left_alone():
    fitted, lines = _upsampling(30.0, "data.target_object_side=24")
    assert (fitted.data.resize, fitted.data.scale, fitted.model.input.scale) == ("none", 1.0, 1.0)
    assert "data.scale = 1 (native pixels): the objects' median side 30.0 px needs no upsampling" in "\n".join(lines)
    for pinned in (["data.resize=scale", "data.scale=1.25"], ["data.resize=fixed", "data.image_size=512"]):
        fitted, lines = _upsampling(10.0, "data.target_object_side=24", *pinned)
        assert not any(line.startswith("data.scale") for line in lines)
        assert fitted.model.input.scale == (1.25 if "data.scale=1.25" in pinned else 2.0)
    fitted, lines = _upsampling(10.0)  # the default target is 0: off
    assert fitted.data.resize == "none" and not any(line.startswith("data.scale") for line in lines)


def _mixed(large_side, crop, n_small=95, n_large=5):
    """One 512 px image of ``n_small`` 12 px objects and ``n_large`` large ones, fitted for target 24.

    With the default 100 objects a 256 px crop holds 25 on average: x1.76 would keep 8."""
    rng = np.random.default_rng(1)
    sides = np.array([12.0] * n_small + [large_side] * n_large, np.float32)
    xy = rng.uniform(0, 512 - sides[:, None], (len(sides), 2)).astype(np.float32)
    ds = CocoDataset([Sample(path=None, image_id=1, width=512, height=512,
                             boxes=np.concatenate([xy, xy + sides[:, None]], 1),
                             labels=np.zeros(len(sides), np.int32))], [7], ["tree"], DataReport())
    cfg = DetectConfig().with_overrides(["data.resize=none", "data.target_object_side=24",
                                         f"data.crop_size={crop}"])
    fitted, lines = fit_to_data(cfg, ds)
    return fitted, "\n".join(lines)


def test_upsampling_keeps_the_largest_objects_within_half_the_crop():
    # median 12 px wants x2; the 99th percentile side is 100 px: 0.5 x 256 / 100 = 1.28
    fitted, text = _mixed(100.0, crop=256)
    assert (fitted.data.resize, fitted.data.scale) == ("scale", 1.28)
    assert fitted.model.input.scale == pytest.approx(655 / 512, abs=1e-6)  # whole pixels: 512 -> 655
    assert ("data.scale = 1.28: images upsampled x1.28 because the objects' median side 12.0 px is below "
            "data.target_object_side=24; limited to x1.28 so that the largest objects (99th percentile "
            "side 100.0 px) stay within 0.5 x the 256 px crop side (data.crop_size); prediction") in text
    # 0.5 x 256 / 105 = 1.219...: rounded down, never past the room
    assert _mixed(105.0, crop=256)[0].data.scale == 1.21
    # large objects that already fill half a crop: native pixels, and the line says why
    fitted, text = _mixed(200.0, crop=256)
    assert (fitted.data.resize, fitted.model.input.scale) == ("none", 1.0)
    assert ("data.scale = 1 (native pixels): the objects' median side 12.0 px is below "
            "data.target_object_side=24; limited to x1 so that the largest objects (99th percentile "
            "side 200.0 px) stay within 0.5 x the 256 px crop side") in text
    # the large objects are only 1% of the boxes: below the 99th percentile they do not limit
    assert _mixed(200.0, crop=256, n_small=198, n_large=1)[0].data.scale == 2.0
    # no crops (whole images): only the x2 cap applies
    assert _mixed(200.0, crop=0)[0].data.scale == 2.0


def test_upsampling_keeps_enough_objects_in_a_crop():
    # 40 objects of 12 px in 512 x 512: 10 in a 256 px crop; 8 at x sqrt(10 / 8) = 1.118 -> 1.11
    fitted, text = _mixed(12.0, crop=256, n_small=40, n_large=0)
    assert fitted.data.scale == 1.11
    assert ("limited to x1.11 so that a 256 px crop still holds 8 objects on average (10.0 at native "
            "pixels) (data.crop_size)") in text
    # sparse (2.5 a crop): native pixels however small the objects
    fitted, text = _mixed(12.0, crop=256, n_small=10, n_large=0)
    assert (fitted.data.resize, fitted.model.input.scale) == ("none", 1.0)
    assert ("data.scale = 1 (native pixels): the objects' median side 12.0 px is below "
            "data.target_object_side=24; limited to x1 so that a 256 px crop still holds 8 objects") in text
    # larger crops hold more: 512 px crops of the same image (10 a crop) allow x1.11 again
    assert _mixed(12.0, crop=512, n_small=10, n_large=0)[0].data.scale == 1.11


def test_scale_needs_the_scale_resize():
    with pytest.raises(ValueError, match=r"data.scale: 1.5 needs data.resize: scale \(got 'none'\)"):
        DetectConfig().with_overrides(["data.resize=none", "data.scale=1.5"])
    with pytest.raises(ValueError, match="data.target_object_side: must be >= 0"):
        DetectConfig().with_overrides(["data.target_object_side=-1"])
