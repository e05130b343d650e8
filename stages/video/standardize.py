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
(`dataprep.stages.video.encode`). Each clip is H.264 yuv420p mp4 with `+faststart`, stored
in `media`; `width`, `height`, `fps`, `duration` and `frame_count` become the clip's,
measured from the written file, and so do `codec`, `pix_fmt`, `size_bytes`,
`has_audio` and `rotation` (0: the rotation is in the pixels). Rotation is applied (ffmpeg's autorotate), so a
portrait phone video stays portrait. Images pass through unchanged.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections import defaultdict
from fractions import Fraction
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dataprep import columns, storage
from dataprep.errors import row_error
from dataprep.ffmpeg import ffmpeg_exe
from dataprep.stage import Resources, Stage
from dataprep.stages.video.encode import ClipJob, Encoder, FFmpegError, build_argv, nvenc_available, run_ffmpeg
from dataprep.stages.video.media import stream_end_seconds
from dataprep.stages.video.plan import Clip, ClipRejected, Geometry, nearest_bucket, plan_clips, upscale_factor
from dataprep.stages.video.table import column_or_none, put, rejects

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


class StandardizeParams(BaseModel):
    """Options of `standardize`."""

    model_config = ConfigDict(extra="forbid")
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
        """One output row per clip; rows without a clip keep their place with a reason in `_reject`."""
        rows = _Rows(batch)
        plans: dict[int, list[Clip]] = {}
        geometries: dict[int, Geometry] = {}
        for i in range(batch.num_rows):
            if rows.reason[i] is not None or rows.kind[i] != "video":
                continue
            try:
                geometries[i] = self._geometry(rows, i)
                plans[i] = self._plan(rows, i)
            except ClipRejected as exc:
                rows.reason[i] = str(exc)
            except Exception as exc:  # unreadable source: this row's failure
                rows.reason[i] = row_error(exc)
        by_source: dict[str, list[int]] = defaultdict(list)
        for i in plans:
            by_source[rows.source[i]].append(i)
        results: dict[tuple[int, int], dict[str, Any] | str] = {}
        encoder = self._encoder()
        for uri, indices in by_source.items():
            results.update(self._cut_source(uri, indices, rows, plans, geometries, encoder))
        return _assemble(batch, rows, plans, geometries, results, self.params.min_seconds)

    def _geometry(self, rows: _Rows, i: int) -> Geometry:
        p = self.params
        w, h = rows.width[i], rows.height[i]
        if p.buckets is not None:
            if not w or not h:
                raise ClipRejected("clip:unknown dimensions, cannot choose a bucket")
            bw, bh = nearest_bucket(w, h, p.buckets)
            geometry = Geometry(bw, bh, p.resize_mode, f"{bw}x{bh}")
        else:
            geometry = Geometry(p.width, p.height, p.resize_mode)
        if p.max_upscale is not None and w and h:
            factor = upscale_factor(w, h, geometry)
            if factor > p.max_upscale + 1e-9:
                raise ClipRejected(f"clip:too_small {w}x{h} needs {factor:.1f}x upscale to "
                                   f"{geometry.width}x{geometry.height} > max_upscale {p.max_upscale}")
        return geometry

    def _plan(self, rows: _Rows, i: int) -> list[Clip]:
        p = self.params
        start, end = rows.scene_start[i], rows.scene_end[i]
        if start is None or end is None:
            start, end = 0.0, rows.duration[i]
            if end is None:
                with storage.open_local(rows.source[i]) as path:
                    end = stream_end_seconds(path)
        return plan_clips(start, end, fps=_target_fps(p.fps, rows.fps[i]), min_seconds=p.min_seconds,
                          max_seconds=p.max_seconds, long_policy=p.long_policy)

    def _cut_source(
        self, uri: str, indices: list[int], rows: _Rows, plans: dict[int, list[Clip]],
        geometries: dict[int, Geometry], encoder: Encoder,
    ) -> dict[tuple[int, int], dict[str, Any] | str]:
        """Every clip of one source, `max_clips_per_run` per ffmpeg process; a failed run rejects its clips."""
        wanted = sorted(((i, j) for i in indices for j in range(len(plans[i]))), key=lambda ij: plans[ij[0]][ij[1]].start)
        first = indices[0]
        fps = _target_fps(self.params.fps, rows.fps[first])
        with_audio = self.params.keep_audio and bool(rows.has_audio[first])
        results: dict[tuple[int, int], dict[str, Any] | str] = {}
        step = self.params.max_clips_per_run
        with storage.open_local(uri) as path, tempfile.TemporaryDirectory(prefix="dataprep-clips-") as tmp:
            for lo in range(0, len(wanted), step):
                part = wanted[lo:lo + step]
                jobs = [ClipJob(plans[i][j].start, plans[i][j].end, plans[i][j].frames, geometries[i],
                                os.path.join(tmp, f"{i}_{j}.mp4")) for i, j in part]
                try:
                    run_ffmpeg(build_argv(path, jobs, fps=fps, source_fps=rows.fps[first], encoder=encoder,
                                          with_audio=with_audio), timeout=self.params.timeout_seconds)
                except Exception as exc:  # ffmpeg failed: every clip of this run fails with it
                    reason = row_error(exc)
                    log.info("standardize: %s failed: %s", uri, reason)
                    results.update({ij: reason for ij in part})
                    continue
                for ij, job in zip(part, jobs, strict=True):
                    try:
                        results[ij] = _read_clip(job.path)
                    except Exception as exc:  # one clip unreadable: only that clip fails
                        results[ij] = row_error(exc)
                    finally:
                        if os.path.exists(job.path):
                            os.remove(job.path)
        return results


class _Rows:
    """The columns of a batch that standardize reads, as Python lists."""

    def __init__(self, batch: pa.Table) -> None:
        self.reason = rejects(batch)
        self.key = batch.column(columns.KEY).to_pylist()
        self.source = batch.column(columns.SOURCE).to_pylist()
        self.kind = batch.column("media_type").to_pylist()
        self.parent = column_or_none(batch, columns.PARENT)
        self.width = column_or_none(batch, "width")
        self.height = column_or_none(batch, "height")
        self.fps = column_or_none(batch, "fps")
        self.duration = column_or_none(batch, "duration")
        self.has_audio = column_or_none(batch, "has_audio")
        self.scene_start = column_or_none(batch, "scene_start")
        self.scene_end = column_or_none(batch, "scene_end")


def _target_fps(wanted: float | None, source: float | None) -> Fraction:
    """The exact output rate: the configured one, or the source's average as a fraction (30000/1001)."""
    rate = wanted if wanted is not None else source
    if not rate or not math.isfinite(rate) or rate <= 0:
        raise ClipRejected(f"clip:unknown frame rate {source!r}; set `fps` to standardize it")
    return Fraction(rate).limit_denominator(1001)


def _read_clip(path: str) -> dict[str, Any]:
    """The bytes of a written clip and its measured width, height, rate and frame count."""
    import av

    if not os.path.exists(path) or os.path.getsize(path) == 0:
        raise FFmpegError("ffmpeg wrote no clip (no frame in the requested span)")
    with av.open(path) as container:
        stream = container.streams.video[0]
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


def _assemble(
    batch: pa.Table, rows: _Rows, plans: dict[int, list[Clip]], geometries: dict[int, Geometry],
    results: dict[tuple[int, int], dict[str, Any] | str], min_seconds: float,
) -> pa.Table:
    """The output table: each planned clip as a row, each other row once."""
    take: list[int] = []
    out: dict[str, list[Any]] = defaultdict(list)
    for i in range(batch.num_rows):
        clips = plans.get(i) if rows.reason[i] is None else None
        if not clips:
            take.append(i)
            out[columns.KEY].append(rows.key[i])
            out[columns.PARENT].append(rows.parent[i])
            out[columns.REJECT].append(rows.reason[i])
            for field in CLIP_FIELDS:
                out[field.name].append(_passthrough(batch, field.name, i))
            continue
        for j, clip in enumerate(clips):
            take.append(i)
            split = clip.index is not None
            out[columns.KEY].append(columns.child_key(rows.key[i], clip.index) if split else rows.key[i])
            out[columns.PARENT].append(rows.key[i] if split else rows.parent[i])
            result = results.get((i, j), "error:FFmpegError: clip was not produced")
            reason = result if isinstance(result, str) else None
            info = result if isinstance(result, dict) else {}
            if info and info["duration"] is not None and info["duration"] + 1e-6 < min_seconds:
                reason = f"clip:too_short {info['duration']:.3f}s < min_seconds {min_seconds}s (after decoding)"
            out[columns.REJECT].append(reason)
            out[columns.MEDIA].append(info.get(columns.MEDIA) if reason is None else None)
            out[columns.MEDIA_EXT].append("mp4" if reason is None else None)
            for name in ("width", "height", "fps", "duration", "frame_count", "codec", "pix_fmt", "rotation", "size_bytes",
                         "has_audio"):
                out[name].append(info.get(name) if info else _passthrough(batch, name, i))
            out["clip_start"].append(clip.start)
            short = info and info["frame_count"] is not None and info["duration"] is not None and info["frame_count"] < clip.frames
            # The source ran out before the planned end (a container duration longer than its video): say so.
            out["clip_end"].append(clip.start + info["duration"] if short else clip.end)
            out["bucket"].append(geometries[i].bucket)
    table = batch.take(pa.array(take, type=pa.int64()))
    table = put(table, columns.KEY, out[columns.KEY], pa.string())
    table = put(table, columns.PARENT, out[columns.PARENT], pa.string())
    for field in CLIP_FIELDS:
        table = put(table, field.name, out[field.name], field.type)
    return put(table, columns.REJECT, out[columns.REJECT], pa.string())


def _passthrough(batch: pa.Table, name: str, i: int) -> Any:
    return batch.column(name)[i].as_py() if name in batch.column_names else None
