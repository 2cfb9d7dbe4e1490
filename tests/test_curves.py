"""metrics.csv without always-empty columns, and curves.png drawn from it."""

import pytest

from detect.training.curves import plot_panels, series, write_curves
from detect.training.runs import metrics_csv


def test_metrics_csv_leaves_out_columns_empty_or_nan_in_every_row():
    rows = [{"epoch": 1, "loss": "2.5", "val_AP": "nan", "lr": "0.01"},
            {"epoch": 2, "loss": "2.1", "val_AP": "nan", "lr": "0.005", "stage": "2"}]
    assert metrics_csv(rows) == "epoch,loss,lr,stage\n1,2.5,0.01,\n2,2.1,0.005,2\n"


def test_curves_png_from_rows(tmp_path):
    assert write_curves([], tmp_path / "c.png") is None and not (tmp_path / "c.png").exists()
    rows = [{"epoch": str(e), "box_loss": str(3 / e), "cls_loss": str(1 / e), "loss": str(4 / e),
             "lr": str(0.01 / e), "val_AP": str(0.1 * e), "val_AP50": "nan" if e == 1 else str(0.2 * e)}
            for e in range(1, 6)]
    assert plot_panels(rows) == [("loss", ["box_loss", "cls_loss", "loss"]), ("learning rate", ["lr"]),
                                 ("validation", ["val_AP", "val_AP50"])]
    assert series(rows, "val_AP50") == ([2, 3, 4, 5], pytest.approx([0.4, 0.6, 0.8, 1.0]))  # NaN left out
    assert series(rows, "loss") == ([1, 2, 3, 4, 5], pytest.approx([4, 2, 4 / 3, 1, 0.8]))
    assert series(rows + [{"epoch": "6", "loss": "inf"}, {"epoch": "7"}], "loss")[0] == [1, 2, 3, 4, 5]
    assert plot_panels([{"epoch": "1", "loss": "2"}]) == [("loss", ["loss"])]  # no empty panels
    path = write_curves(rows, tmp_path / "c.png")
    from PIL import Image

    w, h = Image.open(path).size
    assert w > 3 * h * 0.9  # three panels side by side: loss, learning rate, validation
    one = write_curves([{"epoch": "1", "loss": "2"}], tmp_path / "one.png")
    w1, h1 = Image.open(one).size
    assert w1 < 1.5 * h1  # one panel
