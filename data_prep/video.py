"""Video decoding: every frame of a video, resized to H×W (default 128×171, C3D's size),
RGB uint8. PyAV decodes and resizes in one call; OpenCV's FFmpeg backend is the fallback
when PyAV cannot open or decode a file. Errors name the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

HEIGHT, WIDTH = 128, 171


class VideoError(ValueError):
    """A video that cannot be decoded; the message names the file."""


def _decode_av(path: Path, height: int, width: int) -> np.ndarray:
    import av
    frames = []
    with av.open(str(path)) as c:
        if not c.streams.video:
            raise VideoError(f"{path}: no video stream")
        st = c.streams.video[0]
        st.thread_type = "AUTO"
        for f in c.decode(st):
            frames.append(f.to_ndarray(format="rgb24", width=width, height=height,
                                       interpolation="BILINEAR"))
    if not frames:
        raise VideoError(f"{path}: no frames decoded")
    return np.stack(frames)


def _decode_cv(path: Path, height: int, width: int) -> np.ndarray:
    import cv2
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, f = cap.read()
            if not ok:
                break
            f = cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR)
            frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise VideoError(f"{path}: OpenCV decoded no frames")
    return np.stack(frames)


def decode_video(path, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """(T, height, width, 3) uint8 RGB. PyAV first, OpenCV if PyAV fails."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    try:
        return _decode_av(path, height, width)
    except Exception as e:  # noqa: BLE001 - any PyAV failure: try OpenCV, then report both
        first = f"{type(e).__name__}: {e}"
    try:
        return _decode_cv(path, height, width)
    except Exception as e:  # noqa: BLE001
        raise VideoError(f"cannot decode video {path} (PyAV: {first}; OpenCV: {e})") from None
