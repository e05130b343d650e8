"""Probe: read each file's metadata with PyAV (videos) or Pillow (images) and reject unreadable ones.

The content decides the media type, not the extension: a JPEG renamed .mp4 is an
image. A file is readable only if its first frame decodes.
"""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from dataprep import columns, storage
from dataprep.errors import row_error
from dataprep.stage import Stage

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
    ]
)
# EXIF orientation tag -> clockwise degrees to display the image upright.
_EXIF_ROTATION = {3: 180, 4: 180, 5: 90, 6: 90, 7: 270, 8: 270}


class EmptyFileError(ValueError):
    """The file has no bytes."""


class NoVideoStreamError(ValueError):
    """The container has no video stream (audio-only, data-only)."""


class UndecodableError(ValueError):
    """The container opens but no frame decodes."""


class ProbeParams(BaseModel):
    """Options of `probe`."""

    model_config = ConfigDict(extra="forbid")
    max_count_seconds: float = Field(
        600.0,
        gt=0,
        description="When a container states no duration, packets are counted to find it; "
        "give up after this many seconds of media (s) and use the count so far.",
    )


class Probe(Stage):
    """Adds width, height (as displayed), rotation, fps, duration, frames, codec and more per file."""

    name = "probe"
    reads = (columns.SOURCE,)
    writes = tuple(FIELDS.names)
    Params = ProbeParams
    batch_size = 8

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Probe every row; unreadable rows get an `error:` reason in `_reject`."""
        values: dict[str, list[Any]] = {name: [] for name in FIELDS.names}
        rejects: list[str | None] = []
        existing = batch.column(columns.REJECT).to_pylist() if columns.REJECT in batch.column_names else None
        for i, uri in enumerate(batch.column(columns.SOURCE).to_pylist()):
            info: dict[str, Any] = {}
            reason = existing[i] if existing else None
            if reason is None:
                try:
                    info = probe_uri(uri, max_count_seconds=self.params.max_count_seconds)
                except Exception as exc:  # any decoder failure is this row's, not the job's
                    reason = row_error(exc)
            rejects.append(reason)
            for name in FIELDS.names:
                values[name].append(info.get(name))
        for field in FIELDS:
            column = pa.array(values[field.name], type=field.type)
            index = batch.schema.get_field_index(field.name)
            batch = batch.set_column(index, field, column) if index >= 0 else batch.append_column(field, column)
        reject_col = pa.array(rejects, type=pa.string())
        index = batch.schema.get_field_index(columns.REJECT)
        if index >= 0:
            return batch.set_column(index, columns.REJECT, reject_col)
        return batch.append_column(columns.REJECT, reject_col)


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
        videos = container.streams.video
        if not videos:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise NoVideoStreamError(f"no video stream (streams: {', '.join(kinds)})")
        stream = videos[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else None
        duration = None
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        first = None
        for frame in container.decode(stream):
            first = frame
            break
        if first is None:
            raise UndecodableError("no frame of the video stream decodes")
        rotation = int(round(first.rotation or 0)) % 360
        frames = stream.frames or None
        if not duration or not frames:
            counted, last_time = _count_packets(path, stream.index, max_count_seconds)
            frames = frames or counted
            if not duration and last_time is not None and fps:
                duration = last_time + 1.0 / fps
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
            "video_streams": len(videos),
        }


def _count_packets(path: str, index: int, max_seconds: float) -> tuple[int, float | None]:
    """Packets of one stream and the last presentation time (s), without decoding."""
    import av

    count, last = 0, None
    with av.open(path) as container:
        stream = container.streams[index]
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            count += 1
            if packet.pts is not None and packet.time_base:
                t = float(packet.pts * packet.time_base)
                last = t if last is None else max(last, t)
                if t > max_seconds:
                    break
    return count, last
