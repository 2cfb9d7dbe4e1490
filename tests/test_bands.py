"""Multispectral input: the band rule, per-band stretch and statistics, kernel inflation, training."""

import json
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

import detect
from detect.imagery.images import BandRule, read_image, stretch_levels
from detect.models import build_retinanet
from detect.models.backbones import IMAGENET_STD_255, inflate_kernel
from tests.models.conftest import tiny_config

rasterio = pytest.importorskip("rasterio")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import make_synthetic  # noqa: E402


def write_tif(path, data):
    h, w, c = data.shape
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=c, dtype=data.dtype) as dst:
        dst.write(np.moveaxis(data, -1, 0))
    return path


# ---- the band rule ---------------------------------------------------------------


def test_band_rule_picks_and_names_the_file_and_count():
    assert BandRule().pick(4, "a.tif") == (1, 2, 3)  # RGB model: the 4th band (alpha / NIR) dropped
    assert BandRule().pick(1, "a.tif") == (1, 1, 1)  # grey repeated
    assert BandRule(4).pick(4, "a.tif") == (1, 2, 3, 4)
    assert BandRule(2, (5, 1)).pick(6, "a.tif") == (5, 1)
    with pytest.raises(ValueError, match=r"a.tif has 3 band\(s\); the model takes 4"):
        BandRule(4).pick(3, "a.tif")
    with pytest.raises(ValueError, match=r"b.tif has 4 band\(s\); the model takes 4, and band 7 of --bands "
                                         r"1,2,3,7 does not exist"):
        BandRule(4, (1, 2, 3, 7)).pick(4, "b.tif")
    # bands the model stored at training, not typed now: the message says so
    stored = BandRule.of(tiny_config(input_bands=4, bands=(1, 2, 3, 4)))
    with pytest.raises(ValueError, match=r"rgb.png has 3 band\(s\); the model takes 4, and band 4 of the "
                                         r"model's bands \(stored from --bands at training\) 1,2,3,4"):
        stored.pick(3, "rgb.png")
    cfg = tiny_config(input_bands=4, bands=(4, 3, 2, 1))
    assert BandRule.of(cfg) == BandRule(4, (4, 3, 2, 1))
    assert BandRule.of(cfg, (1, 2, 3, 5)) == BandRule(4, (1, 2, 3, 5))  # --bands replaces the stored bands
    with pytest.raises(ValueError, match=r"the model takes 4 band\(s\), got 3"):
        BandRule.of(cfg, (1, 2, 3))
    assert BandRule.of(tiny_config(), (2,)) == BandRule(3, (2, 2, 2))  # one band as grey for RGB


def test_four_band_png_keeps_file_order(tmp_path):
    rgba = np.zeros((8, 9, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 40  # R, G, B, NIR
    cv2.imwrite(str(tmp_path / "x.png"), rgba[..., [2, 1, 0, 3]])  # OpenCV writes BGRA
    got = read_image(tmp_path / "x.png", BandRule(4))
    assert got.shape == (8, 9, 4) and list(got[0, 0]) == [10, 20, 30, 40]
    assert list(read_image(tmp_path / "x.png")[0, 0]) == [10, 20, 30]  # RGB model: NIR dropped


def test_sixteen_bit_stretch_is_per_band_for_an_n_band_model(tmp_path):
    rng = np.random.default_rng(0)
    data = np.stack([rng.integers(100, 200, (40, 50)), rng.integers(20000, 60000, (40, 50))], -1).astype(np.uint16)
    path = write_tif(tmp_path / "two.tif", data)
    img = read_image(path, BandRule(2))
    for c in range(2):  # each band spans 0..255 on its own
        lo, hi = np.percentile(data[..., c], (2, 98))
        expect = np.clip((data[..., c].astype(np.float32) - lo) * 255 / (hi - lo), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(img[..., c], expect)
    lo, hi = stretch_levels(data.astype(np.float32), per_band=True)
    assert lo.shape == (2,) and lo[0] < 200 < lo[1]
    # all bands together (the RGB rule) would squash band 1 to black
    together = read_image(write_tif(tmp_path / "three.tif", np.concatenate([data, data[..., :1]], -1)))
    assert together[..., 0].max() == 0


def test_raster_source_reads_the_model_bands_with_per_band_levels(tmp_path):
    from detect.imagery.rasters import open_source

    data = np.zeros((30, 40, 5), np.uint16)
    for c in range(5):
        data[..., c] = np.arange(40)[None, :] * (c + 1) * 100
    src = open_source(write_tif(tmp_path / "five.tif", data), BandRule(4, (5, 1, 2, 3)))
    tile = src.read(0, 0, 40, 30)
    assert tile.shape == (30, 40, 4)
    lo, hi = src.levels
    assert lo.shape == (4,) and hi[0] == pytest.approx(np.percentile(data[..., 4], 98), rel=0.05)
    src.close()


# ---- the first convolution ---------------------------------------------------------


def test_inflate_kernel_golden_values():
    k = np.zeros((1, 1, 3, 2), np.float32)
    k[0, 0, :, 0] = [1.0, 2.0, 3.0]  # pretrained on inputs of std 1, 2, 4 (0..255 units)
    k[0, 0, :, 1] = [0.5, 0.5, 0.5]
    std = (1.0, 2.0, 4.0)
    out = inflate_kernel(k, 4, std, reverse_rgb=False)
    s = IMAGENET_STD_255
    rgb = np.array([1.0 * s / 1, 2.0 * s / 2, 3.0 * s / 4])
    np.testing.assert_allclose(out[0, 0, :, 0], np.r_[rgb, rgb.mean()] * 3 / 4, rtol=1e-6)
    # caffe weights see BGR: the kernel's channel axis is put back in RGB order
    rev = inflate_kernel(k, 3, std, reverse_rgb=True)
    np.testing.assert_allclose(rev[0, 0, :, 0], rgb[::-1], rtol=1e-6)
    one = inflate_kernel(k, 1, std, reverse_rgb=False)  # a single band: the sum of the RGB kernels
    np.testing.assert_allclose(one[0, 0, 0, 0], rgb.sum(), rtol=1e-6)


def test_standardised_rgb_with_imagenet_statistics_gives_the_pretrained_backbone_output(tmp_path):
    """Exactness of the kernel rescaling: with band statistics equal to ImageNet's, a 'bands'
    model's backbone computes what the RGB model with its own (torch) rule computes."""
    rgb_model = build_retinanet(tiny_config(backbone_norm="batch"))
    full = keras.Model(rgb_model.backbone.inputs, rgb_model.backbone.outputs)
    full.save_weights(tmp_path / "r18.weights.h5")
    base = dict(backbone_weights=str(tmp_path / "r18.weights.h5"), backbone_norm="batch")
    pretrained = build_retinanet(tiny_config(**base))
    mean = tuple(255 * m for m in (0.485, 0.456, 0.406))
    bands = build_retinanet(tiny_config(**base, input_normalization="bands", band_mean=mean,
                                        band_std=(IMAGENET_STD_255,) * 3))
    x = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    for a, b in zip(pretrained.backbone(pretrained.normalize(x)), bands.backbone(bands.normalize(x))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


def test_n_band_model_from_a_pretrained_file_and_its_normalisation(tmp_path):
    rgb_model = build_retinanet(tiny_config(backbone_norm="batch"))
    keras.Model(rgb_model.backbone.inputs, rgb_model.backbone.outputs).save_weights(tmp_path / "w.weights.h5")
    m = build_retinanet(tiny_config(backbone_weights=str(tmp_path / "w.weights.h5"), backbone_norm="batch",
                                    input_bands=5, band_mean=(1, 2, 3, 4, 5), band_std=(2, 2, 2, 2, 4)))
    k3 = rgb_model.backbone.get_layer("conv1_conv").kernel.numpy()
    k5 = m.backbone.get_layer("conv1_conv").kernel.numpy()
    torch_std = np.array([0.229, 0.224, 0.225]) * 255
    assert k5.shape[2] == 5
    np.testing.assert_allclose(k5, inflate_kernel(k3, 5, tuple(torch_std), False), rtol=1e-6)
    # every other backbone weight is the file's
    np.testing.assert_array_equal(m.backbone.get_layer("conv2_block1_1_conv").kernel.numpy(),
                                  rgb_model.backbone.get_layer("conv2_block1_1_conv").kernel.numpy())
    x = np.full((1, 32, 32, 5), 9.0, np.float32)
    np.testing.assert_allclose(np.asarray(m.normalize(x))[0, 0, 0], [4, 3.5, 3, 2.5, 1], rtol=1e-6)
    with pytest.raises(ValueError, match="needs model.band_mean"):
        build_retinanet(tiny_config(input_bands=4))
    with pytest.raises(ValueError, match="'caffe' is a rule for RGB"):
        build_retinanet(tiny_config(input_bands=4, input_normalization="caffe"))


# ---- training and prediction -------------------------------------------------------


@pytest.fixture(scope="module")
def four_band_run(tmp_path_factory):
    """A one-epoch RGB+NIR model trained on 16-bit 4-band GeoTIFFs (NIR = a bright copy of green)."""
    root = tmp_path_factory.mktemp("nir")
    ann = make_synthetic.make_dataset(root / "rgb", images=4, size=64, seed=3)
    coco = json.loads(ann.read_text())
    (root / "images").mkdir()
    for im in coco["images"]:
        rgb = cv2.cvtColor(cv2.imread(str(root / "rgb" / "images" / im["file_name"])), cv2.COLOR_BGR2RGB)
        nir = 255 - rgb[..., 1:2]
        data = np.concatenate([rgb, nir], -1).astype(np.uint16) * 200
        im["file_name"] = im["file_name"].rsplit(".", 1)[0] + ".tif"
        write_tif(root / "images" / im["file_name"], data)
    (root / "ann.json").write_text(json.dumps(coco))
    run = detect.train(root / "ann.json", root / "images", root / "run", bands="1,2,3,4", backbone="resnet18",
                       backbone_width=8, fpn_channels=16, head_convs=1, image_size=64, max_boxes=10,
                       batch_size=2, epochs=1, warmup_steps=2, optimizer="sgd", learning_rate=0.005, verbose=0)
    return run, root


def test_four_band_training_stores_bands_and_statistics(four_band_run):
    run, root = four_band_run
    m = detect.load_model(run.path / "model.keras")
    c = m.model_config
    assert (c.input_bands, c.bands, c.normalization) == (4, (1, 2, 3, 4), "bands")
    assert len(c.band_mean) == 4 and all(s > 0 for s in c.band_std)
    assert m.backbone.get_layer("conv1_conv").kernel.shape[2] == 4
    # the statistics are those of the (per-band stretched) training images
    from detect.datasets.coco import load_coco
    from detect.datasets.fit import band_statistics

    mean, std, used = band_statistics(load_coco(root / "ann.json", root / "images"), BandRule(4, (1, 2, 3, 4)))
    np.testing.assert_allclose(c.band_mean, mean, rtol=1e-4)
    assert used == 4


def test_four_band_model_predicts_its_bands_and_refuses_another_count(four_band_run, tmp_path):
    run, root = four_band_run
    files = sorted((root / "images").glob("*.tif"))
    res = detect.predict(run.path / "model.keras", files[0], score_threshold=0.0)
    assert len(res) == 1 and res[0].width == 64
    arrays = np.zeros((1, 64, 64, 4), np.float32)
    assert len(detect.predict(run.path / "model.keras", arrays)) == 1
    with pytest.raises(ValueError, match=r"the model takes 4 band\(s\), got 3"):
        detect.predict(run.path / "model.keras", files[0], bands="1,2,3")
    with pytest.raises(ValueError, match=r"model's 4 bands \[H, W, 4\]"):
        detect.predict(run.path / "model.keras", np.zeros((64, 64, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((32, 32, 3), np.uint8))
    out = detect.predict(run.path / "model.keras", tmp_path / "rgb.png", out=tmp_path / "o")
    assert out.summary["failed"] == [str(tmp_path / "rgb.png")]  # "has 3 band(s); the model takes 4"


def test_training_bands_beyond_the_files_band_count_is_one_clear_error(four_band_run, tmp_path):
    _, root = four_band_run
    with pytest.raises(ValueError, match=r"scene_\d+\.tif has 4 band\(s\); the model takes 4, and band 7 of "
                                         r"--bands \(model.bands\) 1,2,3,7 does not exist"):
        detect.train(root / "ann.json", root / "images", tmp_path / "r", bands="1,2,3,7", backbone="resnet18",
                     backbone_width=8, epochs=1, verbose=0)
