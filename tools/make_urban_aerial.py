#!/usr/bin/env python
"""Generate urban and airport scenes: a second look, unlike ``make_dense_aerial.py``'s.

A recipe measured on one generator can learn that generator's look; this one
shares no texture, palette or object shape with the forest-and-parking set,
so a recipe that wins on both is learning objects, not a drawing style:

- ground: tarmac with painted lines, concrete slabs in a grid, snow, desert
  sand with dunes, and coasts (water with ripples beside one of those); each
  scene has its own ground sample distance (objects at 0.45-1.2 times their
  nominal size), is tinted (warm, cold, sepia, near-grey), often crossed by
  cloud shadows, with haze, a vignette and sensor noise;
- ``aircraft``: a fuselage with swept wings and a tailplane, 30-120 px long
  nominal, any heading, light, dark or ground-coloured livery, with a cast
  shadow; mostly at airports, a few elsewhere;
- ``roof``: a building footprint (rectangle, 16-60 px nominal) with a
  gable ridge (two shaded halves) or a flat roof with a parapet, often
  touching its neighbours in blocks, one in four close to the ground's colour;
- ``boat``: a pointed hull with a wake, 10-40 px nominal, on water only.

Unlabelled distractors: painted markings, vents, small vehicles below the
size range, tree clumps, rows of shipping containers, parking-lot outlines,
swimming pools, piers. The COCO box is the axis-aligned extent of the
drawn shape, clipped to the image.

    python tools/make_urban_aerial.py --out /tmp/urban --images 64 --size 512 --seed 0

Writes ``OUT/images/*.png`` and ``OUT/annotations.json``; the same arguments
give identical files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from detect.util import atomic

CATEGORIES = [{"id": 1, "name": "aircraft", "supercategory": "object"},
              {"id": 2, "name": "roof", "supercategory": "object"},
              {"id": 3, "name": "boat", "supercategory": "object"}]
_TINTS = {"warm": (1.08, 1.0, 0.88), "cold": (0.9, 1.0, 1.12), "sepia": (1.1, 0.98, 0.8),
          "grey": (1.0, 1.0, 1.0)}


def _blur_noise(rng, size, cell, amp):
    n = rng.normal(0, 1, (size // cell + 2, size // cell + 2)).astype(np.float32)
    return cv2.resize(n, (size, size), interpolation=cv2.INTER_LINEAR) * amp


def _ground(rng, size):
    kind = str(rng.choice(["tarmac", "concrete", "water", "snow", "sand"]))
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    if kind == "tarmac":
        img = np.full((size, size, 3), rng.uniform(55, 95), np.float32)
        for _ in range(rng.integers(2, 6)):  # painted taxi lines
            y0, angle = rng.uniform(0, size), rng.uniform(0, np.pi)
            d = np.abs((yy - y0) * np.cos(angle) - (xx - size / 2) * np.sin(angle))
            img[d < rng.uniform(1, 3)] = (210, 190, 60) if rng.uniform() < 0.5 else (220, 220, 220)
    elif kind == "concrete":
        img = np.full((size, size, 3), rng.uniform(140, 190), np.float32)
        cell = int(rng.integers(24, 64))
        img[(yy.astype(int) % cell < 2) | (xx.astype(int) % cell < 2)] *= 0.7
    elif kind == "water":
        base = np.array([30, 60, 90], np.float32) * rng.uniform(0.7, 1.4)
        ripple = np.sin((xx * rng.uniform(0.1, 0.4) + yy * rng.uniform(0.1, 0.4))) * 6
        img = base[None, None] + ripple[..., None]
    elif kind == "snow":
        img = np.full((size, size, 3), rng.uniform(200, 240), np.float32) * np.array([0.95, 0.98, 1.0])
    else:  # sand with dunes
        img = np.array([200, 170, 120], np.float32)[None, None] * rng.uniform(0.8, 1.05) + \
            (np.sin(xx / rng.uniform(15, 40) + _blur_noise(rng, size, 64, 2)) * 14)[..., None]
    img = img + _blur_noise(rng, size, 48, 10)[..., None] + _blur_noise(rng, size, 4, 4)[..., None]
    return img, kind


def _poly(img, pts, colour):
    pts = np.round(np.asarray(pts, np.float32)).astype(np.int32)
    cv2.fillPoly(img, [pts], tuple(float(c) for c in colour), lineType=cv2.LINE_AA)


def _rot(points, cx, cy, angle):
    c, s = np.cos(angle), np.sin(angle)
    p = np.asarray(points, np.float32)
    return np.stack([cx + p[:, 0] * c - p[:, 1] * s, cy + p[:, 0] * s + p[:, 1] * c], axis=1)


def _aircraft(rng, img, cx, cy, length, angle, dull=lambda c: c):
    """Fuselage along x, swept wings and tailplane; returns every drawn point."""
    L, w = length, length * rng.uniform(0.08, 0.12)
    span = length * rng.uniform(0.8, 1.1)
    sweep = length * rng.uniform(0.05, 0.2)
    fus = [(-L / 2, -w / 2), (L / 2 - w, -w / 2), (L / 2, 0), (L / 2 - w, w / 2), (-L / 2, w / 2)]
    wing = [(L * 0.1, 0), (-sweep, -span / 2), (-sweep - L * 0.12, -span / 2), (-L * 0.1, 0),
            (-sweep - L * 0.12, span / 2), (-sweep, span / 2)]
    tail = [(-L * 0.35, 0), (-L / 2, -span * 0.2), (-L / 2 + L * 0.06, 0), (-L / 2, span * 0.2)]
    livery = dull((235, 235, 235) if rng.uniform() < 0.7 else tuple(float(v) for v in rng.uniform(40, 200, 3)))
    shadow = np.array([L * 0.06, L * 0.08])
    parts = [_rot(p, cx, cy, angle) for p in (fus, wing, tail)]
    for p in parts:
        _poly(img, p + shadow, (25, 25, 30))
    for p in parts:
        _poly(img, p, livery)
    return np.concatenate(parts)


def _roof(rng, img, x0, y0, w, h, dull=lambda c: c):
    gable = rng.uniform() < 0.6
    colour = np.array(rng.choice([[150, 60, 50], [90, 90, 95], [170, 160, 150], [60, 80, 110]]), np.float32)
    colour = np.array(dull(colour * rng.uniform(0.8, 1.2)), np.float32)
    pts = np.array([(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)], np.float32)
    _poly(img, pts + (w * 0.12, h * 0.15), (30, 30, 35))  # shadow
    if gable and w > 6 and h > 6:
        if w >= h:  # ridge along x: two halves lit differently
            _poly(img, pts[[0, 1]].tolist() + [(x0 + w, y0 + h / 2), (x0, y0 + h / 2)], tuple(colour * 1.2))
            _poly(img, [(x0, y0 + h / 2), (x0 + w, y0 + h / 2)] + pts[[2, 3]].tolist(), tuple(colour * 0.7))
        else:
            _poly(img, [pts[0], (x0 + w / 2, y0), (x0 + w / 2, y0 + h), pts[3]], tuple(colour * 1.2))
            _poly(img, [(x0 + w / 2, y0), pts[1], pts[2], (x0 + w / 2, y0 + h)], tuple(colour * 0.7))
    else:
        _poly(img, pts, tuple(colour))
        cv2.rectangle(img, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), tuple(float(c) for c in colour * 0.6), 2)
        for _ in range(rng.integers(0, 4)):  # vents
            vx, vy = rng.uniform(x0 + 3, x0 + w - 3), rng.uniform(y0 + 3, y0 + h - 3)
            cv2.circle(img, (int(vx), int(vy)), 2, (200, 200, 200), -1)
    return pts


def _boat(rng, img, cx, cy, length, angle):
    L, w = length, length * rng.uniform(0.25, 0.35)
    hull = [(-L / 2, -w / 2), (L / 4, -w / 2), (L / 2, 0), (L / 4, w / 2), (-L / 2, w / 2)]
    wake = _rot([(-L / 2, -w / 3), (-L * 1.6, -w * 1.2), (-L * 1.6, w * 1.2), (-L / 2, w / 3)], cx, cy, angle)
    _poly(img, wake, (170, 185, 195))
    pts = _rot(hull, cx, cy, angle)
    _poly(img, pts, (240, 240, 235) if rng.uniform() < 0.6 else (160, 40, 40))
    return pts


def _box(points, size):
    x0, y0 = np.clip(points.min(axis=0), 0, size)
    x1, y1 = np.clip(points.max(axis=0), 0, size)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _smooth_mask(rng, size, cell, threshold):
    """A blobby boolean-ish mask in [0, 1]: coastlines and cloud shadows."""
    n = _blur_noise(rng, size, cell, 1.0) + _blur_noise(rng, size, max(cell // 4, 4), 0.3)
    return np.clip((n - threshold) * 3.0, 0.0, 1.0)


def _confusers(rng, img, land, size):
    """Unlabelled things a detector must learn to leave alone (each one met in real imagery)."""
    for _ in range(int(rng.integers(8, 30))):  # tree clumps, small vehicles below the size range
        x, y = rng.uniform(0, size, 2)
        if rng.uniform() < 0.5:
            cv2.circle(img, (int(x), int(y)), int(rng.uniform(3, 8)), (40, 70, 35), -1)
        else:
            cv2.rectangle(img, (int(x), int(y)), (int(x + rng.uniform(3, 6)), int(y + rng.uniform(2, 4))),
                          tuple(float(v) for v in rng.uniform(30, 220, 3)), -1)
    for _ in range(int(rng.integers(0, 4))):  # rows of shipping containers: roof-sized, no shadow side
        x, y = rng.uniform(0, size - 60, 2)
        if land[int(y), int(x)] < 0.5:
            continue
        cw, ch = rng.uniform(10, 18), rng.uniform(4, 6)
        for k in range(int(rng.integers(3, 8))):
            colour = tuple(float(v) for v in rng.choice([[170, 60, 40], [40, 80, 150], [200, 200, 200],
                                                          [60, 120, 70]]))
            cv2.rectangle(img, (int(x), int(y + k * ch * 1.3)), (int(x + cw), int(y + k * ch * 1.3 + ch)),
                          colour, -1)
    for _ in range(int(rng.integers(0, 3))):  # parking lots and courtyards: outlines, nothing raised
        x, y, w, h = *rng.uniform(0, size - 40, 2), *rng.uniform(20, 70, 2)
        cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), (205, 205, 200), 1)
        for k in range(1, int(w // 8)):
            cv2.line(img, (int(x + k * 8), int(y)), (int(x + k * 8), int(y + h * 0.3)), (205, 205, 200), 1)
    for _ in range(int(rng.integers(0, 3))):  # swimming pools
        x, y = rng.uniform(0, size - 20, 2)
        cv2.rectangle(img, (int(x), int(y)), (int(x + rng.uniform(6, 14)), int(y + rng.uniform(4, 8))),
                      (90, 200, 215), -1)
    if (land < 0.5).any():
        for _ in range(int(rng.integers(0, 4))):  # piers and jetties: long and thin, boat-coloured
            x, y = rng.uniform(0, size, 2)
            angle, length = rng.uniform(0, np.pi), rng.uniform(30, 90)
            pts = _rot([(0, -2), (length, -2), (length, 2), (0, 2)], x, y, angle)
            _poly(img, pts, (150, 140, 125))


def make_scene(rng, size):
    """One scene: RGB uint8 ``[size, size, 3]`` and ``[(category_id, xywh), ...]``.

    Each scene has its own ground sample distance (objects 0.45-1.2 times their
    nominal size), often a coastline (water beside land, so boats, roofs and
    aircraft share scenes), cloud shadows over objects and ground alike, and
    liveries and roofs that sometimes barely differ from the ground.
    """
    img, kind = _ground(rng, size)
    if kind == "water":  # water scenes become coasts: boats on one side, a town on the other
        img_land, kind = _ground(rng, size)
        while kind == "water":
            img_land, kind = _ground(rng, size)
        land = _smooth_mask(rng, size, 128, rng.uniform(-0.4, 0.4))
        water = img
        img = img_land * land[..., None] + water * (1 - land[..., None])
    else:
        land = np.ones((size, size), np.float32)
    ground_mean = img.reshape(-1, 3).mean(axis=0)
    gsd = rng.uniform(0.45, 1.2)  # one scale per scene, as one flight height per image
    _confusers(rng, img, land, size)
    objects = []
    area = (size / 512) ** 2
    taken = np.zeros((size, size), np.uint8)  # footprints drawn so far: objects touch, never hide

    def free(x0, y0, x1, y1, on_land=True):
        x0, y0, x1, y1 = (int(np.clip(v, 0, size)) for v in (x0, y0, x1, y1))
        if x1 <= x0 or y1 <= y0 or taken[y0:y1, x0:x1].mean() > 0.05:
            return False
        under = land[y0:y1, x0:x1]
        if (under.min() < 0.9) if on_land else (under.max() > 0.1):
            return False
        taken[y0:y1, x0:x1] = 1
        return True

    def dull(colour):  # a livery or roof close to the ground's own colour, one time in four
        if rng.uniform() < 0.25:
            return tuple(float(v) for v in ground_mean * rng.uniform(0.8, 1.25))
        return colour

    if (land < 0.5).any():
        for _ in range(int(rng.integers(15, 50) * area)):
            length, (cx, cy) = max(8.0, rng.uniform(10, 40) * gsd), rng.uniform(10, size - 10, 2)
            if free(cx - length / 2, cy - length / 2, cx + length / 2, cy + length / 2, on_land=False):
                pts = _boat(rng, img, cx, cy, length, rng.uniform(0, 2 * np.pi))
                objects.append((3, _box(pts, size)))
    airport = kind in ("tarmac", "concrete") and rng.uniform() < 0.7
    if airport or rng.uniform() < 0.15:
        for _ in range(int(rng.integers(4, 16) * area)):
            length, (cx, cy) = rng.uniform(30, 120) * gsd, rng.uniform(0, size, 2)
            if free(cx - length * 0.45, cy - length * 0.45, cx + length * 0.45, cy + length * 0.45):
                pts = _aircraft(rng, img, cx, cy, length, rng.uniform(0, 2 * np.pi), dull)
                objects.append((1, _box(pts, size)))
    blocks = rng.integers(1, 4) if airport else rng.integers(3, 9)  # terminals and hangars at airports
    for _ in range(int(blocks * area)):
        bx, by = rng.uniform(-20, size - 40, 2)
        rows, cols = rng.integers(1, 4), rng.integers(1, 5)
        w, h = rng.uniform(16, 60) * gsd, rng.uniform(16, 60) * gsd
        for r in range(rows):
            for c in range(cols):
                ww, hh = w * rng.uniform(0.75, 1.0), h * rng.uniform(0.75, 1.0)
                x0, y0 = bx + c * w * 1.02, by + r * h * 1.04
                if free(x0, y0, x0 + ww, y0 + hh):
                    objects.append((2, _box(_roof(rng, img, x0, y0, ww, hh, dull), size)))
    objects = [(c, b) for c, b in objects if b[2] >= 4 and b[3] >= 4]
    if rng.uniform() < 0.5:  # cloud shadows darken objects and ground alike
        img *= (1 - rng.uniform(0.3, 0.55) * _smooth_mask(rng, size, 96, rng.uniform(0.2, 0.8)))[..., None]
    img = img * np.array(_TINTS[str(rng.choice(list(_TINTS)))], np.float32)
    haze = rng.uniform(0, 0.35)
    img = img * (1 - haze) + 200 * haze
    yy, xx = (np.mgrid[:size, :size].astype(np.float32) - size / 2) / size
    img *= (1 - rng.uniform(0, 0.5) * (xx ** 2 + yy ** 2))[..., None]  # vignette
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.2)) + rng.normal(0, rng.uniform(1, 6), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), objects


def make_dataset(out: Path, *, images: int, size: int = 512, seed: int = 0) -> Path:
    """Write ``images`` scenes and their COCO annotations under ``out``; returns the annotation file."""
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": CATEGORIES}
    for i in range(images):
        img, objects = make_scene(rng, size)
        name = f"urban_{i:04d}.png"
        cv2.imwrite(str(out / "images" / name), img[..., ::-1])
        coco["images"].append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for cat, box in objects:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1,
                                        "category_id": cat, "bbox": [round(v, 2) for v in box],
                                        "area": round(box[2] * box[3], 2), "iscrowd": 0})
    ann = out / "annotations.json"
    atomic.write_json(ann, coco, indent=None)
    return ann


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--images", type=int, default=64, help="number of scenes (default 64)")
    p.add_argument("--size", type=int, default=512, help="side length in pixels (default 512)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    ann = make_dataset(args.out, images=args.images, size=args.size, seed=args.seed)
    print(f"wrote {ann}")


if __name__ == "__main__":
    main()
