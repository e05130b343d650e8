"""Frame sampling: a few evenly spaced JPEG thumbnails per clip or image, for every frame-based stage.

    stages:
      - stage: frame_sample
        num_frames: 4
        max_side: 256

Videos are decoded from the clip bytes in `media` when standardize made them, else
from `source` (within `scene_start`/`scene_end` when a scene split ran; the stream in
`video_stream`, else the one ffmpeg picks). Frame k of
N is the one at (k + 0.5) / N of the clip, so the first and last frames, the ones
most likely to hold a transition, are avoided. An image gives one thumbnail of
itself, upright per its EXIF orientation. In a shard the thumbnails are the members
`KEY.frames.0.jpg`, `KEY.frames.1.jpg`, ...
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from dataprep import columns, storage
from dataprep.stage import Resources, Stage, StageParams
from dataprep.stages.pyav import VIDEO_STREAM, NoFramesError, length_seconds, origin_seconds, scan_packets, video_stream

_FIELDS = pa.schema([("frames", pa.list_(pa.binary()))])
# Beyond this many seconds of source video, sample by seeking instead of decoding everything.
_SEEK_ABOVE_SECONDS = 60.0


class FrameSampleParams(StageParams):
    """Options of `frame_sample`."""

    num_frames: int = Field(
        4, ge=1, le=64, description="Thumbnails per video (count); 4 covers a 10 s clip for CLIP and captioning "
        "scores at a quarter of the cost of 16.",
    )
    max_side: int = Field(
        256, ge=16, le=4096, description="Longer side of a thumbnail (px); 256 is above the 224 px CLIP and most "
        "safety models read, so they need no upscaling.",
    )
    quality: int = Field(85, ge=1, le=100, description="JPEG quality (1-100); 85 shows no artefacts a model reacts to.")
    threads: int | None = Field(
        None, ge=1, description="Decoder threads per video (count); None uses the CPUs given to the stage."
    )


class FrameSample(Stage):
    """Adds `frames`: a list of JPEG thumbnails per row (one for an image)."""

    name = "frame_sample"
    reads = (columns.KEY, columns.SOURCE, "media_type")
    writes = ("frames",)
    # Each thumbnail its own JPEG member (KEY.frames.0.jpg, ...), which any image reader opens.
    members: ClassVar[dict[str, str]] = {"frames": "frames.jpg"}
    Params = FrameSampleParams
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    batch_size = 16

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Thumbnails for every row; a row that fails to decode is rejected."""
        threads = self.worker_threads(self.params.threads)
        return self.map_rows(batch, lambda row: {"frames": self._thumbs(row, threads)}, fields=_FIELDS)

    def _thumbs(self, row: dict[str, Any], threads: int) -> list[bytes]:
        """The thumbnails of one row: of its image, of its clip, or of its scene of the source."""
        if row["media_type"] == "image":
            return [self._image_thumb(row[columns.SOURCE])]
        if row.get(columns.MEDIA) is not None:  # a clip standardize wrote: one video stream, the whole clip
            return self._video_thumbs(io.BytesIO(row[columns.MEDIA]), None, None, None, threads)
        with storage.open_local(row[columns.SOURCE]) as path:
            return self._video_thumbs(path, row.get("scene_start"), row.get("scene_end"), row.get(VIDEO_STREAM),
                                      threads)

    def _jpeg(self, image: Any) -> bytes:
        image = image.convert("RGB")
        image.thumbnail((self.params.max_side, self.params.max_side))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=self.params.quality)
        return buf.getvalue()

    def _image_thumb(self, uri: str) -> bytes:
        from PIL import Image, ImageOps

        with storage.open_local(uri) as path, Image.open(path) as image:
            return self._jpeg(ImageOps.exif_transpose(image))

    def _video_thumbs(
        self, file: Any, start: float | None, end: float | None, stream_index: int | None, threads: int,
    ) -> list[bytes]:
        import av

        with av.open(file) as container:
            stream = video_stream(container, stream_index)
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = threads
            origin = origin_seconds(container)
            lo = start or 0.0
            hi = end if end is not None else length_seconds(container, stream)
            if hi is None and isinstance(file, str):
                hi = scan_packets(file, stream.index).end
            if hi is None or hi <= lo:
                raise NoFramesError("the video stream has no length to sample from")
            n = self.params.num_frames
            times = [lo + (k + 0.5) * (hi - lo) / n for k in range(n)]
            if hi - lo > _SEEK_ABOVE_SECONDS:
                return [self._jpeg(_upright(_frame_at(container, stream, t, origin))) for t in times]
            return [self._jpeg(_upright(frame)) for frame in _frames_at(container, stream, times, origin)]


def _upright(frame: Any) -> Any:
    """The frame as a PIL image turned as the container says it is displayed (phone videos)."""
    image = frame.to_image()
    angle = int(round(frame.rotation or 0)) % 360  # counter-clockwise degrees, as PIL's rotate takes them
    return image.rotate(angle, expand=True) if angle else image


def _frames_at(container: Any, stream: Any, times: list[float], origin: float) -> list[Any]:
    """The frames shown at ascending `times` (s), from one forward decode holding one frame at a time."""
    if times[0] > 1.0:
        container.seek(int((times[0] - 1.0 + origin) / stream.time_base), stream=stream, backward=True)
    out: list[Any] = []
    previous = None
    for frame in container.decode(stream):
        t = float(frame.pts * frame.time_base) - origin if frame.pts is not None else 0.0
        while len(out) < len(times) and t > times[len(out)] and previous is not None:
            out.append(previous)
        if len(out) == len(times):
            break
        previous = frame
    while len(out) < len(times) and previous is not None:
        out.append(previous)  # times past the last frame show the last frame
    if not out:
        raise NoFramesError("the video stream decodes to no frame")
    return out


def _frame_at(container: Any, stream: Any, t: float, origin: float) -> Any:
    """The frame shown at `t` seconds, found by a keyframe seek and a short decode."""
    container.seek(int((t + origin) / stream.time_base), stream=stream, backward=True)
    chosen = None
    for frame in container.decode(stream):
        if chosen is not None and frame.pts is not None and float(frame.pts * frame.time_base) - origin > t:
            break
        chosen = frame
    if chosen is None:
        raise NoFramesError(f"no frame decodes at {t:.2f}s")
    return chosen
