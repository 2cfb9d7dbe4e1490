"""Annotated pictures: boxes in class colours, labels with scores, legible at any size.

Used for ``--save-images``, annotated videos, the evaluation viewer's inputs and
:meth:`detect.structures.Detections.plot`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from detect.imagery.images import CLASS_COLOURS as COLOURS
from detect.imagery.images import display_rgb


@dataclass(frozen=True)
class DrawStyle:
    """How annotated images and videos are drawn (``--line-width``, ``--hide-labels``, ``--hide-scores``).

    ``line_width`` None: 1 px per started 800 px of the image's long side.
    Labels are placed above their box (inside it when the box is at the top
    edge) in descending score order, and one that would overlap a label
    already drawn is left out, so text never piles up on dense scenes.
    """

    line_width: int | None = None
    labels: bool = True
    scores: bool = True

    def to_dict(self) -> dict:
        return dict(self.__dict__)


#: Lines scaled to the image, labels with scores.
DEFAULT_STYLE = DrawStyle()


def label_places(det: dict, names, style: DrawStyle, shape) -> list[tuple[int, str, tuple]]:
    """``[(detection index, text, (x0, y0, x1, y1) of the text)]`` of the labels to draw on an
    image of ``shape`` (see :class:`DrawStyle`), in descending score order."""
    if not style.labels:
        return []
    h, w = shape[:2]
    font_scale = _font_scale(style, shape)
    scores = np.asarray(det["scores"], np.float64)
    placed = []
    for i in np.argsort(-scores, kind="stable"):
        x0, y0 = float(det["boxes"][i][0]), float(det["boxes"][i][1])
        label = int(det["labels"][i])
        text = f"{names[label]} {scores[i]:.2f}" if style.scores else f"{names[label]}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_PLAIN, font_scale, 1)
        ty = int(y0) - 3 if y0 - th - 4 >= 0 else int(y0) + th + 3  # above the box, else inside it
        tx = int(min(max(0, x0), max(0, w - tw)))
        box = (tx, ty - th - 1, tx + tw, ty + base)
        if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for _, _, b in placed):
            continue  # would cover another label
        placed.append((int(i), text, box))
    return placed


def _line_width(style: DrawStyle, shape) -> int:
    return style.line_width or max(1, -(-max(shape[:2]) // 800))


def _font_scale(style: DrawStyle, shape) -> float:
    return 0.8 * max(1.0, _line_width(style, shape) * 0.75)


def _luminance(rgb) -> float:
    """WCAG relative luminance of an sRGB colour; black text wins on colours above 0.179."""
    lin = [v / 255 / 12.92 if v / 255 <= 0.04045 else ((v / 255 + 0.055) / 1.055) ** 2.4 for v in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def draw(image: np.ndarray, det: dict, names, style: DrawStyle = DEFAULT_STYLE) -> np.ndarray:
    """Annotated BGR copy (class colours, names and scores) of an RGB image; of an N-band
    image, bands 1-3 are shown as RGB (one band as grey). See :class:`DrawStyle`."""
    out = cv2.cvtColor(np.ascontiguousarray(display_rgb(image)), cv2.COLOR_RGB2BGR)
    width = _line_width(style, out.shape)
    for (x0, y0, x1, y1), label in zip(det["boxes"], det["labels"]):
        c = COLOURS[int(label) % len(COLOURS)][::-1]
        for k in range(width):  # nested 1-px outlines: exactly `width` px, inside the box's extent
            cv2.rectangle(out, (int(x0) + k, int(y0) + k), (int(x1) - k, int(y1) - k), c, 1)
    scale = _font_scale(style, out.shape)
    for i, text, (tx, top, right, ty) in label_places(det, names, style, out.shape):
        # the text in black or white on a box of the class colour: an outline as thick as the
        # strokes ate them at small sizes ("car 0.13" read "0.133")
        c = COLOURS[int(det["labels"][i]) % len(COLOURS)]
        ink = (0, 0, 0) if _luminance(c) > 0.179 else (255, 255, 255)  # the higher WCAG contrast
        base = cv2.getTextSize(text, cv2.FONT_HERSHEY_PLAIN, scale, 1)[1]
        cv2.rectangle(out, (tx - 1, top - 1), (right + 1, ty), c[::-1], -1)
        cv2.putText(out, text, (tx, ty - base), cv2.FONT_HERSHEY_PLAIN, scale, ink, 1, cv2.LINE_AA)
    return out


#: Scenes with more pixels than this get no annotated image (``--save-images``).
MAX_DRAW_PIXELS = 64_000_000
