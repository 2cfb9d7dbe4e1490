#!/usr/bin/env python
"""Generate dense aerial-like scenes: touching tree crowns and parked cars on varied ground.

This is the hard case the dense-aerial recipe is measured on, not a look to
tune to: every scene draws its own ground (forest floor, grass, soil with
field stripes, asphalt), palette, illumination gradient, blur and noise, so
no two scenes share a texture. Objects are small (``--min-size`` to
``--max-size`` px, default 10-40) and packed:

- ``tree``: crowns in clumps, centres closer than their diameters, so crowns
  touch and overlap (the box is the visible disc's extent); each crown has a
  lit side, a shadowed side and leaf texture; hue varies per scene and crown.
- ``car``: rotated rectangles in parking rows, bumper to bumper, with a
  windscreen and a shadow.

Distractors (bushes below the size range, dark blobs, lines) are drawn but not
labelled. 80-200 objects per 512 x 512 scene by default (scaled by area).

    python tools/make_dense_aerial.py --out /tmp/dense --images 64 --size 512 --seed 0

Writes ``OUT/images/*.png`` and ``OUT/annotations.json``; the same arguments
give identical files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from detect.util import atomic

CATEGORIES = [{"id": 1, "name": "tree", "supercategory": "object"},
              {"id": 2, "name": "car", "supercategory": "object"}]

_GROUNDS = {  # base RGB and how strongly low-frequency noise modulates it
    "forest_floor": ((60, 75, 40), 18), "grass": ((95, 125, 60), 14),
    "soil": ((125, 105, 80), 16), "asphalt": ((85, 85, 88), 8), "dry": ((150, 140, 100), 14)}


def _noise(rng, size, cell, amp):
    n = rng.normal(0, 1, (size // cell + 2, size // cell + 2)).astype(np.float32)
    return cv2.resize(n, (size, size), interpolation=cv2.INTER_CUBIC) * amp


def _ground(rng, size):
    kind = str(rng.choice(list(_GROUNDS)))
    base, amp = _GROUNDS[kind]
    base = np.array(base, np.float32) * rng.uniform(0.94, 1.06, 3) * rng.uniform(0.75, 1.25)
    img = base[None, None] + (_noise(rng, size, 32, amp) + _noise(rng, size, 6, amp / 2)
                              + rng.normal(0, 4, (size, size)))[..., None]
    if kind in ("soil", "dry", "grass") and rng.uniform() < 0.6:  # field stripes
        period, angle = rng.uniform(6, 20), rng.uniform(0, np.pi)
        yy, xx = np.mgrid[:size, :size].astype(np.float32)
        img += (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) * 8)[..., None]
    return img, kind


def _roads(rng, img, size):
    rows = []
    for _ in range(int(rng.integers(0, 3))):
        p, angle = rng.uniform(0, size, 2), rng.uniform(0, np.pi)
        d = np.array([np.cos(angle), np.sin(angle)])
        width = int(rng.integers(14, 26))
        shade = float(rng.uniform(70, 120))
        cv2.line(img, tuple(map(int, p - d * size * 2)), tuple(map(int, p + d * size * 2)),
                 (shade, shade, shade + 3), width)
        rows.append((p, d, width))
    return rows


def _crown(rng, img, cx, cy, r, hue_shift, light):
    """A tree crown of radius ``r`` (px) with lit/shadowed sides and leaf texture."""
    green = np.array([40 + hue_shift, 95 + hue_shift * 0.5, 35], np.float32) * rng.uniform(0.75, 1.25)
    pad = int(r + 3)
    x0, y0 = int(cx) - pad, int(cy) - pad
    yy, xx = np.mgrid[y0:y0 + 2 * pad, x0:x0 + 2 * pad].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    # a slightly irregular outline: radius varies with angle
    wobble = 1 + 0.08 * np.sin(np.arctan2(dy, dx) * rng.integers(3, 7) + rng.uniform(0, 6))
    inside = np.hypot(dx, dy) <= r * wobble
    shade = 1 + 0.35 * (dx * light[0] + dy * light[1]) / r
    leaves = rng.normal(0, 10, inside.shape)
    colour = green[None, None] * shade[..., None] + leaves[..., None]
    h, w = img.shape[:2]
    ys, xs = np.nonzero(inside)
    ys, xs = ys + y0, xs + x0
    ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    img[ys[ok], xs[ok]] = colour[ys[ok] - y0, xs[ok] - x0]
    if not ok.any():
        return None
    return float(xs[ok].min()), float(ys[ok].min()), float(xs[ok].max() + 1), float(ys[ok].max() + 1)


def _car(rng, img, cx, cy, length, angle):
    width = length / rng.uniform(1.9, 2.4)
    pts = cv2.boxPoints(((float(cx), float(cy)), (float(length), float(width)), float(angle)))
    cv2.fillPoly(img, [(pts + 2).astype(np.int32)], (25, 25, 25))  # shadow
    colour = rng.choice([[200, 30, 30], [230, 230, 230], [20, 20, 25], [40, 60, 170], [170, 170, 50],
                         [120, 120, 125]])
    cv2.fillPoly(img, [pts.astype(np.int32)], tuple(float(c) for c in colour))
    glass = cv2.boxPoints(((float(cx), float(cy)), (float(length * 0.35), float(width * 0.8)), float(angle)))
    cv2.fillPoly(img, [glass.astype(np.int32)], (40, 50, 60))
    return pts.min(0), pts.max(0)


def make_scene(rng, size, *, min_size=10, max_size=40, density=1.0):
    """One scene -> (RGB uint8 image, [(class name, [x, y, w, h]), ...])."""
    img, kind = _ground(rng, size)
    roads = _roads(rng, img, size)
    objects = []
    scale = size * size / 512**2
    target = int(rng.integers(80, 201) * scale * density)
    light = rng.normal(0, 1, 2)
    light /= np.linalg.norm(light) + 1e-6
    hue = rng.uniform(-25, 25)
    tree_share = 0.2 if kind == "asphalt" else rng.uniform(0.5, 0.95)
    # cars: rows along roads (or a parking lot when there is none)
    n_cars = int(target * (1 - tree_share))
    lines = roads or [(rng.uniform(0, size, 2), np.array([1.0, 0.0]), 20)]
    while n_cars > 0:
        p, d, width = lines[int(rng.integers(len(lines)))]
        length = rng.uniform(max(min_size, 10), min(max_size, 26))
        normal = np.array([-d[1], d[0]])
        start = p + d * rng.uniform(-size, size) + normal * (width / 2 + length * 0.3) * rng.choice([-1, 1])
        angle = np.degrees(np.arctan2(d[1], d[0])) + (90 if rng.uniform() < 0.5 else 0)
        for k in range(int(rng.integers(3, 12))):
            c = start + d * k * length * 1.05
            if not (0 <= c[0] < size and 0 <= c[1] < size) or n_cars <= 0:
                continue
            (x0, y0), (x1, y1) = _car(rng, img, c[0], c[1], length, angle)
            x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(size, x1), min(size, y1)
            if x1 - x0 >= 4 and y1 - y0 >= 4:
                objects.append(("car", [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]))
            n_cars -= 1
    # trees: clumps of touching crowns, drawn back to front so later crowns occlude
    n_trees = target - len(objects)
    crowns = []
    while len(crowns) < n_trees:
        centre = rng.uniform(0, size, 2)
        for _ in range(int(rng.integers(3, 15))):
            r = rng.uniform(min_size, max_size) / 2
            crowns.append((centre + rng.normal(0, 1, 2) * r * 1.2, r))
            centre = crowns[-1][0] + rng.normal(0, 1, 2) * r * 1.5
            if len(crowns) >= n_trees:
                break
    drawn = []
    for (cx, cy), r in crowns:
        box = _crown(rng, img, cx, cy, r, hue, light)
        drawn.append(box)
    # a later crown may hide most of an earlier one: keep boxes whose crown stays mostly visible
    masks_visible = _visible_fraction(crowns, size)
    for box, vis in zip(drawn, masks_visible):
        if box is not None and vis >= 0.5 and box[2] - box[0] >= 4 and box[3] - box[1] >= 4:
            objects.append(("tree", [box[0], box[1], box[2] - box[0], box[3] - box[1]]))
    for _ in range(int(rng.integers(5, 30))):  # distractors
        c = tuple(map(int, rng.uniform(0, size, 2)))
        cv2.circle(img, c, int(rng.integers(2, max(3, min_size // 3))),
                   tuple(float(v) for v in rng.uniform(20, 110, 3)), -1)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.0))
    gradient = 1 + 0.25 * _noise(rng, size, size // 2, 1.0)
    img = img * gradient[..., None] + rng.normal(0, rng.uniform(2, 6), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), objects


def _visible_fraction(crowns, size):
    """Share of each crown's disc not covered by crowns drawn after it (coarse raster)."""
    owner = -np.ones((size, size), np.int32)
    areas = []
    yy, xx = np.mgrid[:size, :size]
    for i, ((cx, cy), r) in enumerate(crowns):
        x0, x1 = max(0, int(cx - r)), min(size, int(cx + r) + 1)
        y0, y1 = max(0, int(cy - r)), min(size, int(cy + r) + 1)
        if x1 <= x0 or y1 <= y0:
            areas.append(1)
            continue
        disc = np.hypot(xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy) <= r
        owner[y0:y1, x0:x1][disc] = i
        areas.append(max(int(disc.sum()), 1))
    visible = np.bincount(owner[owner >= 0], minlength=len(crowns))
    return visible / np.asarray(areas, np.float64)


def make_dataset(out: Path, *, images: int, size: int = 512, seed: int = 0, min_size: float = 10,
                 max_size: float = 40, density: float = 1.0) -> Path:
    """Write ``images`` scenes to ``out``; returns the annotation file path."""
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    cat_id = {c["name"]: c["id"] for c in CATEGORIES}
    coco = {"info": {"description": f"detect dense aerial scenes (seed {seed})"},
            "images": [], "annotations": [], "categories": CATEGORIES}
    for i in range(images):
        img, objects = make_scene(rng, size, min_size=min_size, max_size=max_size, density=density)
        name = f"dense_{i:04d}.png"
        cv2.imwrite(str(out / "images" / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        coco["images"].append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for cname, (x, y, w, h) in objects:
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": cat_id[cname],
                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                "area": round(w * h, 2), "iscrowd": 0})
    path = out / "annotations.json"
    atomic.write_json(path, coco, indent=None)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--images", type=int, default=64, help="number of scenes (default 64)")
    p.add_argument("--size", type=int, default=512, help="side length in pixels (default 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-size", type=float, default=10, help="smallest object side, px (default 10)")
    p.add_argument("--max-size", type=float, default=40, help="largest object side, px (default 40)")
    p.add_argument("--density", type=float, default=1.0, help="object count multiplier (default 1)")
    args = p.parse_args(argv)
    path = make_dataset(args.out, images=args.images, size=args.size, seed=args.seed,
                        min_size=args.min_size, max_size=args.max_size, density=args.density)
    n = len(json.loads(path.read_text())["annotations"])
    print(f"wrote {args.images} images and {n} boxes to {path}")


if __name__ == "__main__":
    main()
