"""Evaluation plots as PNG (matplotlib, no display needed), readable at any class count.

- ``all_classes.png``: precision-recall at IoU 0.5 of the :data:`TOP`
  classes with the most objects, and the rest summarised as one curve (the
  mean precision of those classes at each recall, the average COCO takes),
  named with how many classes it holds;
- ``pr_ID_NAME.png`` per class; a class without ground-truth objects says
  so (its AP is undefined) instead of showing a curve;
- ``f1_vs_threshold.png`` (with the detections): F1 against the score
  threshold, pooled over classes and for the top classes, the operating
  point marked;
- ``confusion_matrix.png`` and ``.csv`` (with the detections): counts at the
  operating point with a background row and column
  (:mod:`detect.evaluation.confusion`); more than :data:`MATRIX_CLASSES`
  classes are shown as the most frequent ones plus "other".
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np

from detect.util import atomic

#: Classes drawn one by one in the summary plots.
TOP = 10
#: Classes shown one by one in the confusion matrix image (the CSV has all).
MATRIX_CLASSES = 25


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "class"


def top_classes(result, n: int = TOP) -> tuple[list[int], list[int]]:
    """Indices of the ``n`` classes with the most objects (ties: class order), and of the other
    classes with objects."""
    with_gt = [k for k, row in enumerate(result.per_class) if row["num_gt"] > 0]
    ranked = sorted(with_gt, key=lambda k: -result.per_class[k]["num_gt"])
    return ranked[:n], ranked[n:]


def write_pr_curves(result, out_dir: str | Path, *, gt: dict | None = None, detections=None,
                    points: dict | None = None) -> list[Path]:
    """Write the plots of the module doc; the F1 curve and the confusion matrix need ``gt``,
    ``detections`` (COCO results) and the operating ``points``. Returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rec = result.recall_thresholds
    prec = result.precision_iou50  # [R, K], -1 where no ground truth
    written = []

    def save(fig, name):
        written.append(atomic.write_with(out_dir / name, lambda p: fig.savefig(p, dpi=100, bbox_inches="tight")))
        plt.close(fig)

    top, rest = top_classes(result)
    fig, ax = plt.subplots(figsize=(7, 5))
    for k in top:
        row = result.per_class[k]
        ax.plot(rec, np.clip(prec[:, k], 0, 1), label=f"{result.category_names[k]} (AP50 {row['AP50']:.3f}, "
                                                       f"{row['num_gt']})")
    if rest:
        mean = np.clip(prec[:, rest], 0, 1).mean(1)
        ap = float(np.mean([result.per_class[k]["AP50"] for k in rest]))
        ax.plot(rec, mean, "k--", label=f"other {len(rest)} classes (mean; AP50 {ap:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"Precision-recall at IoU 0.5 (AP50 {result.stats[1]:.3f})")
    if top or rest:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), title="class (AP50, objects)",
                  title_fontsize=7)
    save(fig, "all_classes.png")
    for k, (name, row) in enumerate(zip(result.category_names, result.per_class)):
        fig, ax = plt.subplots(figsize=(5, 4))
        if row["num_gt"] > 0:
            ax.plot(rec, np.clip(prec[:, k], 0, 1))
            title = f"{name}: AP50 {row['AP50']:.3f}, {row['num_gt']} objects"
        else:
            ax.text(0.5, 0.5, "no ground-truth objects of this class:\nprecision and recall are undefined",
                    ha="center", va="center", fontsize=9)
            title = f"{name}: no ground truth"
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
        save(fig, f"pr_{row['category_id']}_{_slug(name)}.png")
    if gt is not None and detections is not None and points is not None:
        fig = _f1_figure(result, gt, detections, points, top)
        save(fig, "f1_vs_threshold.png")
        written += _confusion(result, gt, detections, points, out_dir, save)
    return written


def _f1_figure(result, gt, detections, points, top):
    import matplotlib.pyplot as plt

    from detect.evaluation.operating_point import f1_by_threshold, match_detections

    scores, hits, num_gt = match_detections(gt, detections)
    fig, ax = plt.subplots(figsize=(7, 5))
    cats = result.category_ids
    t, f, _, _ = f1_by_threshold(np.concatenate([[], *(scores[c] for c in cats)]),
                                 np.concatenate([[], *(hits[c] for c in cats)]).astype(bool),
                                 sum(num_gt[c] for c in cats))
    ax.plot(t, f, "k", lw=2, label="all classes")
    for k in top:
        c = cats[k]
        tc, fc, _, _ = f1_by_threshold(scores[c], hits[c], num_gt[c])
        ax.plot(tc, fc, lw=1, label=result.category_names[k])
    op = points["overall"]
    if op["score_threshold"] is not None:
        ax.axvline(op["score_threshold"], color="grey", ls=":")
        ax.plot([op["score_threshold"]], [op["f1"]], "ko")
        ax.annotate(f"operating point {op['score_threshold']:.3f}, F1 {op['f1']:.3f}",
                    (op["score_threshold"], op["f1"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set(xlabel="score threshold", ylabel="F1 at IoU 0.5", xlim=(0, 1), ylim=(0, 1.02),
           title="F1 against the score threshold")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def _confusion(result, gt, detections, points, out_dir: Path, save) -> list[Path]:
    import matplotlib.pyplot as plt

    from detect.evaluation.confusion import confusion_matrix

    threshold = points["overall"]["score_threshold"]
    threshold = 0.0 if threshold is None else threshold
    m = confusion_matrix(gt, detections, result.category_ids, threshold)
    names = list(result.category_names) + ["background"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([f"true \\ detected (score >= {threshold:.4g})", *names])
    for name, row in zip(names, m):
        w.writerow([name, *row.tolist()])
    csv_path = atomic.write_bytes(out_dir / "confusion_matrix.csv", buf.getvalue().encode())
    k = len(result.category_ids)
    if k > MATRIX_CLASSES:  # most frequent classes, the rest summed into "other"
        support = m[:k].sum(1) + m[:, :k].sum(0)
        keep = sorted(np.argsort(-support, kind="stable")[:MATRIX_CLASSES - 1])
        other = [i for i in range(k) if i not in keep]
        groups = [[i] for i in keep] + [other] + [[k]]
        m = np.array([[m[np.ix_(r, c)].sum() for c in groups] for r in groups])
        names = [names[i] for i in keep] + [f"other ({len(other)})", "background"]
    size = max(5, 0.45 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(np.log1p(m), cmap="Blues")
    for i in range(len(names)):
        for j in range(len(names)):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set(xlabel="detected", ylabel="true",
           title=f"Confusion at the operating point (score >= {threshold:.3f}, IoU 0.5)")
    save(fig, "confusion_matrix.png")
    return [csv_path]
