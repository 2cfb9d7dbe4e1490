"""Reading images of any common kind as RGB uint8.

The rule (also in the README):

- JPEG, PNG, TIFF, 8- or 16-bit (or float), 1, 3 or 4 bands.
- 1 band is repeated to 3 (grey -> RGB); 3 bands are RGB; 4 bands are RGB
  plus alpha / NIR, and the 4th band is dropped. More bands: refused with a
  message (pick bands with the prediction command's ``--bands``).
- 8-bit data is used as is. 16-bit and float data are stretched linearly
  from the 2nd to the 98th percentile of all bands together (colour balance
  kept) to 0..255; a constant image becomes 0.
- EXIF orientation is honoured (OpenCV applies it when decoding 8-bit
  colour or grey images).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

STRETCH_PERCENTILES = (2.0, 98.0)


def stretch_levels(values: np.ndarray) -> tuple[float, float]:
    """The stretch's ``(lo, hi)``: :data:`STRETCH_PERCENTILES` of the finite ``values``
    (all bands together); ``(0, 0)`` when none is finite."""
    values = np.asarray(values, np.float32).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(values, STRETCH_PERCENTILES)
    return float(lo), float(hi)


def stretch(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``data`` mapped linearly from ``[lo, hi]`` to 0..255 uint8 (clipped; NaN -> 0;
    constant data, ``hi <= lo``, -> 0)."""
    if hi <= lo:
        return np.zeros(data.shape, np.uint8)
    scaled = (np.nan_to_num(data.astype(np.float32), nan=lo) - lo) * (255.0 / (hi - lo))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """16-bit / float -> uint8 by the percentile stretch; uint8 passes through."""
    if image.dtype == np.uint8:
        return image
    return stretch(image, *stretch_levels(image))


def read_image(path: str | Path) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB from ``path`` (see the module rule); clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.size == 0:
        raise ValueError(f"image file {str(path)!r} could not be decoded")
    bands = 1 if raw.ndim == 2 else raw.shape[2]
    if raw.dtype == np.uint8 and bands in (1, 3):
        # decode again through the path that applies EXIF orientation
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if bands > 4:
        raise ValueError(f"image file {str(path)!r} has {bands} bands; 1, 3 or 4 are supported")
    img = to_uint8(raw)
    if bands == 1:
        img = img.reshape(img.shape[0], img.shape[1])
        return np.repeat(img[:, :, None], 3, axis=2)
    return cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB)  # OpenCV stores BGR(A)


def is_readable(path: Path) -> bool:
    """Cheap check (file exists and its header names a format OpenCV decodes)."""
    return path.is_file() and cv2.haveImageReader(str(path))


def inspect_image(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, after checking that all of it decodes.

    Pillow reads the size from the header and decodes the whole file (JPEGs at
    1/8 scale through their DCT, which still reads every byte), so a
    truncated file is caught here rather than in the middle of training
    (OpenCV would decode it, grey-filling the missing part, with only a
    message on stderr). Formats Pillow does not know are decoded by OpenCV.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not an image OpenCV reads, truncated, or corrupt (the reason is in the message).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    if not cv2.haveImageReader(str(path)):
        raise ValueError(f"image file {str(path)!r} is not an image format OpenCV reads")
    fmt = None
    try:
        with Image.open(path) as im:
            fmt, size = im.format, im.size
            if fmt == "JPEG":
                im.draft(im.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
            return int(size[0]), int(size[1])
    except UnidentifiedImageError:
        pass  # a layout Pillow does not read (e.g. some TIFFs): OpenCV decides below
    except (OSError, SyntaxError, ValueError) as err:
        # Pillow's word is final for the formats OpenCV decodes silently when cut short
        if fmt in ("JPEG", "PNG"):
            raise ValueError(f"image file {str(path)!r} is truncated or corrupt ({err})") from None
    img = read_image(path)
    return img.shape[1], img.shape[0]
