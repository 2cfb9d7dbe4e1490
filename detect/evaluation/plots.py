"""Precision-recall curves as PNG (matplotlib, no display needed)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from detect import atomic


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "class"


def write_pr_curves(result, out_dir: str | Path) -> list[Path]:
    """One PNG per class plus ``all_classes.png`` (IoU 0.5, area all, 100 dets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rec = result.recall_thresholds
    prec = result.precision_iou50  # [R, K], -1 where no ground truth
    written = []

    def save(fig, name):
        written.append(atomic.write_with(out_dir / name, lambda p: fig.savefig(p, dpi=100)))
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 5))
    for k, (name, row) in enumerate(zip(result.category_names, result.per_class)):
        if (prec[:, k] > -1).any():
            ax.plot(rec, np.clip(prec[:, k], 0, 1), label=f"{name} (AP50 {row['AP50']:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"Precision-recall at IoU 0.5 (AP50 {result.stats[1]:.3f})")
    ax.legend(fontsize=7, loc="lower left")
    save(fig, "all_classes.png")
    for k, (name, row) in enumerate(zip(result.category_names, result.per_class)):
        fig, ax = plt.subplots(figsize=(5, 4))
        if (prec[:, k] > -1).any():
            ax.plot(rec, np.clip(prec[:, k], 0, 1))
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
               title=f"{name}: AP50 {row['AP50']:.3f}, {row['num_gt']} objects")
        save(fig, f"pr_{row['category_id']}_{_slug(name)}.png")
    return written
