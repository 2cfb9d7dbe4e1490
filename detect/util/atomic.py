"""Atomic file and folder writes: everything is written under a temporary
name next to its target, then put in place by one rename.

A reader (or a resumed run after ``kill -9``) therefore sees either the old
file or the complete new one, never a partial one. Temporary names keep the
target's suffix (``model.tmp.keras``, ``plot.tmp.png``) because Keras and
matplotlib choose the format from it; they also hold the writer's process
id, so two processes writing one file at once (the shards of a job) never
share a temporary file. A leftover temporary file from a killed process is
harmless: nothing reads ``*.tmpPID-RANDOM.*`` names.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def is_temporary(path: str | Path) -> bool:
    """True for a :func:`temporary_name` (a write in progress, or a killed writer's leftover)."""
    return re.fullmatch(r".+\.tmp\d+-[0-9a-f]{8}", Path(path).stem) is not None


def temporary_name(path: str | Path) -> Path:
    """``dir/name.tmpPID-RANDOM.suffix`` for ``dir/name.suffix``.

    Unique per call, so processes (or threads) that write the same file at
    once (the shards of one job writing ``predict.json``) never rename each
    other's temporary file away.
    """
    path = Path(path)
    return path.with_name(f"{path.stem}.tmp{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")


def write_with(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary path)``, then rename the result onto ``path``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_with(path, lambda p: p.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_with(path, lambda p: p.write_text(text))


def write_json(path: str | Path, data, *, indent: int | None = 1) -> Path:
    """JSON (NaN / inf refused: JSON has no such values; other types via ``str``)."""
    return write_text(path, json.dumps(data, indent=indent, default=str, allow_nan=False))


def save_model(model, path: str | Path) -> Path:
    """``model.save`` to a ``.keras`` file, atomically."""
    return write_with(path, lambda p: model.save(p))


@contextlib.contextmanager
def folder(path: str | Path) -> Iterator[Path]:
    """Fill a temporary folder inside the ``with`` block; it becomes ``path`` (which must
    not exist, or be an empty folder) by one rename at the end, or is removed on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
