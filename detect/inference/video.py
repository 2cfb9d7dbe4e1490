"""``detect predict`` on video files: every ``stride``-th frame through the one inference path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
from tqdm import tqdm

from detect.imagery.drawing import DEFAULT_STYLE, DrawStyle, draw
from detect.inference.predictor import CapCount, TileOptions, detect_image
from detect.inference.video_writer import VideoWriter
from detect.structures import detection_rows


def predict_video(model, path: Path, out_dir: Path | None, stem: str, options: TileOptions, *,
                  stride: int, save_images: bool, on_frame=None,
                  style: DrawStyle = DEFAULT_STYLE) -> tuple[dict, CapCount]:
    """Every ``stride``-th frame, with a progress bar per frame; returns (record, cap counts).
    With ``save_images`` an annotated H.264 video (:mod:`detect.inference.video_writer`).

    ``on_frame(index, det, (width, height))`` is called with each frame's
    detections (the inference path's dict) as it is done.
    """
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError("could not open the video (unsupported codec or not a video)")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer, tmp, frames, caps, index, size = None, None, [], CapCount(), 0, None
    names = model.class_names
    bar = tqdm(total=-(-total // stride) if total > 0 else None, desc=f"  {path.name}", unit="frame",
               leave=False)
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                if total and index < total:
                    print(f"\nwarning: {path}: frame {index} of {total} could not be decoded; "
                          f"stopping this video there", file=sys.stderr)
                break
            if index % stride == 0:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                size = (rgb.shape[1], rgb.shape[0])
                det = detect_image(model, rgb, options)
                caps.add(det)
                if on_frame is not None:
                    on_frame(index, det, size)
                frames.append({"frame": index, "detections": detection_rows(det, names)})
                if save_images:
                    if writer is None:
                        tmp = out_dir / "images" / f"{stem}.tmp{os.getpid()}.mp4"
                        writer = VideoWriter(tmp, max(fps / stride, 1.0), size)
                    writer.write(draw(rgb, det, names, style))
                bar.update(1)
            index += 1
    finally:
        cap.release()
        bar.close()
        if writer is not None:
            writer.close()
    if not frames:
        raise ValueError("no frame could be decoded")
    if tmp is not None:
        os.replace(tmp, out_dir / "images" / f"{stem}.mp4")
    return {"file": str(path), "width": size[0], "height": size[1], "stride": stride,
            "frames": frames}, caps


