"""Annotated images: line width, labels that never overlap, hidden labels / scores; videos as H.264."""

import numpy as np
import pytest

from detect.imagery.drawing import DrawStyle, draw, label_places

NAMES = ["pool", "car", "building"]


def dense_grid(n=12, step=14, side=10):
    """n x n touching small boxes, scores falling row by row."""
    boxes, scores = [], []
    for r in range(n):
        for c in range(n):
            boxes.append([10 + c * step, 30 + r * step, 10 + c * step + side, 30 + r * step + side])
            scores.append(0.99 - 0.005 * (r * n + c))
    return {"boxes": np.array(boxes, np.float32), "scores": np.array(scores), "labels": np.arange(n * n) % 3}


def overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_labels_on_a_dense_scene_never_overlap_and_the_best_is_always_shown():
    det = dense_grid()
    places = label_places(det, NAMES, DrawStyle(), (220, 220, 3))
    assert 0 < len(places) < len(det["scores"])  # some left out: they would pile up
    assert places[0][0] == int(np.argmax(det["scores"]))
    for k, (_, _, a) in enumerate(places):
        assert all(not overlaps(a, b) for _, _, b in places[k + 1:])
    assert places[0][1] == "pool 0.99"
    assert label_places(det, NAMES, DrawStyle(scores=False), (220, 220, 3))[0][1] == "pool"
    assert label_places(det, NAMES, DrawStyle(labels=False), (220, 220, 3)) == []


@pytest.mark.parametrize("width", [1, 3, 6])
def test_line_width_in_pixels(width):
    img = np.zeros((100, 100, 3), np.uint8)
    det = {"boxes": np.array([[20, 30, 80, 70]], np.float32), "scores": np.array([0.9]), "labels": np.array([1])}
    out = draw(img, det, NAMES, DrawStyle(line_width=width, labels=False))
    column = out[:, 50].any(axis=1)  # a vertical cut through the top and bottom edges
    assert column.sum() == 2 * width
    no_text = draw(img, det, NAMES, DrawStyle(line_width=width, labels=False))
    with_text = draw(img, det, NAMES, DrawStyle(line_width=width))
    assert (with_text != no_text).any()  # the label is drawn


def test_annotated_video_is_h264(tmp_path):
    av = pytest.importorskip("av")
    from detect.inference.video_writer import VideoWriter

    w = VideoWriter(tmp_path / "v.mp4", 10.0, (65, 48))  # an odd width: padded to 66
    for k in range(12):
        frame = np.zeros((48, 65, 3), np.uint8)
        frame[:, k * 5:(k * 5) + 5] = 255
        w.write(frame)
    w.close()
    with av.open(str(tmp_path / "v.mp4")) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (66, 48)
        assert sum(1 for _ in c.decode(stream)) == 12


def _luminance(rgb):
    """WCAG relative luminance of an sRGB colour."""
    lin = [(v / 255) / 12.92 if v / 255 <= 0.04045 else ((v / 255 + 0.055) / 1.055) ** 2.4 for v in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


@pytest.mark.parametrize("side", [96, 1000, 4000])
def test_label_text_is_whole_and_contrasted_on_its_box_at_every_size(side):
    """Each class's label: the text drawn whole (its strokes not painted over) in an ink whose
    WCAG contrast with the label box is at least 4.5, at small and large image sizes."""
    from detect.imagery.drawing import DEFAULT_STYLE, draw, label_places
    from detect.imagery.images import CLASS_COLOURS

    names = [f"c{k}" for k in range(len(CLASS_COLOURS))]
    image = np.full((side, side, 3), 128, np.uint8)
    for k, colour in enumerate(CLASS_COLOURS):
        det = {"boxes": np.array([[side * 0.3, side * 0.4, side * 0.6, side * 0.7]]), "scores": np.array([0.13]),
               "labels": np.array([k])}
        out = draw(image, det, names)[..., ::-1]  # RGB
        ((_, text, (x0, y0, x1, y1)),) = label_places(det, names, DEFAULT_STYLE, image.shape)
        assert text == f"c{k} 0.13"
        patch = out[y0:y1, x0:x1].reshape(-1, 3)
        ink = min(patch.tolist(), key=lambda p: -abs(_luminance(p) - _luminance(colour)))
        hi, lo = sorted((_luminance(ink), _luminance(colour)), reverse=True)
        assert (hi + 0.05) / (lo + 0.05) >= 4.5, (colour, ink)
        # the label is a box of the class colour with the text's strokes in ink on it (an ink
        # outline around coloured strokes, as before, left the strokes a sliver of the patch)
        box = (np.abs(patch.astype(int) - np.array(colour)).sum(1) <= 30).mean()
        inked = (np.abs(patch.astype(int) - np.array(ink)).sum(1) <= 60).mean()
        assert box >= 0.4 and inked >= 0.05, (colour, box, inked)
