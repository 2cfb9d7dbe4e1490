"""The import contract in pyproject.toml ([tool.importlinter]): floors and no cycles, checked by
import-linter on the package, and shown to bite on copies of it with one planted import."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the ``detect`` package found in ``root``, with the repository's contracts."""
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def _verdicts(stdout: str) -> dict:
    """{"floors": "KEPT" | "BROKEN", "cycles": ...} from lint-imports' summary lines."""
    found = re.findall(r"^(floors|no import cycles)\b.*?\s(KEPT|BROKEN)$", stdout, re.S | re.M)
    return {("cycles" if name.startswith("no") else name): verdict for name, verdict in found}


def test_the_package_keeps_its_floors_and_has_no_cycles():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _verdicts(r.stdout) == {"floors": "KEPT", "cycles": "KEPT"}, r.stdout


@pytest.mark.parametrize("module, planted, broken", [
    # a lower floor importing a higher one, even inside a function
    ("imagery/tiling.py", "def _planted():\n    from detect.inference import predictor  # noqa\n", "floors"),
    ("evaluation/arrays.py", "import detect.datasets.coco  # noqa\n", "floors"),
    # two siblings of one floor that must stay independent
    ("datasets/fit.py", "import detect.models.fpn  # noqa\n", "floors"),
    # a cycle inside one package: sharded -> run -> sharded
    ("inference/sharded.py", "import detect.inference.run  # noqa\n", "cycles"),
])
def test_a_planted_import_breaks_the_contract(tmp_path, module, planted, broken):
    shutil.copytree(ROOT / "detect", tmp_path / "detect", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "detect" / module
    target.write_text(target.read_text() + "\n\n" + planted)
    r = _lint(tmp_path)
    assert r.returncode != 0, r.stdout
    assert _verdicts(r.stdout)[broken] == "BROKEN", r.stdout
