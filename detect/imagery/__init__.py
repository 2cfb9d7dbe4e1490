"""Reading imagery: decoding and stretching images (``images``), rasters read window by
window (``rasters``), input files and folders (``inputs``), and the tile grid (``tiling``).

Used by both ``datasets`` and ``inference``, so that neither imports the other."""
