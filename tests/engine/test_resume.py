"""Resuming a run: after an interruption, a kill between any two file operations of a
checkpoint commit, or a damaged newest checkpoint, training ends where an uninterrupted run does."""

import json

import numpy as np
import pytest
import tensorflow as tf

from detect.training import engine
from tests.engine import TINY, cfg


def test_resume_after_interruption_matches_uninterrupted_run(data, tmp_path, monkeypatch):
    tf.config.experimental.enable_op_determinism()
    ann, images = data
    full = engine.train(cfg(), train_ann=ann, train_images=images, run_dir=tmp_path / "a", verbose=0)

    original = engine._Guard.on_epoch_end

    def crash_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(engine._Guard, "on_epoch_end", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        engine.train(cfg(), train_ann=ann, train_images=images, run_dir=tmp_path / "b", verbose=0)
    monkeypatch.setattr(engine._Guard, "on_epoch_end", original)
    assert json.loads((tmp_path / "b" / "checkpoints" / "epoch-0001" / "state.json").read_text())["epoch"] == 1
    resumed = engine.train(cfg(), train_ann=ann, train_images=images, run_dir=tmp_path / "b",
                           resume=True, verbose=0)
    for a, b in zip(full.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


class _Killed(BaseException):
    """Stands in for kill -9: not an Exception, so nothing on the way catches it."""


COMMIT_OPS = ["checkpoint", "state", "metrics", "rename", "metrics copy", "prune"]


@pytest.mark.parametrize("op", COMMIT_OPS)
def test_kill_between_any_two_file_operations_of_a_commit_resumes_exactly(data, tmp_path, monkeypatch, op):
    """A failure injected after each file operation of epoch 2's commit (KEEP=1, so the
    commit also prunes epoch 1) leaves a run that resumes to the uninterrupted result."""
    from detect.training import runs

    tf.config.experimental.enable_op_determinism()
    ann, images = data
    monkeypatch.setattr(runs, "KEEP", 1)
    full = _full_run(data, tmp_path.parent)
    seen = []

    def hook(name):
        seen.append(name)
        if len(seen) > len(COMMIT_OPS) - 1 and name == op:  # in epoch 2's commit (epoch 1 has no prune)
            raise _Killed(name)

    monkeypatch.setattr(runs, "_file_op_done", hook)
    with pytest.raises(_Killed):
        engine.train(cfg(), train_ann=ann, train_images=images, run_dir=tmp_path / "b", verbose=0)
    monkeypatch.setattr(runs, "_file_op_done", lambda name: None)
    committed = runs.RunFolder(tmp_path / "b").latest()
    assert committed.epoch == (2 if COMMIT_OPS.index(op) >= COMMIT_OPS.index("rename") else 1)
    assert [r["epoch"] for r in committed.metrics] == [str(e + 1) for e in range(committed.epoch)]
    resumed = engine.train(cfg(), train_ann=ann, train_images=images, run_dir=tmp_path / "b",
                           resume=True, verbose=0)
    for a, b in zip(full.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]  # each epoch once


_FULL = {}


def _full_run(data, root):
    """The uninterrupted reference run, trained once per test session."""
    if "model" not in _FULL:
        ann, images = data
        _FULL["model"] = engine.train(cfg(), train_ann=ann, train_images=images,
                                      run_dir=root / "full_reference", verbose=0)
    return _FULL["model"]


def test_damaged_newest_checkpoint_falls_back_to_the_one_before(data, tmp_path, capsys):
    from detect.training import runs

    tf.config.experimental.enable_op_determinism()
    ann, images = data
    engine.train(cfg(), train_ann=ann, train_images=images, run_dir=tmp_path / "r", verbose=0)
    newest = tmp_path / "r" / "checkpoints" / "epoch-0002" / "checkpoint.keras"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    resumed = engine.train(cfg(), train_ann=ann, train_images=images, run_dir=tmp_path / "r",
                           resume=True, verbose=0)
    err = capsys.readouterr().err
    assert "epoch-0002 is damaged" in err and "trying the epoch before" in err
    full = _full_run(data, tmp_path.parent)
    for a, b in zip(full.get_weights(), resumed.get_weights()):  # epoch 2 trained again, exactly
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for folder in (tmp_path / "r" / "checkpoints").iterdir():
        (folder / "checkpoint.keras").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no intact checkpoint to resume from"):
        runs.RunFolder(tmp_path / "r").latest()


def test_resume_needs_a_checkpoint(tmp_path, data):
    ann, images = data
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        engine.train(cfg(), train_ann=ann, train_images=images, run_dir=tmp_path, resume=True)


def test_cli_train_and_resume(data, tmp_path):
    from detect.cli.main import main

    ann, images = data
    sets = [x for s in TINY + ["train.epochs=1"] for x in ("--set", s)]
    run = tmp_path / "run"
    assert main(["train", "--train-ann", str(ann), "--train-images", str(images),
                 "--out", str(run), *sets]) == 0
    assert (run / "model.keras").is_file() and (run / "run.yaml").is_file()
    # resuming a finished run is harmless: nothing left to train, model rewritten
    assert main(["train", "--resume", str(run)]) == 0
    assert main(["train", "--train-ann", str(ann), "--out", str(tmp_path / "new")]) == 2  # no --train-images
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2




@pytest.mark.slow
def test_ctrl_c_during_training_is_one_line_with_the_resume_command(data, tmp_path):
    """A real SIGINT to a `detect train` process after its first epoch was committed: exit 130,
    one line naming the exact --resume command, no traceback, and only whole epochs on disk."""
    import os
    import signal
    import subprocess
    import sys
    import time

    ann, images = data
    run = tmp_path / "run"
    args = [sys.executable, "-m", "detect", "train", "--train-ann", str(ann), "--train-images", str(images),
            "--out", str(run), *[x for s in TINY + ["train.epochs=200"] for x in ("--set", s)]]
    # a child inherits an ignored SIGINT (an earlier test in this worker, e.g. Ray's, may leave
    # it so) and would then train all 200 epochs: give it the default, as a terminal does
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoints" / "epoch-0001").is_dir():
            assert proc.poll() is None and time.monotonic() < deadline, "no epoch was committed"
            time.sleep(0.2)
        time.sleep(0.5)  # inside a later epoch's steps
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, out[-3000:] + err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("detect train: interrupted after epoch-") and \
        last.endswith(f"continue with: detect train --resume {run}")
    epochs = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert epochs and all(p.startswith("epoch-") and (run / "checkpoints" / p / "state.json").is_file()
                          for p in epochs)  # no half-written epoch folder
