"""Decoding the `frame_sample` thumbnails that every frame-based filter reads."""

from __future__ import annotations

import cv2
import numpy as np


class FrameDecodeError(ValueError):
    """A thumbnail in `frames` is not a decodable image."""


def decode_frames(frames: list[bytes] | None, *, gray: bool = False) -> list[np.ndarray]:
    """The JPEG thumbnails of one row as uint8 arrays: BGR (H, W, 3), or (H, W) when `gray`."""
    if not frames:
        raise FrameDecodeError("frames: the row has no thumbnails; fix: run frame_sample before this stage")
    flag = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
    out = []
    for i, data in enumerate(frames):
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        if image is None:
            raise FrameDecodeError(f"frames[{i}]: not a decodable image ({len(data)} bytes)")
        out.append(image)
    return out


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """`image` (BGR or gray uint8) as JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise FrameDecodeError(f"cannot encode a {image.shape} image as JPEG")
    return buf.tobytes()
