"""Probe: read each file's metadata with PyAV (videos) or Pillow (images) and reject unreadable ones.

The content decides the media type, not the extension: a JPEG renamed .mp4 is an
image. A file is readable only if its first frame decodes. Of several video streams,
the one ffmpeg would pick is described, and its index recorded in `video_stream` for
the video stages to read the same one.
"""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa
from pydantic import Field

from dataprep import columns, storage
from dataprep.stage import Stage, StageParams
from dataprep.stages.pyav import VIDEO_STREAM, length_seconds, scan_packets, video_stream

FIELDS = pa.schema(
    [
        ("media_type", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("rotation", pa.int32()),
        ("fps", pa.float64()),
        ("duration", pa.float64()),
        ("frame_count", pa.int64()),
        ("codec", pa.string()),
        ("pix_fmt", pa.string()),
        ("size_bytes", pa.int64()),
        ("has_audio", pa.bool_()),
        ("video_streams", pa.int32()),
        # Absolute index of the stream every video stage reads: the one ffmpeg picks (`stages.pyav`).
        (VIDEO_STREAM, pa.int32()),
    ]
)
# EXIF orientation tag -> clockwise degrees to display the image upright.
_EXIF_ROTATION = {3: 180, 4: 180, 5: 90, 6: 90, 7: 270, 8: 270}


class EmptyFileError(ValueError):
    """The file has no bytes."""


class UndecodableError(ValueError):
    """The container opens but no frame decodes."""


class ProbeParams(StageParams):
    """Options of `probe`."""

    max_count_seconds: float = Field(
        600.0,
        gt=0,
        description="When a container states no duration, packets are counted to find it; "
        "give up after this many seconds of media (s) and use the count so far.",
    )


class Probe(Stage):
    """Adds width, height (as displayed), rotation, fps, duration, frames, codec, the video stream and more per file."""

    name = "probe"
    reads = (columns.SOURCE,)
    writes = tuple(FIELDS.names)
    Params = ProbeParams
    batch_size = 8

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Probe every row; an unreadable file rejects its row with an `error:` reason."""
        return self.map_rows(batch, self._probe_row, fields=FIELDS)

    def _probe_row(self, row: dict[str, Any]) -> dict[str, Any]:
        info = probe_uri(row[columns.SOURCE], max_count_seconds=self.params.max_count_seconds)
        return {name: info.get(name) for name in FIELDS.names}  # what a kind of media lacks is null, not left over


def probe_uri(uri: str, *, max_count_seconds: float = 600.0) -> dict[str, Any]:
    """Metadata of one file; raises on anything unreadable."""
    with storage.open_local(uri) as path:
        size = os.path.getsize(path)
        if size == 0:
            raise EmptyFileError("file is empty (0 bytes)")
        info = _probe_image(path)
        if info is None:
            info = _probe_video(path, max_count_seconds)
        info["size_bytes"] = size
        return info


def _displayed(width: int, height: int, rotation: int) -> tuple[int, int]:
    """Width and height as shown, after a quarter turn swaps them."""
    return (height, width) if rotation in (90, 270) else (width, height)


def _probe_image(path: str) -> dict[str, Any] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
    except (UnidentifiedImageError, OSError):
        return None
    with img:
        if getattr(img, "n_frames", 1) > 1:
            return None  # animated GIF/WebP: a video
        img.load()
        orientation = img.getexif().get(0x0112, 1)
        rotation = _EXIF_ROTATION.get(orientation, 0)
        width, height = _displayed(*img.size, rotation)
        return {
            "media_type": "image",
            "width": width,
            "height": height,
            "rotation": rotation,
            "frame_count": 1,
            "codec": (img.format or "").lower(),
            "pix_fmt": img.mode,
            "has_audio": False,
            "video_streams": 0,
        }


def _probe_video(path: str, max_count_seconds: float) -> dict[str, Any]:
    import av

    with av.open(path) as container:
        stream = video_stream(container)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else None
        duration = length_seconds(container, stream)
        first = next(container.decode(stream), None)
        if first is None:
            raise UndecodableError("no frame of the video stream decodes")
        rotation = int(round(first.rotation or 0)) % 360
        frames = stream.frames or None
        if not duration or not frames:
            scan = scan_packets(path, stream.index, max_seconds=max_count_seconds)
            frames = frames or scan.packets
            if not duration and scan.last is not None and fps:
                duration = scan.last + 1.0 / fps
        if frames is None and duration and fps:
            frames = round(duration * fps)
        width, height = _displayed(first.width, first.height, rotation)
        return {
            "media_type": "video",
            "width": width,
            "height": height,
            "rotation": rotation,
            "fps": fps,
            "duration": duration,
            "frame_count": frames,
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt or first.format.name,
            "has_audio": bool(container.streams.audio),
            "video_streams": len(container.streams.video),
            VIDEO_STREAM: stream.index,
        }
