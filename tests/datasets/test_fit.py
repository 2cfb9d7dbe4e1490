import numpy as np

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
