"""Input files checked before TensorFlow loads, so a wrong path answers at once.

TensorFlow takes seconds to import (tens of seconds on a loaded machine);
these checks use only the standard library.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

#: What a ``.keras`` file written by Keras 3 always contains.
KERAS_MEMBERS = ("config.json", "metadata.json")


def check_model_file(path: str | Path) -> Path:
    """``path`` if it is a complete ``.keras`` archive; a clear error otherwise.

    Raises:
      FileNotFoundError: nothing at ``path``, or a folder.
      ValueError: a file that is not a complete ``.keras`` archive (random
        bytes, a truncated download or copy, another format), with what was found.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    if path.is_dir():
        raise FileNotFoundError(f"{str(path)!r} is a folder; give the model's .keras file "
                                f"(e.g. {path / 'model.keras'})")
    if not zipfile.is_zipfile(path):
        size = path.stat().st_size
        hint = " (empty)" if size == 0 else ""
        raise ValueError(f"{path} ({size} bytes{hint}) is not a .keras model file: not a zip archive, "
                         f"or truncated (an interrupted download or copy)")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            missing = [m for m in KERAS_MEMBERS if m not in names]
            if missing:
                raise ValueError(f"{path} is a zip archive but not a .keras model file (no {', '.join(missing)})")
            bad = z.testzip()
            if bad is not None:
                raise ValueError(f"{path} is damaged: {bad} fails its checksum")
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path} is not a complete .keras model file ({err})") from None
    return path


def read_json(path: str | Path, what: str, remedy: str = "delete it and run again"):
    """The JSON in ``path`` (a record, a job file, a fingerprint); a damaged or half-written one
    (a killed writer, a disk error, an edit by hand) is a ValueError naming the file and ``what``
    it is, never a bare ``JSONDecodeError``."""
    import json

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f"line {err.lineno} column {err.colno}: {err.msg}" if isinstance(err, json.JSONDecodeError) \
            else "not UTF-8 text"
        raise ValueError(f"{path}: damaged or half-written {what} ({where}); {remedy}") from err
