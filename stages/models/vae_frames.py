"""The pixels a VAE reads: a clip or an image as RGB frames, trimmed and cropped to what the VAE accepts.

Frame-count rule: a video VAE with temporal compression `c` (4 for Wan, CogVideoX and
HunyuanVideo) encodes the first frame alone and each later group of `c` frames into one
latent frame, so it takes `k * c + 1` frames. A clip with another count is trimmed to
the largest such count not above it (50 frames -> 49, kept from the start): at most
`c - 1` frames (1/6 s at 24 fps) are lost, where padding would invent frames.

Size rule: each side must be a multiple of the spatial compression `s` (8; 16 for
Wan2.2). A side that is not is center-cropped to the largest multiple of `s` below it,
losing at most `s - 1` px in all, half on each side.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from dataprep import storage
from dataprep.stages.pyav import NoFramesError, video_stream


def valid_frames(count: int, temporal: int) -> int:
    """The largest `k * temporal + 1` not above `count` (0 when `count` < 1): the frames a video VAE takes."""
    return (count - 1) // temporal * temporal + 1 if count >= 1 else 0


def aligned_crop(frames: np.ndarray, multiple: int) -> np.ndarray:
    """`frames` (..., H, W, C) center-cropped so H and W are multiples of `multiple` (a view, no copy)."""
    h, w = frames.shape[-3:-1]
    top, left = (h % multiple) // 2, (w % multiple) // 2
    return frames[..., top:top + h - h % multiple, left:left + w - w % multiple, :]


def decode_clip(data: bytes, threads: int = 1) -> np.ndarray:
    """Every frame of an encoded clip (a standardized mp4) as RGB uint8 (T, H, W, 3), decoded with `threads`."""
    import av

    frames = []
    with av.open(io.BytesIO(data)) as container:
        stream = video_stream(container)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))  # (H, W, 3)
    if not frames:
        raise NoFramesError("the clip decodes to no frame")
    return np.stack(frames)


def load_image(data: bytes | None, uri: str | None) -> np.ndarray:
    """An image from its bytes, else from `uri`, as RGB uint8 (1, H, W, 3), upright per its EXIF orientation."""
    from PIL import Image, ImageOps

    def read(file: Any) -> np.ndarray:
        with Image.open(file) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))[None]

    if data is not None:
        return read(io.BytesIO(data))
    if uri is None:
        raise ValueError("the row has neither `media` bytes nor a `source` to read the image from")
    with storage.open_local(uri) as path:
        return read(path)


def to_pixels(frames: np.ndarray) -> Any:
    """RGB uint8 frames (T, H, W, 3) as the float tensor a VAE reads: (3, T, H, W) in [-1, 1]."""
    import torch

    return torch.from_numpy(frames.astype(np.float32)).permute(3, 0, 1, 2).div_(127.5).sub_(1.0)  # (3, T, H, W)
