"""``curves.png`` of a training run: losses, learning rate and validation AP per epoch.

Drawn from the rows of ``metrics.csv`` (one dict per epoch, values as
strings), so it always shows exactly what the CSV holds; rewritten
atomically after every committed epoch.
"""

from __future__ import annotations

import math
from pathlib import Path

from detect.util import atomic


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """``(epochs, values)`` of ``key``: rows whose value is missing, not a number or not finite left out."""
    xs, ys = [], []
    for row in rows:
        try:
            value = float(row.get(key, ""))
        except ValueError:
            continue
        if math.isfinite(value):
            xs.append(int(row["epoch"]))
            ys.append(value)
    return xs, ys


def plot_panels(rows: list[dict]) -> list[tuple[str, list[str]]]:
    """``[(title, metric keys), ...]``: the panels ``curves.png`` draws, left to right (losses,
    learning rate, validation metrics), each only when the last row has one of its keys."""
    keys = [k for k in rows[-1] if k != "epoch"]
    panels = [("loss", [k for k in keys if k.endswith("loss")]),
              ("learning rate", [k for k in ("lr", "learning_rate") if k in keys]),
              ("validation", [k for k in keys if k.startswith("val_")])]
    return [(title, ks) for title, ks in panels if ks]


def write_curves(rows: list[dict], path: str | Path) -> Path | None:
    """Plot the run's metrics to ``path``; None (nothing written) before the first epoch."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = plot_panels(rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (title, ks) in zip(axes[0], panels):
        for k in ks:
            xs, ys = series(rows, k)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=k)
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if title == "validation":
            ax.set_ylim(0, max(0.05, max((max(series(rows, k)[1] or [0]) for k in ks), default=0) * 1.1))
    fig.tight_layout()
    written = atomic.write_with(path, lambda p: fig.savefig(p, dpi=90))
    plt.close(fig)
    return written
