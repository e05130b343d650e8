"""Clip standardization: cut each scene into clips of bounded length at one frame rate, size and codec.

    stages:
      - stage: standardize
        min_seconds: 2
        max_seconds: 10
        long_policy: split          # split | truncate | drop
        fps: 24
        width: 640
        height: 360
        resize_mode: crop           # crop | pad | fit
        # buckets: [[640, 360], [360, 640], [480, 480]]   # instead of width/height

Rows of one source (the scenes `scene_split` made, or the whole video when there
is no scene split) are cut by one ffmpeg process that decodes the source once
(`dataprep.stages.video.encode`), from the video stream probe recorded in
`video_stream`, else the one ffmpeg picks (`dataprep.stages.pyav`). Each clip is H.264 yuv420p mp4 with `+faststart`, stored
in `media`; `width`, `height`, `fps`, `duration` and `frame_count` become the clip's,
measured from the written file, and so do `codec`, `pix_fmt`, `size_bytes`,
`has_audio` and `rotation` (0: the rotation is in the pixels). Rotation is applied (ffmpeg's autorotate), so a
portrait phone video stays portrait. A row with a `crop` (the `letterbox` stage's picture
rectangle, source pixels as displayed) is cut to it first: the bucket, the upscale limit
and the scale all see the picture, not the bars. Images pass through unchanged.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from fractions import Fraction
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from dataprep import columns, storage
from dataprep.errors import row_error
from dataprep.ffmpeg import ffmpeg_exe
from dataprep.stage import Resources, RowResult, Stage, StageParams
from dataprep.stages.pyav import VIDEO_STREAM, scan_packets, video_stream, video_stream_index
from dataprep.stages.video.encode import ClipJob, Encoder, FFmpegError, build_argv, nvenc_available, run_ffmpeg
from dataprep.stages.video.plan import Clip, ClipRejected, Geometry, nearest_bucket, plan_clips, upscale_factor

log = logging.getLogger(__name__)

_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")

CLIP_FIELDS = pa.schema(
    [
        (columns.MEDIA, pa.large_binary()),
        (columns.MEDIA_EXT, pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("fps", pa.float64()),
        ("duration", pa.float64()),
        ("frame_count", pa.int64()),
        # Probe's facts about the source, restated for the clip.
        ("codec", pa.string()),
        ("pix_fmt", pa.string()),
        ("rotation", pa.int32()),
        ("size_bytes", pa.int64()),
        ("has_audio", pa.bool_()),
        ("clip_start", pa.float64()),
        ("clip_end", pa.float64()),
        ("bucket", pa.string()),
    ]
)
_FIELDS = pa.schema([(columns.KEY, pa.string()), (columns.PARENT, pa.string()), *CLIP_FIELDS])
# Measured from each written clip, replacing the source's values.
_MEASURED = ("width", "height", "fps", "duration", "frame_count", "codec", "pix_fmt", "rotation", "size_bytes",
             "has_audio")


class StandardizeParams(StageParams):
    """Options of `standardize`."""

    min_seconds: float = Field(
        2.0, ge=0, description="Shortest clip kept (s); shorter scenes carry too little motion to learn from."
    )
    max_seconds: float | None = Field(
        10.0, gt=0, description="Longest clip (s); longer scenes follow `long_policy`. 10 s fits typical T2V context."
    )
    long_policy: Literal["split", "truncate", "drop"] = Field(
        "split",
        description="Scenes over `max_seconds`: 'split' into consecutive `max_seconds` clips (a remainder of at "
        "least `min_seconds` is kept too), 'truncate' to the first `max_seconds`, or 'drop'. Split keeps the most data.",
    )
    fps: float | None = Field(
        24.0, gt=0, le=240, description="Output frame rate (frames/s); None keeps each source's average rate. "
        "24 is the rate most video models train at.",
    )
    width: int = Field(640, ge=16, le=8192, description="Output width (px, even) when `buckets` is not set.")
    height: int = Field(360, ge=16, le=8192, description="Output height (px, even) when `buckets` is not set.")
    resize_mode: Literal["crop", "pad", "fit"] = Field(
        "crop",
        description="'crop' fills the size and cuts the overflow from the centre, 'pad' fits inside and adds black "
        "bars, 'fit' fits inside with no bars (the size varies). Crop: models train badly on bars.",
    )
    buckets: list[tuple[int, int]] | None = Field(
        None,
        description="Aspect-ratio buckets as [width, height] pairs (px, even); each clip goes to the bucket nearest "
        "its aspect ratio (recorded in `bucket`), filled per `resize_mode` ('fit' is not allowed). None: one size.",
    )
    max_upscale: float | None = Field(
        4.0, ge=1, description="Reject sources that would be enlarged more than this (factor); blown-up thumbnails "
        "teach blur. None: no limit.",
    )
    crf: int = Field(20, ge=0, le=51, description="x264 constant rate factor (0-51, lower is better); 20 is near "
        "transparent for training data at about half the size of 18.")
    preset: str = Field("fast", description="x264 preset; 'fast' is within a few % of 'medium' in quality at ~2x speed.")
    gop: int | None = Field(
        None, ge=1, description="Keyframe interval (frames); None keeps the encoder's default (250 for x264, so "
        "usually one keyframe per clip, which keeps clips small).",
    )
    encoder: Literal["libx264", "h264_nvenc", "auto"] = Field(
        "libx264", description="'auto' uses NVENC when ffmpeg has it and a GPU is visible, else libx264."
    )
    keep_audio: bool = Field(False, description="Keep the first audio stream (AAC); off because video models ignore it.")
    threads: int | None = Field(
        None, ge=1, description="Threads per ffmpeg process (count); None uses the CPUs given to the stage, so "
        "parallel workers do not oversubscribe the cores.",
    )
    max_clips_per_run: int = Field(
        16, ge=1, description="Clips one ffmpeg process writes at most (count); a long source takes several "
        "runs, each decoding only its own span, so open encoders and memory stay bounded.",
    )
    timeout_seconds: float = Field(
        900.0, gt=0, description="Wall time one ffmpeg run may take (s) before it is stopped and its rows rejected."
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in _PRESETS:
            raise ValueError(f"`preset` must be one of {', '.join(_PRESETS)}, got {value!r}")
        return value

    @field_validator("buckets")
    @classmethod
    def _even_buckets(cls, value: list[tuple[int, int]] | None) -> list[tuple[int, int]] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("`buckets` must list at least one [width, height], got []; use null for one size")
        for w, h in value:
            if w < 16 or h < 16 or w % 2 or h % 2:
                raise ValueError(f"every bucket must be even and >= 16 px on each side, got [{w}, {h}]")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StandardizeParams:
        if self.max_seconds is not None and self.min_seconds > self.max_seconds:
            raise ValueError(f"`min_seconds` ({self.min_seconds}) must be <= `max_seconds` ({self.max_seconds})")
        if self.width % 2 or self.height % 2:
            raise ValueError(f"`width` and `height` must be even for yuv420p, got {self.width}x{self.height}")
        if self.buckets is not None and self.resize_mode == "fit":
            raise ValueError("`resize_mode: fit` cannot be used with `buckets` (a bucket is an exact size); use crop or pad")
        if self.buckets is not None and {"width", "height"} & self.model_fields_set:
            raise ValueError("give either `buckets` or `width`/`height`, not both")
        return self


class Standardize(Stage):
    """Cuts every scene row into standardized H.264 clips; one ffmpeg process per source."""

    name = "standardize"
    reads = (columns.KEY, columns.SOURCE, "media_type", "width", "height", "fps", "duration")
    writes = (columns.KEY, columns.PARENT, *CLIP_FIELDS.names)
    Params = StandardizeParams
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    batch_size = 8
    tools = ("ffmpeg",)
    expands = True

    def setup(self) -> None:
        """Find ffmpeg and the encoder once per worker; a missing NVENC that was asked for fails here, not per row."""
        ffmpeg_exe()  # imageio-ffmpeg checks its binary by running it: pay that once, here
        self._codec = self._choose_codec()

    def _choose_codec(self) -> str:
        choice = self.params.encoder
        if choice == "libx264":
            return choice
        if nvenc_available():
            return "h264_nvenc"
        if choice == "h264_nvenc":
            raise RuntimeError("`encoder: h264_nvenc` needs an NVIDIA GPU and an ffmpeg built with NVENC; "
                               "fix: use `encoder: auto` or `libx264`")
        return "libx264"

    def _encoder(self) -> Encoder:
        p = self.params
        threads = self.worker_threads(p.threads)
        codec = getattr(self, "_codec", None) or self._choose_codec()
        return Encoder(codec=codec, crf=p.crf, preset=p.preset, gop=p.gop, threads=threads, audio=p.keep_audio)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """One output row per clip; a row without a clip stays once, rejected with the reason."""
        encoder = self._encoder()
        return self.map_groups(batch, lambda rows: self._cut_source(rows, encoder), by=columns.SOURCE, fields=_FIELDS)

    def _cut_source(self, rows: list[dict[str, Any]], encoder: Encoder) -> list[list[RowResult] | BaseException]:
        """Per row of one source: its clips, itself once (not a video), or why it yields no clip."""
        out: list[list[RowResult] | BaseException] = [[{}] for _ in rows]
        plans: dict[int, tuple[Geometry, list[Clip]]] = {}
        for n, row in enumerate(rows):
            if row["media_type"] != "video":
                continue
            try:
                plans[n] = (self._geometry(row), self._plan(row))
            except Exception as exc:  # a reason (ClipRejected) or an unreadable source: this row's alone
                out[n] = exc
        if plans:
            made = self._encode(rows, plans, encoder)
            for n, (geometry, clips) in plans.items():
                out[n] = [_clip_row(rows[n], clip, geometry, made[n, j], self.params.min_seconds)
                          for j, clip in enumerate(clips)]
        return out

    def _geometry(self, row: dict[str, Any]) -> Geometry:
        """Output size for `row`, chosen from its picture: the `crop` letterbox found, else the whole frame."""
        p = self.params
        crop = _source_crop(row)
        w, h = (crop[2], crop[3]) if crop is not None else (row["width"], row["height"])
        if p.buckets is not None:
            if not w or not h:
                raise ClipRejected("clip:unknown_dimensions: cannot choose a bucket")
            bw, bh = nearest_bucket(w, h, p.buckets)
            geometry = Geometry(bw, bh, p.resize_mode, f"{bw}x{bh}", crop)
        else:
            geometry = Geometry(p.width, p.height, p.resize_mode, source_crop=crop)
        if p.max_upscale is not None and w and h:
            factor = upscale_factor(w, h, geometry)
            if factor > p.max_upscale + 1e-9:
                picture = " (picture inside the bars)" if crop is not None else ""
                raise ClipRejected(f"clip:too_small: {w}x{h}{picture} needs {factor:.1f}x upscale to "
                                   f"{geometry.width}x{geometry.height} > max_upscale {p.max_upscale}")
        return geometry

    def _plan(self, row: dict[str, Any]) -> list[Clip]:
        p = self.params
        start, end = row.get("scene_start"), row.get("scene_end")
        if start is None or end is None:
            start, end = 0.0, row["duration"]
            if end is None:
                with storage.open_local(row[columns.SOURCE]) as path:
                    end = scan_packets(path, row.get(VIDEO_STREAM)).end
        return plan_clips(start, end, fps=_target_fps(p.fps, row["fps"]), min_seconds=p.min_seconds,
                          max_seconds=p.max_seconds, long_policy=p.long_policy)

    def _encode(
        self, rows: list[dict[str, Any]], plans: dict[int, tuple[Geometry, list[Clip]]], encoder: Encoder,
    ) -> dict[tuple[int, int], dict[str, Any] | str]:
        """Every planned clip of one source, `max_clips_per_run` per ffmpeg process: what it holds, or why it failed.

        Keyed (row, clip); a failed run fails each of its clips with its reason.
        """
        wanted = sorted(((n, j) for n, (_, clips) in plans.items() for j in range(len(clips))),
                        key=lambda nj: plans[nj[0]][1][nj[1]].start)
        first = rows[min(plans)]
        uri, stream = first[columns.SOURCE], first.get(VIDEO_STREAM)
        fps = _target_fps(self.params.fps, first["fps"])
        with_audio = self.params.keep_audio and bool(first.get("has_audio"))
        results: dict[tuple[int, int], dict[str, Any] | str] = {}
        step = self.params.max_clips_per_run
        with storage.open_local(uri) as path, tempfile.TemporaryDirectory(prefix="dataprep-clips-") as tmp:
            if stream is None:  # no probe ran: choose the stream as probe does
                try:
                    stream = video_stream_index(path)
                except Exception as exc:  # the source does not open: none of its clips can be cut
                    return {nj: row_error(exc) for nj in wanted}
            for lo in range(0, len(wanted), step):
                part = wanted[lo:lo + step]
                jobs = [ClipJob(clip.start, clip.end, clip.frames, plans[n][0], os.path.join(tmp, f"{n}_{j}.mp4"))
                        for n, j in part for clip in (plans[n][1][j],)]
                try:
                    run_ffmpeg(build_argv(path, jobs, stream=stream, fps=fps, source_fps=first["fps"], encoder=encoder,
                                          with_audio=with_audio), timeout=self.params.timeout_seconds)
                except Exception as exc:  # ffmpeg failed: every clip of this run fails with it
                    reason = row_error(exc)
                    log.info("standardize: %s failed: %s", uri, reason)
                    results.update({nj: reason for nj in part})
                    continue
                for nj, job in zip(part, jobs, strict=True):
                    try:
                        results[nj] = _read_clip(job.path)
                    except Exception as exc:  # one clip unreadable: only that clip fails
                        results[nj] = row_error(exc)
                    finally:
                        if os.path.exists(job.path):
                            os.remove(job.path)
        return results


def _target_fps(wanted: float | None, source: float | None) -> Fraction:
    """The exact output rate: the configured one, or the source's average as a fraction (30000/1001)."""
    rate = wanted if wanted is not None else source
    if not rate or not math.isfinite(rate) or rate <= 0:
        raise ClipRejected(f"clip:unknown_fps: frame rate {source!r}; set `fps` to standardize it")
    return Fraction(rate).limit_denominator(1001)


def _source_crop(row: dict[str, Any]) -> tuple[int, int, int, int] | None:
    """The row's `crop` (letterbox's picture rectangle) as (x, y, w, h), checked against the frame; None without one."""
    crop = row.get("crop")
    if crop is None:
        return None
    x, y, w, h = (crop.get(k) for k in ("x", "y", "w", "h"))
    width, height = row.get("width"), row.get("height")
    inside = None not in (x, y, w, h) and x >= 0 and y >= 0 and w >= 2 and h >= 2 and \
        (not width or x + w <= width) and (not height or y + h <= height)
    if not inside:
        raise ClipRejected(f"clip:bad_crop: {crop} is not inside the {width}x{height} frame; fix: rerun letterbox")
    return x, y, w, h


def _read_clip(path: str) -> dict[str, Any]:
    """The bytes of a written clip and its measured width, height, rate and frame count."""
    import av

    if not os.path.exists(path) or os.path.getsize(path) == 0:
        raise FFmpegError("ffmpeg wrote no clip (no frame in the requested span)")
    with av.open(path) as container:
        stream = video_stream(container)
        rate = stream.average_rate or stream.base_rate
        frames = stream.frames
        fps = float(rate)
        info = {"width": stream.width, "height": stream.height, "fps": fps, "frame_count": frames,
                "duration": frames / fps if fps else None, "codec": stream.codec_context.name,
                "pix_fmt": stream.codec_context.pix_fmt, "rotation": 0, "has_audio": bool(container.streams.audio)}
    with open(path, "rb") as f:
        info[columns.MEDIA] = f.read()
    info["size_bytes"] = len(info[columns.MEDIA])
    return info


def _clip_row(row: dict[str, Any], clip: Clip, geometry: Geometry, made: dict[str, Any] | str,
              min_seconds: float) -> RowResult:
    """The output row of one planned clip of `row`: the clip and its measurements, or why it failed."""
    split = clip.index is not None
    out: RowResult = {
        columns.KEY: columns.child_key(row[columns.KEY], clip.index) if split else row[columns.KEY],
        columns.PARENT: row[columns.KEY] if split else row.get(columns.PARENT),
        columns.MEDIA: None, columns.MEDIA_EXT: None,
        "clip_start": clip.start, "clip_end": clip.end, "bucket": geometry.bucket,
    }
    if isinstance(made, str):  # the source's other values stay
        return {**out, columns.REJECT: made}
    out.update({name: made[name] for name in _MEASURED})
    duration, frames = made["duration"], made["frame_count"]
    if duration is not None and duration + 1e-6 < min_seconds:
        out[columns.REJECT] = f"clip:too_short: {duration:.3f}s < min_seconds {min_seconds}s (after decoding)"
    else:
        out[columns.MEDIA], out[columns.MEDIA_EXT] = made[columns.MEDIA], "mp4"
    if frames is not None and duration is not None and frames < clip.frames:
        # The source ran out before the planned end (a container duration longer than its video): say so.
        out["clip_end"] = clip.start + duration
    return out
