"""How well anchors cover a dataset's boxes, and anchors chosen to cover them.

A ground-truth box can only be learned well if some anchor overlaps it with
IoU >= the matcher's positive threshold (0.5): otherwise it gets a single
low-quality match at best. :func:`best_anchor_iou` computes, for every box,
the best IoU over all anchors of all levels *at the anchors' real
positions* (a 12 px object between two stride-8 centres matches worse than
the same object centred on one).

That best IoU is found without an all-pairs matrix: for axis-aligned boxes
the overlap of two boxes of fixed shapes only shrinks as their centres move
apart along x or y, so at each level and anchor shape the best anchor is the
one whose centre ``(j + 0.5) * stride`` is nearest the box centre, i.e. the
cell that contains it. That is ``[M, levels, shapes]`` IoUs, exact.

:func:`fit_anchors` searches anchor size, octave scales and pyramid levels
(each unless pinned) for the best coverage; :func:`coverage_table` formats
the per-size-bucket report that ``detect train`` prints before training.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np

from detect.config import AnchorConfig
from detect.ops import numpy_boxes
from detect.ops.anchors import AnchorGenerator

#: Side-length buckets (px, sqrt(area)) of the coverage report.
SIZE_BUCKETS = (0, 8, 16, 32, 64, 128, math.inf)
#: ``detect train`` warns when fewer boxes than this share are covered.
COVERAGE_WARNING = 0.95

_ANCHOR_SIZES = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
_NUM_SCALES = (2, 3)
#: P2 (stride 4) quadruples the head's work of P3, so it is chosen only when
#: it covers at least this much larger a share of the boxes than P3 does.
P2_MIN_GAIN = 0.02


def anchor_shapes(cfg: AnchorConfig) -> np.ndarray:
    """``[L, A, 2]`` (width, height) of the anchors of each level, pixels: the anchor generator's
    own rule (:meth:`detect.ops.anchors.AnchorGenerator.level_shapes`), either convention."""
    gen = AnchorGenerator.from_config(cfg)
    return np.stack([gen.level_shapes(level) for level in gen.levels])


def best_anchor_iou(boxes: np.ndarray, cfg: AnchorConfig) -> np.ndarray:
    """``boxes [M, 4]`` xyxy (model-input pixels) -> ``[M]`` best IoU with any anchor."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(boxes):
        return np.zeros(0)
    shapes = anchor_shapes(cfg)  # [L, A, 2]
    strides = 2.0 ** np.arange(cfg.min_level, cfg.max_level + 1)  # [L]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    # nearest anchor centre per level: (j + offset) * stride nearest the box centre (offset 0.5:
    # the centre of the cell holding it)
    offset = AnchorGenerator.from_config(cfg).centre_offset
    shift = 0.5 - offset  # 0 for centres at (j + 0.5) * stride; 0.5 (round) for centres at j * stride
    ax = (np.floor(cx[:, None] / strides + shift) + offset) * strides  # [M, L]
    ay = (np.floor(cy[:, None] / strides + shift) + offset) * strides
    aw, ah = shapes[None, :, :, 0], shapes[None, :, :, 1]  # [1, L, A]
    anchors = np.stack([ax[..., None] - aw / 2, ay[..., None] - ah / 2,
                        ax[..., None] + aw / 2, ay[..., None] + ah / 2], axis=-1)  # [M, L, A, 4]
    return numpy_boxes.iou(anchors, boxes[:, None, None, :]).reshape(len(boxes), -1).max(axis=1)


@dataclass(frozen=True)
class Coverage:
    """Share of boxes whose best anchor reaches ``threshold``, overall and per size bucket."""

    threshold: float
    sides: np.ndarray  # [M] sqrt(area), model pixels
    best_iou: np.ndarray  # [M]

    @property
    def share(self) -> float:
        return float((self.best_iou >= self.threshold).mean()) if len(self.best_iou) else 1.0

    def buckets(self) -> list[tuple[str, int, float]]:
        """``[(label, boxes, covered share), ...]`` for the non-empty size buckets."""
        rows = []
        for lo, hi in zip(SIZE_BUCKETS[:-1], SIZE_BUCKETS[1:]):
            inside = (self.sides >= lo) & (self.sides < hi)
            if inside.any():
                label = f"{lo}-{hi}" if math.isfinite(hi) else f">={lo}"
                rows.append((label, int(inside.sum()),
                             float((self.best_iou[inside] >= self.threshold).mean())))
        return rows


def box_sides(boxes: np.ndarray) -> np.ndarray:
    """``[N, 4]`` xyxy boxes -> ``[N]`` sides, sqrt(area), in the boxes' pixels.

    Expects valid boxes (x1 > x0, y1 > y0), as ``load_coco`` and ``model_boxes`` give: a
    negative extent is not clamped (its side is NaN, or real for two negative extents)."""
    return np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))


def coverage(boxes: np.ndarray, cfg: AnchorConfig, threshold: float = 0.5) -> Coverage:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return Coverage(threshold, box_sides(boxes), best_anchor_iou(boxes, cfg))


def anchor_range(cfg: AnchorConfig) -> tuple[float, float]:
    """Smallest and largest anchor side (sqrt(area)), pixels."""
    shapes = anchor_shapes(cfg)
    sides = np.sqrt(shapes[..., 0] * shapes[..., 1])
    return float(sides.min()), float(sides.max())


def fit_anchors(boxes: np.ndarray, base: AnchorConfig, *, pinned=(), threshold: float = 0.5
                ) -> tuple[AnchorConfig, Coverage]:
    """The anchor layout that covers ``boxes`` best, searching the fields not in ``pinned``.

    ``pinned``: names of :class:`AnchorConfig` fields to keep (``"anchor_size"``,
    ``"num_scales"``, ``"min_level"``, ``"max_level"``; aspect ratios are
    always kept). Among layouts within half a percent of the best coverage,
    the one with the highest mean best IoU wins; for each, the smallest
    ``max_level`` that loses nothing is used (fewer, emptier levels are
    wasted computation and false positives). The pyramid starts at P3 unless
    starting at P2 covers :data:`P2_MIN_GAIN` more of the boxes (objects of
    about 8-16 px, whose centres fall too far from stride-8 anchors).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if "min_level" in pinned:
        return _best_layout(boxes, base, pinned, threshold, (base.min_level,))
    p3 = _best_layout(boxes, base, pinned, threshold, (3,))
    if p3[1].share >= COVERAGE_WARNING:
        return p3
    p2 = _best_layout(boxes, base, pinned, threshold, (2,))
    return p2 if p2[1].share >= p3[1].share + P2_MIN_GAIN else p3


def _best_layout(boxes, base: AnchorConfig, pinned, threshold: float, mins) -> tuple[AnchorConfig, Coverage]:
    sizes = (base.anchor_size,) if "anchor_size" in pinned else _ANCHOR_SIZES
    scales = (base.num_scales,) if "num_scales" in pinned else _NUM_SCALES
    found = []
    for size, n, lo in itertools.product(sizes, scales, mins):
        his = (base.max_level,) if "max_level" in pinned else range(max(lo, 3), 8)
        best = None
        for hi in his:
            if hi < lo:
                continue
            cfg = replace(base, anchor_size=float(size), num_scales=n, min_level=lo, max_level=hi)
            cov = coverage(boxes, cfg, threshold)
            if best is None or cov.share > best[1].share + 1e-3:
                best = (cfg, cov)
        if best is not None:
            found.append(best)
    if not found:
        raise ValueError(f"no anchor layout fits the pinned levels {base.min_level}..{base.max_level}")
    top = max(c.share for _, c in found)
    near = [f for f in found if f[1].share >= top - 0.005]
    return max(near, key=lambda f: float(f[1].best_iou.mean()))


def coverage_table(cov: Coverage, cfg: AnchorConfig) -> str:
    """The report ``detect train`` prints: covered share per object-size bucket."""
    lo, hi = anchor_range(cfg)
    lines = [f"anchor coverage (best anchor IoU >= {cov.threshold:g}): {cov.share:.1%} of "
             f"{len(cov.sides)} boxes; anchors {lo:.0f}-{hi:.0f} px on P{cfg.min_level}-P{cfg.max_level} "
             f"(anchor_size {cfg.anchor_size:g}, {cfg.num_scales} scales, ratios "
             f"{', '.join(f'{r:g}' for r in cfg.aspect_ratios)})",
             f"  {'size (px)':<12}{'boxes':>8}{'covered':>10}"]
    for label, n, share in cov.buckets():
        flag = "  <- low" if share < COVERAGE_WARNING else ""
        lines.append(f"  {label:<12}{n:>8}{share:>10.1%}{flag}")
    return "\n".join(lines)


def check_reachable(cov: Coverage, cfg: AnchorConfig) -> None:
    """Raise a ValueError naming the sizes when no box can be matched at all."""
    if not len(cov.sides) or cov.share > 0:
        return
    lo, hi = anchor_range(cfg)
    bs, bl = float(cov.sides.min()), float(cov.sides.max())
    if bl < lo:
        where = f"all smaller than the smallest anchor ({lo:.0f} px)"
        hint = ("upsample the images (data.target_object_side, or data.resize: scale with data.scale > 1) "
                "or lower anchors.anchor_size")
    elif bs > hi:
        where = f"all larger than the largest anchor ({hi:.0f} px)"
        hint = ("downsample the images (data.resize: scale with data.scale < 1, or data.image_size) "
                "or raise anchors.anchor_size / anchors.max_level")
    else:
        where = f"never overlapped by an anchor ({lo:.0f}-{hi:.0f} px) with IoU >= {cov.threshold:g}"
        hint = "check anchors.aspect_ratios against the boxes' shapes"
    raise ValueError(f"the training boxes ({bs:.1f}-{bl:.1f} px side, sqrt(area), as the model sees "
                     f"them) are {where}: the model could learn nothing. {hint}")
