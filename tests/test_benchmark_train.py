"""tools/benchmark_train.py's bookkeeping: a throughput measurement that dies is retried, then
reported as NaN, so one crash does not lose the arms still queued."""

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
