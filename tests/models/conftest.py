import numpy as np
import pytest

from detect.config import ModelConfig

#: A narrow model that builds in about a second: ResNet-18 at width 8, 16-channel FPN.
TINY = dict(num_classes=3, class_names=("pool", "car", "building"), backbone="resnet18",
            backbone_width=8, fpn_channels=16, head_convs=1)


def tiny_config(**overrides) -> ModelConfig:
    return ModelConfig.from_dict({**TINY, **overrides})


@pytest.fixture(scope="module")
def tiny_model():
    from detect.models import build_retinanet

    return build_retinanet(tiny_config())


def square_scenes(n, size=128, seed=0, texture=0.0):
    """Images with bright, non-overlapping squares (class = colour) and padded targets.

    ``texture``: standard deviation of Gaussian pixel noise over the whole image (0: flat
    grey background, flat squares; the same squares either way). A flat tile makes every
    GroupNorm group nearly constant, which divides float rounding by ~sqrt(epsilon):
    comparisons of arithmetic (quantised vs float) need texture, as real imagery has."""
    rng = np.random.default_rng(seed)
    colours = np.array([[255, 40, 40], [40, 255, 40], [40, 40, 255]], np.float32)
    images = np.full((n, size, size, 3), 90.0, np.float32)
    boxes = np.zeros((n, 3, 4), np.float32)
    labels = -np.ones((n, 3), np.int32)
    for i in range(n):
        for j in range(int(rng.integers(1, 4))):
            side = int(rng.integers(size // 6, size // 3))
            for _ in range(100):  # rejection sampling: no occlusion, 4 px apart
                x0, y0 = rng.integers(0, size - side, 2)
                if all(x0 > b[2] + 4 or x0 + side + 4 < b[0] or y0 > b[3] + 4 or y0 + side + 4 < b[1]
                       for b in boxes[i, :j]):
                    break
            else:
                raise AssertionError("could not place a non-overlapping square")
            cls = int(rng.integers(0, 3))
            images[i, y0:y0 + side, x0:x0 + side] = colours[cls]
            boxes[i, j] = [x0, y0, x0 + side, y0 + side]
            labels[i, j] = cls
    if texture:
        noise = np.random.default_rng([seed, 1]).normal(0.0, texture, images.shape)
        images = np.clip(images + noise, 0, 255).astype(np.float32)
    return images, {"boxes": boxes, "labels": labels}


def write_square_dataset(folder, images, targets, names) -> dict:
    """Write ``square_scenes`` output as a COCO dataset: ``folder/NAME.png`` images and the
    ground truth dict (returned; category ``k + 1`` is ``names[k]``)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    gt = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    for i, (img, boxes, labels) in enumerate(zip(images, targets["boxes"], targets["labels"])):
        cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2BGR))
        gt["images"].append({"id": i + 1, "file_name": f"{i}.png", "width": img.shape[1], "height": img.shape[0]})
        for b, lab in zip(boxes, labels):
            if lab >= 0:
                x0, y0, x1, y1 = map(float, b)
                gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1,
                                          "category_id": int(lab) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                          "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    return gt
