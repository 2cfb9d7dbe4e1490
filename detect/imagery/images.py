"""Reading images of any common kind as the model's bands, uint8.

The rule (also in the README), :class:`BandRule`:

- JPEG, PNG, TIFF, 8- or 16-bit (or float); TIFFs of any band count (more
  than 4 bands through rasterio, the ``[geo]`` extra).
- An RGB model (``model.input_bands`` 3): 1 band is repeated to 3 (grey ->
  RGB); 3 bands are RGB; 4 bands are RGB plus alpha / NIR, and the 4th band
  is dropped. More bands: refused with a message (pick three with ``--bands``).
- An N-band model: the model's ``bands`` (1-based, in order; ``--bands`` on
  train stores them), else a file of exactly N bands, in file order.
- 8-bit data is used as is. 16-bit and float data are stretched linearly
  from the 2nd to the 98th percentile to 0..255, of all bands together for
  an RGB model (colour balance kept), of each band on its own for an N-band
  model (NIR and visible bands have unrelated ranges); a constant band becomes 0.
- EXIF orientation is honoured (OpenCV applies it when decoding, at any depth).
- An image whose header claims more than :data:`MAX_IMAGE_PIXELS` pixels
  (OpenCV's limit, 2**30; the ``OPENCV_IO_MAX_IMAGE_PIXELS`` environment
  variable raises it for both) is refused before it is decoded: a few bytes
  can claim gigapixels (a decompression bomb). Larger imagery belongs in a
  GeoTIFF, which is read window by window.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from detect.imagery.inputs import RASTER_SUFFIXES

STRETCH_PERCENTILES = (2.0, 98.0)
#: Largest image (pixels) decoded whole; OpenCV's own limit, from the same environment variable.
MAX_IMAGE_PIXELS = int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", 1 << 30))


def _pillow():
    """Pillow, its bomb limit widened to ours: it refuses at twice ``MAX_IMAGE_PIXELS``, warns at
    once; detect checks the header size itself (:func:`check_pixel_count`) before decoding."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    return Image


class ImageTooLarge(ValueError):
    """An image whose header claims more than :data:`MAX_IMAGE_PIXELS` pixels."""


def check_pixel_count(path, width: int, height: int) -> None:
    """:class:`ImageTooLarge` when ``width x height`` exceeds :data:`MAX_IMAGE_PIXELS` (named with the limit)."""
    if width * height > MAX_IMAGE_PIXELS:
        raise _too_large(path, f"{width} x {height} = {width * height:,}")


def _too_large(path, claim: str) -> ImageTooLarge:
    return ImageTooLarge(f"image file {str(path)!r} claims {claim} pixels, more than the {MAX_IMAGE_PIXELS:,} "
                         f"decoded whole (a decompression bomb, or imagery for a GeoTIFF, which is read window "
                         f"by window); set OPENCV_IO_MAX_IMAGE_PIXELS to raise the limit")


def _bomb(path, err: Exception) -> ImageTooLarge:
    """Pillow's refusal (past twice its limit, before it reports a size) in our words."""
    import re

    found = re.search(r"\((\d+) pixels\)", str(err))
    return _too_large(path, f"{int(found.group(1)):,}" if found else f"more ({err})")


def _refuse_bombs(path: Path) -> None:
    """Check the size a file's header claims (Pillow reads only the header) before decoding it."""
    Image = _pillow()
    try:
        with Image.open(path) as im:
            width, height = im.size
    except Image.DecompressionBombError as err:  # past even the widened limit
        raise _bomb(path, err) from None
    except Exception:  # a format (or a damage) Pillow does not read: OpenCV decides
        return
    check_pixel_count(path, width, height)


@dataclass(frozen=True)
class BandRule:
    """Which bands of a file the model sees: ``count`` = ``model.input_bands``,
    ``bands`` = 1-based band numbers (``()``: the default rule of the module doc)."""

    count: int = 3
    bands: tuple[int, ...] = ()
    # where ``bands`` came from, for messages: the command's --bands or the model's stored bands
    origin: str = field(default="--bands", compare=False)

    @classmethod
    def of(cls, model_config, bands=None, *, training: bool = False) -> BandRule:
        """The rule of a model config; ``bands`` (e.g. ``--bands``) replaces its stored bands.
        ``training``: the config's bands are the run's own (``--bands`` or ``model.bands``), not
        ones a trained model stored (messages say which)."""
        chosen = tuple(bands) if bands else tuple(model_config.bands)
        if len(chosen) == 1 and model_config.input_bands == 3:
            chosen *= 3  # one band as grey for an RGB model
        if chosen and len(chosen) != model_config.input_bands:
            raise ValueError(f"--bands {','.join(map(str, chosen))}: the model takes {model_config.input_bands} "
                             f"band(s), got {len(chosen)}")
        origin = "--bands" if bands else "--bands (model.bands)" if training else \
            "the model's bands (stored from --bands at training)"
        return cls(model_config.input_bands, chosen, origin)

    @property
    def per_band(self) -> bool:
        """Stretch each band on its own (an N-band model) rather than all together."""
        return self.count != 3

    def pick(self, n: int, name: str) -> tuple[int, ...]:
        """1-based bands to read from ``name``, a file of ``n`` bands; clear error when it has too few."""
        if self.bands:
            missing = [b for b in self.bands if not 1 <= b <= n]
            if missing:
                raise ValueError(f"{name} has {n} band(s); the model takes {self.count}, and band {missing[0]} of "
                                 f"{self.origin} {','.join(map(str, self.bands))} does not exist")
            return self.bands
        if self.count == 3:
            if n in (3, 4):
                return (1, 2, 3)
            if n == 1:
                return (1, 1, 1)
            raise ValueError(f"{name} has {n} bands; choose the model's three with --bands, e.g. --bands 3,2,1")
        if n != self.count:
            raise ValueError(f"{name} has {n} band(s); the model takes {self.count} "
                             f"(choose them with --bands, e.g. --bands {','.join(map(str, range(1, self.count + 1)))})")
        return tuple(range(1, n + 1))


RGB = BandRule()


def stretch_levels(values: np.ndarray, per_band: bool = False):
    """The stretch's ``(lo, hi)``: :data:`STRETCH_PERCENTILES` of the finite ``values``
    (all bands together; with ``per_band``, arrays of one level per band of
    ``values [..., C]``); ``(0, 0)`` when none is finite. Masked values (a
    masked array) are left out."""
    if per_band:
        pairs = [stretch_levels(values[..., c]) for c in range(values.shape[-1])]
        return np.array([p[0] for p in pairs], np.float32), np.array([p[1] for p in pairs], np.float32)
    if np.ma.isMaskedArray(values):  # nodata / masked pixels do not count
        values = values.compressed()
    values = np.asarray(values, np.float32).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(values, STRETCH_PERCENTILES)
    return float(lo), float(hi)


def stretch(data: np.ndarray, lo, hi) -> np.ndarray:
    """``data`` mapped linearly from ``[lo, hi]`` to 0..255 uint8 (clipped; NaN -> 0;
    constant data, ``hi <= lo``, -> 0). ``lo`` / ``hi`` may be per band (last axis)."""
    lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    x = data.astype(np.float32)
    scaled = np.clip((x - lo) * (255.0 / np.where(hi > lo, hi - lo, 1.0)), 0, 255)
    return np.where((hi > lo) & ~np.isnan(x), scaled, 0).astype(np.uint8)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """16-bit / float -> uint8 by the percentile stretch; uint8 passes through."""
    if image.dtype == np.uint8:
        return image
    return stretch(image, *stretch_levels(image))


def read_image(path: str | Path, rule: BandRule = RGB) -> np.ndarray:
    """``[H, W, rule.count]`` uint8 from ``path`` (RGB by default; see the module rule); clear errors."""
    path = Path(path)
    if rule != RGB or path.suffix.lower() in RASTER_SUFFIXES:
        # TIFFs through rasterio when installed: OpenCV reads one plane of a band-interleaved
        # multi-band TIFF without an error (a silently wrong image)
        return _read_bands(path, rule)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    _refuse_bombs(path)
    # One decode: any depth (16-bit kept for the stretch), grey or colour (an alpha band is
    # dropped), and EXIF orientation applied (IMREAD_UNCHANGED would skip it; decoding
    # twice, once to learn the depth, cost half of a training pipeline's CPU time).
    raw = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if raw is None or raw.size == 0:
        raise ValueError(f"image file {str(path)!r} could not be decoded")
    img = to_uint8(raw)
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)  # OpenCV stores BGR


def read_raw(path: Path) -> np.ndarray:
    """Every band of ``path`` as stored, ``[H, W, n]`` in file band order (not stretched)."""
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    if path.suffix.lower() in RASTER_SUFFIXES:
        try:
            import rasterio
        except ImportError:
            rasterio = None
        if rasterio is not None:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                try:
                    with rasterio.open(path) as ds:
                        return np.moveaxis(ds.read(), 0, -1)
                except rasterio.errors.RasterioIOError as err:
                    raise ValueError(f"image file {str(path)!r} could not be decoded ({err})") from None
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.size == 0:
        raise ValueError(f"image file {str(path)!r} could not be decoded")
    if raw.ndim == 2:
        return raw[:, :, None]
    if raw.shape[2] in (3, 4):  # OpenCV stores BGR(A)
        return np.concatenate([raw[:, :, 2::-1], raw[:, :, 3:]], axis=2)
    return raw


def _read_bands(path: Path, rule: BandRule) -> np.ndarray:
    raw = read_raw(path)
    data = raw[:, :, [b - 1 for b in rule.pick(raw.shape[2], str(path))]]
    if data.dtype == np.uint8:
        return np.ascontiguousarray(data)
    return stretch(data, *stretch_levels(data, per_band=rule.per_band))


#: EXIF orientations that turn the image by 90 degrees (width and height swap on display).
_TRANSPOSING = (5, 6, 7, 8)


def _shown_size(im) -> tuple[int, int]:
    """``(width, height)`` as displayed: EXIF orientations 5-8 swap the stored sides. The size
    boxes are drawn in, and the one :func:`read_image` returns (OpenCV applies the orientation
    to 8-bit images)."""
    width, height = int(im.size[0]), int(im.size[1])
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block: the stored orientation
        orientation = 1
    return (height, width) if orientation in _TRANSPOSING else (width, height)


def inspect_image(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file as displayed (EXIF orientation applied), after
    checking that all of it decodes.

    Pillow reads the size from the header and decodes the whole file (JPEGs at
    1/8 scale through their DCT, which still reads every byte), so a
    truncated file is caught here rather than in the middle of training
    (OpenCV would decode it, grey-filling the missing part, with only a
    message on stderr). Formats Pillow does not know are decoded by OpenCV.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not an image OpenCV reads, truncated, or corrupt (the reason is in the message).
    """
    from PIL import UnidentifiedImageError

    Image = _pillow()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    if not cv2.haveImageReader(str(path)):
        raise ValueError(f"image file {str(path)!r} is not an image format OpenCV reads")
    fmt = None
    try:
        with Image.open(path) as im:
            fmt, size = im.format, im.size
            check_pixel_count(path, *size)
            shown = _shown_size(im)
            if fmt == "JPEG":
                im.draft(im.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
            return shown
    except UnidentifiedImageError:
        pass  # a layout Pillow does not read (e.g. some TIFFs): OpenCV decides below
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as err:
        raise _bomb(path, err) from None
    except (OSError, SyntaxError, ValueError) as err:
        # Pillow's word is final for the formats OpenCV decodes silently when cut short
        if fmt in ("JPEG", "PNG"):
            raise ValueError(f"image file {str(path)!r} is truncated or corrupt ({err})") from None
    img = read_raw(path)
    return img.shape[1], img.shape[0]


#: Class colours (RGB) of annotated images and of the viewer, in class order (repeating). None is
#: red, green or yellow: the viewer keeps those for false positives, true positives and missed
#: objects.
CLASS_COLOURS = ((64, 200, 255), (220, 80, 255), (255, 150, 120), (255, 96, 176), (90, 120, 255),
                 (255, 255, 255), (170, 140, 255), (210, 170, 120))


def display_rgb(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` to look at: bands 1-3 of a multi-band image, one band repeated."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] < 3:
        return np.repeat(image[:, :, :1], 3, axis=2)
    return image[:, :, :3]
