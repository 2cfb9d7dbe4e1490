"""``detect doctor``: the dataset report ``detect train`` prints, on its own, as text and a PNG.

The same functions make both: :func:`~detect.datasets.coco.load_coco` (its
problem counts, or the refusal training would give),
:func:`~detect.datasets.coco.summary`, and
:func:`~detect.datasets.fit.fit_to_data` (the input rule, the anchors
fitted to the boxes and their coverage) for a training config; with a model
file, the coverage of that model's own anchors instead. Added here: boxes per
image (the densest images decide ``max_detections``) and the plots.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detect.datasets.coco import DataError, load_coco, summary


@dataclass
class DoctorReport:
    text: str
    refused: bool = False


def _model_config(path: Path):
    """The ModelConfig stored in a ``.keras`` file, read without TensorFlow."""
    from detect.config import ModelConfig
    from detect.util.files import check_model_file

    check_model_file(path)
    with zipfile.ZipFile(path) as z:
        layer = json.loads(z.read("config.json"))
    config = layer.get("config", {}).get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{path} is a Keras model but not a detect RetinaNet (no model config)")
    return ModelConfig.from_dict(config)


def doctor(ann, images, *, model=None, config=None, png=None) -> DoctorReport:
    """Check ``ann`` / ``images`` (see module doc); ``png``: also draw the report there."""
    from detect.config import DetectConfig, load_yaml
    from detect.datasets.anchor_fit import coverage, coverage_table
    from detect.datasets.fit import fit_to_data, model_boxes

    try:
        ds = load_coco(ann, images)
    except DataError as err:
        return DoctorReport(f"training would refuse this dataset: {err}", refused=True)
    lines = [summary(ds)]
    counts = np.array([int((s.labels >= 0).sum()) for s in ds.samples] or [0])
    lines.append(f"boxes per image: min {counts.min()}, median {np.median(counts):g}, "
                 f"95th percentile {np.percentile(counts, 95):g}, max {counts.max()}")
    from detect.config.recipes import recipe_path

    cfg = DetectConfig.from_dict(load_yaml(recipe_path(config))) if config else DetectConfig()
    if model:
        m = _model_config(Path(model))
        # prediction resamples imagery by the model's input scale
        boxes = np.concatenate([s.boxes[s.labels >= 0] for s in ds.samples] or [np.zeros((0, 4))]) * m.input.scale
        cov = coverage(boxes, m.anchors, m.matcher.positive_iou)
        anchors = m.anchors
        lines.append(f"anchors of {model}:")
        lines.append(coverage_table(cov, anchors))
    else:
        fitted, fit_lines = fit_to_data(cfg, ds)
        lines.append(f"what 'detect train{' --config ' + str(config) if config else ''}' would fit:")
        lines += fit_lines
        anchors = fitted.model.anchors
        boxes = np.concatenate(model_boxes(ds, fitted.data) or [np.zeros((0, 4))])
        cov = coverage(boxes, anchors, fitted.model.matcher.positive_iou)
    if png:
        _plot(ds, counts, cov, anchors, png)
    return DoctorReport("\n".join(lines))


def _plot(ds, counts, cov, anchors, path) -> None:
    """Class balance, object sizes against the anchors, coverage per size, boxes per image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from detect.datasets.anchor_fit import anchor_range
    from detect.util import atomic

    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    per_class = [int(sum((s.labels == i).sum() for s in ds.samples)) for i in range(len(ds.class_names))]
    order = np.argsort(per_class)[::-1][:30]
    ax[0, 0].barh([ds.class_names[i][:24] for i in order][::-1], [per_class[i] for i in order][::-1])
    ax[0, 0].set_title(f"boxes per class ({len(ds.class_names)} classes"
                       f"{', top 30' if len(ds.class_names) > 30 else ''})")
    sides = cov.sides[cov.sides > 0]
    if len(sides):
        bins = np.geomspace(max(1.0, sides.min() * 0.9), sides.max() * 1.1, 40)
        ax[0, 1].hist(sides, bins=bins, color="tab:blue")
        ax[0, 1].set_xscale("log")
    lo, hi = anchor_range(anchors)
    ax[0, 1].axvspan(lo, hi, color="tab:orange", alpha=0.15, label=f"anchors {lo:.0f}-{hi:.0f} px")
    ax[0, 1].set_title("object size, sqrt(area) in model pixels")
    ax[0, 1].legend()
    rows = cov.buckets()
    ax[1, 0].bar([r[0] for r in rows], [r[2] * 100 for r in rows], color="tab:green")
    for k, r in enumerate(rows):
        ax[1, 0].text(k, r[2] * 100 + 1, f"{r[1]}", ha="center", fontsize=8)
    ax[1, 0].set_ylim(0, 110)
    ax[1, 0].set_title(f"anchor coverage per size (IoU >= {cov.threshold:g}); numbers: boxes")
    ax[1, 0].set_ylabel("% of boxes")
    ax[1, 1].hist(counts, bins=min(50, max(5, int(counts.max()) + 1)), color="tab:purple")
    ax[1, 1].set_title("boxes per image")
    fig.tight_layout()
    atomic.write_with(path, lambda p: fig.savefig(p, dpi=90))
    plt.close(fig)
