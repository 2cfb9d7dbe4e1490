"""What a user hands in: the suffixes ``detect`` reads, inputs (files, folders, globs) expanded to files,
image arrays checked, band lists parsed."""

from __future__ import annotations

import glob
import sys
import warnings
from pathlib import Path

import numpy as np

# lower case, in the order a stem is looked up (``convert`` finds NAME.jpg before NAME.png)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
#: Files read through rasterio (GDAL) when it is installed: TIFFs, and GDAL's virtual rasters
#: (a mosaic of tiles built with ``gdalbuildvrt``: predicted as one raster, so objects across
#: the tiles' edges are seen whole). A VRT is an input to predict, not a training image.
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v")
INPUT_SUFFIXES = IMAGE_SUFFIXES + (".vrt",) + VIDEO_SUFFIXES


def expand_sources(sources: list[str]) -> list[Path]:
    """Files from image paths, folders (non-recursive) and glob patterns, in order, once each.

    An argument naming an existing file is that file, even when its name has
    glob characters (``image #2 [draft].png``); otherwise ``*``, ``?`` or ``[``
    make it a pattern (quote it so the shell leaves it alone), and a pattern
    that matches nothing is an error. Folder entries that are not readable
    files (a broken or looping link) are skipped with a counted warning.
    """
    out: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            entries = sorted(f for f in p.iterdir() if f.suffix.lower() in INPUT_SUFFIXES)
            unreadable = [f.name for f in entries if not f.is_file()]  # is_file: False for a loop
            if unreadable:
                print(f"warning: skipped {len(unreadable)} entr{'y' if len(unreadable) == 1 else 'ies'} of {p} "
                      f"that {'is' if len(unreadable) == 1 else 'are'} not a readable file (a broken or "
                      f"looping link?): {', '.join(unreadable[:5])}", file=sys.stderr)
            out += [f for f in entries if f.is_file()]
        elif p.is_file():
            out.append(p)
        elif any(c in src for c in "*?["):
            matched = sorted(Path(f) for f in glob.glob(src, recursive=True)
                             if Path(f).suffix.lower() in INPUT_SUFFIXES and Path(f).is_file())
            if not matched:
                raise FileNotFoundError(f"input {src!r} is not a file, and as a glob pattern it matches no "
                                        f"image or video")
            out += matched
        else:
            raise FileNotFoundError(f"input {src!r} is not a file, folder or matching glob")
    seen, unique = set(), []
    for f in out:
        key = _identity(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    if not unique:
        raise FileNotFoundError(f"no images found in {sources}")
    return unique


def _identity(path: Path) -> Path:
    """The file a path names, for counting it once (its own absolute path if links cannot be followed)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: Python < 3.13 on a symlink loop
        return path.absolute()


def parse_bands(bands):
    """``"3,2,1"``, a sequence of ints or None -> a tuple of 1-based band numbers (or None)."""
    if bands is None or isinstance(bands, tuple):
        return bands
    if isinstance(bands, str):
        try:
            return tuple(int(b) for b in bands.split(","))
        except ValueError:
            raise ValueError(f"bands must be comma-separated band numbers, got {bands!r}") from None
    return tuple(int(b) for b in bands)


def parse_sources(source):
    """("arrays", [(name, array)]) or ("files", [Path]) from what the user handed in."""
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    if isinstance(source, np.ndarray):
        if source.ndim == 4:
            return "arrays", [(f"array[{i}]", a) for i, a in enumerate(source)]
        if source.ndim != 3:
            raise ValueError(f"an image array is [H, W, C] or a batch [B, H, W, C]; got shape {source.shape}")
        return "arrays", [("array", source)]
    if not items:
        raise ValueError("source is empty: give an image array, a path, a folder, a glob or a list of these")
    arrays = [isinstance(s, np.ndarray) for s in items]
    if all(arrays):
        for i, a in enumerate(items):
            if a.ndim != 3:
                raise ValueError(f"source[{i}]: an image array is [H, W, C]; got shape {a.shape}")
        return "arrays", [(f"array[{i}]", a) for i, a in enumerate(items)]
    if any(arrays):
        raise ValueError("source mixes arrays and paths: predict them in separate calls")
    bad = [s for s in items if not isinstance(s, (str, Path))]
    if bad:
        raise ValueError(f"source {bad[0]!r} ({type(bad[0]).__name__}) is neither an image array nor a path")
    named = [Path(s) for s in items if Path(s).is_file()]
    kinds = {f.suffix.lower() in VIDEO_SUFFIXES for f in named}
    if len(kinds) == 2:  # a folder or glob may hold both; files named one by one are one kind
        video = next(f for f in named if f.suffix.lower() in VIDEO_SUFFIXES)
        image = next(f for f in named if f.suffix.lower() not in VIDEO_SUFFIXES)
        raise ValueError(f"source names images and videos ({image} and {video}): predict them in "
                         f"separate calls (Results holds one item per image, one per video frame)")
    files = expand_sources([str(s) for s in items])
    return "files", files


def checked_array(name: str, a: np.ndarray, warned: list, channels: int = 3) -> np.ndarray:
    if a.ndim != 3 or a.shape[2] != channels:
        what = "an RGB image [H, W, 3]" if channels == 3 else f"the model's {channels} bands [H, W, {channels}]"
        raise ValueError(f"{name}: expected {what}, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.floating):
        top = float(np.nanmax(a)) if a.size else 0.0
        if top <= 1.0 and not warned:
            warned.append(True)
            warnings.warn(f"{name}: a float image whose maximum is {top:g} is almost certainly scaled 0..1; "
                          f"detect expects RGB 0..255: pass image * 255", stacklevel=4)
        return a.astype(np.float32, copy=False)
    return a
