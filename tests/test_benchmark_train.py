"""tools/benchmark_train.py's bookkeeping: a throughput measurement that dies is retried, then
reported as NaN, so one crash does not lose the arms still queued; no run replaces another's
folder unasked."""

import math
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import benchmark_train  # noqa: E402


def _snippet(monkeypatch, code: str) -> None:
    monkeypatch.setattr(benchmark_train, "THROUGHPUT", code)


def test_a_measurement_is_the_last_number_printed(monkeypatch, tmp_path):
    _snippet(monkeypatch, "print('warming up'); print(7.25)")
    assert benchmark_train._tiles_per_second(tmp_path / "m.keras", tmp_path) == 7.25


def test_a_crash_is_retried_once(monkeypatch, tmp_path, capsys):
    marker = tmp_path / "crashed_once"
    # the first process dies of SIGSEGV, as TensorFlow's once did; the second measures
    _snippet(monkeypatch, f"import os, pathlib, signal\n"
                          f"m = pathlib.Path({str(marker)!r})\n"
                          f"if not m.exists():\n"
                          f"    m.touch(); os.kill(os.getpid(), signal.SIGSEGV)\n"
                          f"print(3.5)\n")
    assert benchmark_train._tiles_per_second(tmp_path / "m.keras", tmp_path) == 3.5
    out = capsys.readouterr().out
    assert f"try 1 of 2 died (exit {-signal.SIGSEGV})" in out and "not measured" not in out


def test_two_crashes_give_nan_and_say_so(monkeypatch, tmp_path, capsys):
    _snippet(monkeypatch, "import sys; sys.exit(3)")
    assert math.isnan(benchmark_train._tiles_per_second(tmp_path / "m.keras", tmp_path))
    out = capsys.readouterr().out
    assert "try 2 of 2 died (exit 3)" in out and "tiles/s shows as nan" in out


def _refused(capsys, tmp_path, *args) -> str:
    """Run the tool's main with ``args``; it must stop at argument checking, before generating."""
    try:
        benchmark_train.main(["--work", str(tmp_path), "--sets", "dense", *args])
    except SystemExit as stop:
        assert stop.code == 2
    else:
        raise AssertionError("the tool ran instead of refusing")
    assert not any(p.name.startswith("dense_") for p in tmp_path.iterdir())  # nothing generated
    return capsys.readouterr().err


def test_a_yaml_named_like_a_built_in_recipe_is_refused(capsys, tmp_path):
    yaml = tmp_path / "ablation" / "pretrained.yaml"
    yaml.parent.mkdir()
    yaml.write_text("train:\n  batch_size: 2\n")
    err = _refused(capsys, tmp_path, "--runs", f"pretrained:5m,{yaml}:5m")
    assert "would share a folder" in err and str(tmp_path / "runs" / "dense_pretrained_5m") in err


def test_the_same_run_twice_is_refused(capsys, tmp_path):
    err = _refused(capsys, tmp_path, "--runs", "aerial:2m,pretrained:2m,aerial:2m")
    assert "would share a folder" in err and "dense_aerial_2m" in err and "dense_pretrained_2m" not in err


def test_an_earlier_run_folder_is_refused_unless_overwrite(capsys, tmp_path):
    old = tmp_path / "runs" / "dense_aerial_2m"
    old.mkdir(parents=True)
    (old / "model.keras").write_bytes(b"earlier")
    err = _refused(capsys, tmp_path, "--runs", "aerial:2m,pretrained:2m")
    assert "1 run folder(s)" in err and str(old) in err and "--overwrite" in err
    assert (old / "model.keras").read_bytes() == b"earlier"
    assert benchmark_train.run_folders(tmp_path, ["dense", "urban"], [("aerial", "2m"), ("x/abl.yaml", "5m")]) == [
        tmp_path / "runs" / n for n in ("dense_aerial_2m", "dense_abl_5m", "urban_aerial_2m", "urban_abl_5m")]
