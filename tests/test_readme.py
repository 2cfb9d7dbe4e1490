"""Every ```python block of the README runs, in order, as written (so the docs cannot drift)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = """
import sys, traceback
blocks = {blocks!r}
for i, code in enumerate(blocks):
    try:
        exec(compile(code, f"README.md python block {{i + 1}}", "exec"), {{"__name__": "__main__"}})
    except Exception:
        traceback.print_exc()
        sys.exit(f"README.md python block {{i + 1}} failed")
print("ran", len(blocks), "blocks")
"""


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readme_has_python_blocks():
    assert len(python_blocks((ROOT / "README.md").read_text())) >= 3


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path):
    # the blocks use the bundled data by relative path, as a user in the repo would
    (tmp_path / "data").symlink_to(ROOT / "data")
    blocks = python_blocks((ROOT / "README.md").read_text())
    r = subprocess.run([sys.executable, "-c", RUNNER.format(blocks=blocks)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-5000:])
    assert f"ran {len(blocks)} blocks" in r.stdout
