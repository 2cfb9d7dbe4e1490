"""Generated COCO ground truth + results with the awkward cases the issue lists."""

import numpy as np


def make_case(seed: int, *, images=12, cats=(1, 3, 7), crowd=True, many_dets=True,
              absent_category=True, size=200.0):
    """Returns (gt dict, results list).

    Includes: images with no ground truth, images with no detections, crowd
    annotations, a category (the last) that has ground truth but no detections,
    and one image with more than 100 detections.
    """
    rng = np.random.default_rng(seed)
    gt = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": size, "height": size}
                     for i in range(1, images + 1)],
          "categories": [{"id": c, "name": f"c{c}"} for c in cats], "annotations": []}
    res = []
    aid = 1
    for im in gt["images"]:
        i = im["id"]
        n_obj = 0 if i % 5 == 0 else int(rng.integers(1, 12))  # some images without objects
        for _ in range(n_obj):
            w, h = rng.uniform(4, 80, 2)
            x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
            c = int(rng.choice(cats))
            is_crowd = crowd and rng.uniform() < 0.08
            gt["annotations"].append({"id": aid, "image_id": i, "category_id": c,
                                      "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(is_crowd)})
            aid += 1
            if i % 4 == 3 or (absent_category and c == cats[-1]):
                continue  # images without detections; a category never detected
            if rng.uniform() < 0.8:
                res.append({"image_id": i, "category_id": c, "score": float(rng.uniform(0.2, 1)),
                            "bbox": [x + rng.normal(0, w / 10), y + rng.normal(0, h / 10), w, h]})
        if i % 4 != 3:
            n_fp = 130 if (many_dets and i == 1) else int(rng.integers(0, 6))
            for _ in range(n_fp):
                w, h = rng.uniform(4, 60, 2)
                c = int(rng.choice(cats[:-1] if absent_category else cats))
                res.append({"image_id": i, "category_id": c, "score": float(rng.uniform(0, 0.7)),
                            "bbox": [float(rng.uniform(0, size - w)), float(rng.uniform(0, size - h)),
                                     float(w), float(h)]})
    ids = {r["image_id"] for r in res}
    assert any(im["id"] not in ids for im in gt["images"])  # images with no detections
    assert any(a["iscrowd"] for a in gt["annotations"]) or not crowd
    return gt, res
