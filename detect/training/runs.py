"""The files of a training run, and how an epoch is committed and resumed.

A run folder holds::

    run.yaml            where the data is (so ``--resume RUN`` needs nothing else)
    config.yaml         the resolved DetectConfig (every fitted value and override)
    checkpoints/
      epoch-0004/       one committed epoch: checkpoint.keras (weights + optimizer),
      epoch-0005/       state.json ({"epoch", "steps_per_epoch"}) and metrics.csv
    metrics.csv         a copy of the newest committed epoch's metrics.csv
    curves.png          losses, learning rate and validation AP per epoch (from metrics.csv)
    logs/               TensorBoard
    model.keras         the final model (written once training ends)

An epoch is committed by filling a temporary folder and renaming it to
``checkpoints/epoch-NNNN``: one rename, so weights, training state and
metrics can never disagree after a ``kill -9``, whenever it lands. The last
:data:`KEEP` epochs are kept; resuming takes the newest one whose files are
intact and falls back to the one before with a warning.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from detect.training.curves import write_curves
from detect.util import atomic
from detect.util.files import check_model_file

#: Committed epochs kept in ``checkpoints/`` (the newest, and one to fall back to).
KEEP = 2

_EPOCH_PREFIX = "epoch-"


def _file_op_done(name: str) -> None:
    """Called after each file operation of a commit; tests make it raise to simulate a kill."""


@dataclass(frozen=True)
class Checkpoint:
    """One committed epoch."""

    folder: Path
    epoch: int  # completed epochs
    steps_per_epoch: int
    metrics: list[dict]  # one row per epoch so far

    @property
    def model_file(self) -> Path:
        return self.folder / "checkpoint.keras"


class RunFolder:
    """Paths and commits of one run folder (see the module doc)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.meta = self.path / "run.yaml"
        self.checkpoints = self.path / "checkpoints"
        self.metrics = self.path / "metrics.csv"
        self.curves = self.path / "curves.png"
        self.model = self.path / "model.keras"
        self.logs = self.path / "logs"

    def is_run(self) -> bool:
        return self.config.is_file() and self.meta.is_file()

    # ---- commit -------------------------------------------------------------

    def commit_epoch(self, model, epoch: int, steps_per_epoch: int, metrics: list[dict]) -> Path:
        """Write epoch ``epoch`` (completed epochs) as one rename; prune older epochs."""
        target = self.checkpoints / f"{_EPOCH_PREFIX}{epoch:04d}"
        if target.exists():  # a damaged epoch this run fell back from: out of the way, then gone
            trash = target.with_name(f".{target.name}.replaced")
            shutil.rmtree(trash, ignore_errors=True)
            target.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        with atomic.folder(target) as tmp:
            model.save(tmp / "checkpoint.keras")
            _file_op_done("checkpoint")
            (tmp / "state.json").write_text(json.dumps({"epoch": epoch, "steps_per_epoch": steps_per_epoch}))
            _file_op_done("state")
            (tmp / "metrics.csv").write_text(metrics_csv(metrics))
            _file_op_done("metrics")
        _file_op_done("rename")
        atomic.write_text(self.metrics, metrics_csv(metrics))
        _file_op_done("metrics copy")
        write_curves(metrics, self.curves)
        for old in self.committed()[KEEP:]:
            shutil.rmtree(old, ignore_errors=True)
            _file_op_done("prune")
        return target

    # ---- resume -------------------------------------------------------------

    def restore_metrics(self, checkpoint: Checkpoint) -> None:
        """Make ``metrics.csv`` the resumed epoch's (rows of later, lost epochs go)."""
        atomic.write_text(self.metrics, metrics_csv(checkpoint.metrics))
        write_curves(checkpoint.metrics, self.curves)

    def committed(self) -> list[Path]:
        """Committed epoch folders, newest first."""
        if not self.checkpoints.is_dir():
            return []
        found = [p for p in self.checkpoints.iterdir()
                 if p.is_dir() and p.name.startswith(_EPOCH_PREFIX) and p.name[len(_EPOCH_PREFIX):].isdigit()]
        return sorted(found, key=lambda p: int(p.name[len(_EPOCH_PREFIX):]), reverse=True)

    def latest(self) -> Checkpoint | None:
        """The newest intact committed epoch (None if there is none yet).

        A damaged one (e.g. a disk error, or a file edited by hand) is
        reported and skipped for the one before; when every kept epoch is
        damaged, a ValueError says so.
        """
        committed = self.committed()
        problems = []
        for folder in committed:
            try:
                return _read_checkpoint(folder)
            except (OSError, ValueError, KeyError) as err:
                problems.append(f"{folder}: {err}")
                print(f"warning: {folder} is damaged ({err}); trying the epoch before", file=sys.stderr)
        if committed:
            raise ValueError("no intact checkpoint to resume from: " + "; ".join(problems))
        return None


def _read_checkpoint(folder: Path) -> Checkpoint:
    state = json.loads((folder / "state.json").read_text())
    check_model_file(folder / "checkpoint.keras")  # a truncated or altered file fails here, before TF
    with open(folder / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return Checkpoint(folder, int(state["epoch"]), int(state["steps_per_epoch"]), rows)


def metrics_csv(rows: list[dict]) -> str:
    """Rows as CSV; columns in order of first appearance (a row without a column leaves it empty);
    a column empty or NaN in every row is left out."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    columns = [c for c in columns if any(str(r.get(c, "")).strip().lower() not in ("", "nan") for r in rows)]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


@dataclass
class Run:
    """A finished training run: its folder, the trained model and the metrics per epoch.

    ``metrics``: one dict per epoch as in ``metrics.csv`` (epoch, losses,
    learning rate, validation AP/AP50 when validated), numbers as floats.
    """

    path: Path
    model: object
    metrics: list[dict]

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, {len(self.metrics)} epochs)"


def finished_run(path: Path) -> Run:
    """The :class:`Run` in folder ``path``: its ``model.keras`` and ``metrics.csv``."""
    from detect.models.detector import load_detector

    metrics = []
    if (path / "metrics.csv").is_file():
        with open(path / "metrics.csv") as f:
            for row in csv.DictReader(f):
                metrics.append({k: _number(v) for k, v in row.items()})
    return Run(path, load_detector(path / "model.keras"), metrics)


def _number(text: str):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
