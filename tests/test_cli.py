import subprocess
import sys

import pytest

from detect import __version__
from detect.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"detect {__version__}"


def test_help_lists_commands(capsys):
    assert main([]) == 0
    assert "usage: detect" in capsys.readouterr().out


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "detect", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "aerial" in out.stdout
