#!/usr/bin/env python
"""Generate a deterministic, aerial-like COCO detection dataset.

Scenes are textured ground (grass / soil noise, roads) with small and medium
objects seen from above: ``pool`` (blue, rounded), ``car`` (small, many
colours, in rows along roads) and ``building`` (larger roofs with a shadow).
Objects are rotated by arbitrary angles; the COCO box is the axis-aligned
box of the rotated shape, clipped to the image. Some images are empty.

    python tools/make_synthetic.py --out data/sample --images 40 --size 256 --seed 0

Writes ``OUT/images/*.jpg`` and ``OUT/annotations.json`` (COCO instances).
The same arguments always give byte-identical files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from detect.util import atomic

CATEGORIES = [
    {"id": 1, "name": "pool", "supercategory": "object"},
    {"id": 2, "name": "car", "supercategory": "object"},
    {"id": 3, "name": "building", "supercategory": "object"},
]

# (min side, max side) in pixels, and aspect (long / short) ranges per class.
_SIZES = {"pool": ((10, 22), (1.2, 2.0)), "car": ((5, 8), (1.8, 2.4)),
          "building": ((22, 48), (1.0, 1.8))}


def _ground(rng: np.random.Generator, size: int) -> np.ndarray:
    """Grass / soil texture with a couple of roads, RGB uint8 [size, size, 3]."""
    base = np.array(rng.choice([[70, 110, 50], [110, 100, 70], [90, 120, 60]]), np.float32)
    noise = rng.normal(0, 1, (size // 8 + 1, size // 8 + 1)).astype(np.float32)
    noise = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 6, (size, size)).astype(np.float32)
    img = base[None, None, :] + (noise * 14 + fine)[..., None]
    for _ in range(rng.integers(0, 3)):
        p = rng.uniform(0, size, 2)
        angle = rng.uniform(0, np.pi)
        d = np.array([np.cos(angle), np.sin(angle)]) * size * 2
        cv2.line(img, tuple(map(int, p - d)), tuple(map(int, p + d)), (95, 95, 95), int(rng.integers(6, 12)))
    return img


def _rotated_rect(cx, cy, w, h, angle_deg) -> np.ndarray:
    return cv2.boxPoints(((float(cx), float(cy)), (float(w), float(h)), float(angle_deg)))


def _draw_object(img, rng, name, cx, cy):
    (lo, hi), (alo, ahi) = _SIZES[name]
    short = rng.uniform(lo, hi)  # fixed ground resolution: sizes do not scale with the image
    long = short * rng.uniform(alo, ahi)
    angle = rng.uniform(0, 180)
    pts = _rotated_rect(cx, cy, long, short, angle)
    if name == "building":
        shadow = pts + np.array([short * 0.25, short * 0.25], np.float32)
        cv2.fillPoly(img, [shadow.astype(np.int32)], (30, 30, 30))
        roof = rng.choice([[150, 70, 60], [160, 160, 160], [120, 90, 70]])
        cv2.fillPoly(img, [pts.astype(np.int32)], tuple(float(c) for c in roof))
        cv2.line(img, tuple(map(int, (pts[0] + pts[1]) / 2)), tuple(map(int, (pts[2] + pts[3]) / 2)),
                 tuple(float(c) * 0.8 for c in roof), 1)
    elif name == "pool":
        cv2.fillPoly(img, [pts.astype(np.int32)], (235, 235, 230))  # deck
        inner = _rotated_rect(cx, cy, long * 0.8, short * 0.7, angle)
        cv2.fillPoly(img, [inner.astype(np.int32)], (60, 170, 220))
    else:
        colour = rng.choice([[200, 30, 30], [230, 230, 230], [20, 20, 20], [40, 60, 180], [180, 180, 40]])
        cv2.fillPoly(img, [pts.astype(np.int32)], tuple(float(c) for c in colour))
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    return x0, y0, x1, y1


def make_scene(rng: np.random.Generator, size: int, empty: bool):
    img = _ground(rng, size)
    objects = []
    if not empty:
        n = int(rng.integers(2, 4 + size // 40))
        for _ in range(n):
            name = str(rng.choice(["pool", "car", "building"], p=[0.3, 0.4, 0.3]))
            cx, cy = rng.uniform(0, size, 2)
            x0, y0, x1, y1 = _draw_object(img, rng, name, cx, cy)
            x0, y0 = max(0.0, float(x0)), max(0.0, float(y0))
            x1, y1 = min(float(size), float(x1)), min(float(size), float(y1))
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                objects.append((name, [x0, y0, x1 - x0, y1 - y0]))
        # clutter: small blobs that are not objects
        for _ in range(int(rng.integers(0, 6))):
            c = tuple(map(int, rng.uniform(0, size, 2)))
            cv2.circle(img, c, int(rng.integers(2, 6)), tuple(float(v) for v in rng.uniform(20, 120, 3)), -1)
    img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    return img, objects


def make_dataset(out: Path, *, images: int, size: int, seed: int, empty_fraction: float = 0.1) -> Path:
    """Write ``images`` scenes to ``out``; returns the annotation file path."""
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    cat_id = {c["name"]: c["id"] for c in CATEGORIES}
    coco = {"info": {"description": f"detect synthetic aerial scenes (seed {seed})"},
            "images": [], "annotations": [], "categories": CATEGORIES}
    ann_id = 1
    for i in range(images):
        empty = rng.uniform() < empty_fraction
        img, objects = make_scene(rng, size, empty)
        name = f"scene_{i:04d}.jpg"
        cv2.imwrite(str(out / "images" / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
        coco["images"].append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for cname, (x, y, w, h) in objects:
            coco["annotations"].append({
                "id": ann_id, "image_id": i + 1, "category_id": cat_id[cname],
                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                "area": round(w * h, 2), "iscrowd": 0})
            ann_id += 1
    path = out / "annotations.json"
    atomic.write_json(path, coco, indent=1)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--images", type=int, default=40, help="number of scenes (default 40)")
    p.add_argument("--size", type=int, default=256, help="side length in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--empty-fraction", type=float, default=0.1, help="share of empty scenes")
    args = p.parse_args(argv)
    path = make_dataset(args.out, images=args.images, size=args.size, seed=args.seed,
                        empty_fraction=args.empty_fraction)
    n = len(json.loads(path.read_text())["annotations"])
    print(f"wrote {args.images} images and {n} boxes to {path}")


if __name__ == "__main__":
    main()
