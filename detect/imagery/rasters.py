"""Imagery sources that hand out uint8 windows of the model's bands, so memory follows the tile batch.

- :class:`ArraySource`: an image already in memory (JPEG/PNG, small TIFFs).
- :class:`RasterSource`: a TIFF / GeoTIFF read window by window with rasterio
  (the ``[geo]`` extra). The bands are the model's
  (:class:`~detect.imagery.images.BandRule`: 1-3 of a 3- or 4-band raster
  for an RGB model, band 1 repeated for a single-band one; ``--bands`` or
  the model's stored bands otherwise). Non-8-bit data is
  stretched linearly from the 2nd to the 98th percentile of a decimated read
  of the whole raster (at most ~1024 px on the long side, served from
  overviews when the file has them), the same rule as for training images
  (all bands together for RGB, per band for an N-band model)
  but computed once per raster, so every tile uses the same stretch.
  ``transform`` and ``crs`` come from the file for georeferenced output.

``read_or_none`` is ``read`` that says None for a window holding no data: of
a raster, every pixel masked (its nodata value, internal mask or alpha band)
or every value of every band zero (the padding around a scene's footprint);
an in-memory image always has data.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from detect.imagery.images import RGB, BandRule, inspect_image, read_image, stretch, stretch_levels
from detect.imagery.inputs import RASTER_SUFFIXES

#: GDAL's block cache (bytes). Its default is 5% of RAM, which made peak memory
#: grow with the raster; tiles are read once, so a small cache loses nothing.
GDAL_CACHE_BYTES = 64 * 2**20
#: Long side of the decimated read the stretch is computed from.
STRETCH_SAMPLE_SIDE = 1024


class ArraySource:
    def __init__(self, image: np.ndarray, name: str = "image", channels: int = 3):
        if image.ndim != 3 or image.shape[2] != channels or 0 in image.shape[:2]:
            what = "an RGB image [H, W, 3]" if channels == 3 else f"an image of the model's {channels} bands [H, W, {channels}]"
            raise ValueError(f"{name}: expected {what} with H, W > 0, got {image.shape}")
        self.image, self.name = image, name
        self.height, self.width = image.shape[:2]
        self.transform = self.crs = None

    def read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return self.image[y0:y1, x0:x1]

    read_or_none = read

    def close(self) -> None:
        pass


class RasterSource:
    def __init__(self, path: Path, rule: BandRule = RGB):
        try:
            import rasterio
        except ImportError as err:  # pragma: no cover - depends on the install
            raise ValueError(f"{path}: reading rasters needs rasterio: pip install 'detect[geo]'") from err
        self.name = str(path)
        self._env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)
        self._env.__enter__()
        with warnings.catch_warnings():  # a plain TIFF is fine: it just gets no GeoJSON
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            self._ds = rasterio.open(path)
        try:
            self.bands = rule.pick(self._ds.count, str(path))
        except ValueError:
            self.close()
            raise
        self.rule = rule
        self.height, self.width = self._ds.height, self._ds.width
        if self.height == 0 or self.width == 0:
            raise ValueError(f"{path}: zero-size raster")
        self.transform = self._ds.transform if self._ds.crs else None
        self.crs = self._ds.crs
        self.levels = None if self._ds.dtypes[0] == "uint8" else self._stretch_levels()
        # how GDAL masks the bands read (all valid, nodata value, mask band, alpha), for read_or_none
        self._mask_flags = {f for b in self.bands for f in self._ds.mask_flag_enums[b - 1]}

    def _stretch_levels(self):
        from rasterio.enums import Resampling

        f = max(1, math.ceil(max(self.height, self.width) / STRETCH_SAMPLE_SIDE))
        sample = self._ds.read(self.bands, out_shape=(len(self.bands), max(1, self.height // f),
                                                      max(1, self.width // f)),
                               resampling=Resampling.nearest, masked=True)
        return stretch_levels(sample.transpose(1, 2, 0), per_band=self.rule.per_band)  # bands last

    def read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return self._to_uint8(self._read_raw(x0, y0, x1, y1))

    def read_or_none(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray | None:
        raw = self._read_raw(x0, y0, x1, y1)
        if self._blank(raw, x0, y0, x1, y1):
            return None
        return self._to_uint8(raw)

    def _read_raw(self, x0, y0, x1, y1) -> np.ndarray:
        from rasterio.windows import Window

        return self._ds.read(self.bands, window=Window(x0, y0, x1 - x0, y1 - y0))  # [C, h, w]

    def _to_uint8(self, raw: np.ndarray) -> np.ndarray:
        data = np.moveaxis(raw, 0, -1)
        data = data.astype(np.uint8) if self.levels is None else stretch(data, *self.levels)
        return np.ascontiguousarray(data)

    def _blank(self, raw: np.ndarray, x0, y0, x1, y1) -> bool:
        """No data in this window: all zeros, all the nodata value, or all masked."""
        if not raw.any():
            return True
        from rasterio.enums import MaskFlags
        from rasterio.windows import Window

        flags = self._mask_flags
        if flags <= {MaskFlags.all_valid}:
            return False
        if flags == {MaskFlags.nodata} and self._ds.nodata is not None:
            nodata = self._ds.nodata
            return bool(np.isnan(raw).all()) if np.isnan(nodata) else bool((raw == nodata).all())
        # an internal mask or alpha band (or mixed rules): GDAL's combined mask says
        return not self._ds.read_masks(self.bands, window=Window(x0, y0, x1 - x0, y1 - y0)).any()

    def close(self) -> None:
        self._ds.close()
        self._env.__exit__(None, None, None)


def raster_gsd(path) -> float | None:
    """Metres per pixel of a georeferenced raster in a projected CRS (mean of x and y), else None."""
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return transform_gsd(ds.transform, ds.crs)


def transform_gsd(transform, crs) -> float | None:
    """Pixel size in metres from an affine transform, when the CRS is projected."""
    if crs is None or not crs.is_projected or transform is None:
        return None
    factor = crs.linear_units_factor[1] if hasattr(crs, "linear_units_factor") else 1.0
    return float((abs(transform.a) + abs(transform.e)) / 2 * factor)


def open_source(path: Path, rule: BandRule = RGB):
    """A source for ``path``: windowed rasterio for TIFFs when available, else the whole image."""
    path = Path(path)
    if path.suffix.lower() in RASTER_SUFFIXES:
        try:
            import rasterio  # noqa: F401
        except ImportError:
            if rule != RGB or path.suffix.lower() == ".vrt":
                what = "a virtual raster" if path.suffix.lower() == ".vrt" else "the model's bands of a TIFF"
                raise ValueError(f"{path}: reading {what} needs rasterio: pip install 'detect[geo]'") from None
        else:
            return RasterSource(path, rule)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        # OpenCV grey-fills a cut JPEG (a truncated PNG it refuses itself): Pillow checks the whole
        # file first, cheaply (its DCT decodes at 1/8 scale)
        inspect_image(path)
    return ArraySource(read_image(path, rule), str(path), rule.count)
