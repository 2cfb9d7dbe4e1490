"""Annotated video as H.264 MP4 that browsers play (PyAV, the ``[video]`` extra).

Frames are encoded with libx264 (``yuv420p``, CRF 23, the ``moov`` atom at
the front so playback starts while downloading); odd frame sizes are padded
by one pixel, which yuv420p needs. Without PyAV, OpenCV writes MPEG-4 Part 2
(``mp4v``), which desktop players open but browsers do not, and a warning
says so once.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np


class VideoWriter:
    """``write(bgr)`` frames of one size; ``close()`` finishes the file."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        self.path, self.size = Path(path), size
        self.width, self.height = size[0] + size[0] % 2, size[1] + size[1] % 2
        try:
            import av
        except ImportError:
            av = None
        if av is not None and "libx264" in av.codec.codecs_available:
            self._container = av.open(str(self.path), "w", format="mp4", options={"movflags": "faststart"})
            self._stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            self._stream.width, self._stream.height = self.width, self.height
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": "23", "preset": "veryfast"}
            self._cv = None
            self.codec = "h264"
        else:
            print("warning: PyAV with libx264 is not installed (pip install 'detect[video]'): the annotated "
                  "video is MPEG-4 Part 2, which browsers do not play", file=sys.stderr)
            self._cv = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
            self.codec = "mp4v"

    def write(self, bgr: np.ndarray) -> None:
        if self._cv is not None:
            self._cv.write(bgr)
            return
        import av

        if (bgr.shape[1], bgr.shape[0]) != (self.width, self.height):
            bgr = np.pad(bgr, ((0, self.height - bgr.shape[0]), (0, self.width - bgr.shape[1]), (0, 0)))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24").reformat(format="yuv420p")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self._cv is not None:
            self._cv.release()
            return
        for packet in self._stream.encode():  # flush the encoder
            self._container.mux(packet)
        self._container.close()
