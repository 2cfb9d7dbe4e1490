"""metrics.csv without always-empty columns, and curves.png drawn from it."""

from detect.curves import write_curves
from detect.runs import metrics_csv


def test_metrics_csv_leaves_out_columns_empty_or_nan_in_every_row():
    rows = [{"epoch": 1, "loss": "2.5", "val_AP": "nan", "lr": "0.01"},
            {"epoch": 2, "loss": "2.1", "val_AP": "nan", "lr": "0.005", "stage": "2"}]
    assert metrics_csv(rows) == "epoch,loss,lr,stage\n1,2.5,0.01,\n2,2.1,0.005,2\n"


def test_curves_png_from_rows(tmp_path):
    assert write_curves([], tmp_path / "c.png") is None and not (tmp_path / "c.png").exists()
    rows = [{"epoch": str(e), "box_loss": str(3 / e), "cls_loss": str(1 / e), "loss": str(4 / e),
             "lr": str(0.01 / e), "val_AP": str(0.1 * e), "val_AP50": "nan" if e == 1 else str(0.2 * e)}
            for e in range(1, 6)]
    path = write_curves(rows, tmp_path / "c.png")
    from PIL import Image

    w, h = Image.open(path).size
    assert w > 3 * h * 0.9  # three panels side by side: loss, learning rate, validation
