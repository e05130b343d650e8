"""One ffmpeg run that cuts several clips from one source: decode once, encode each clip.

The graph is `[0:S]split=N`, then per clip `trim` (source seconds) -> `setpts` ->
`fps` -> scale/crop/pad -> `format=yuv420p`, each to its own mp4 output. `S` is the
absolute index of the video stream every stage reads (`dataprep.stages.pyav`), not
`v:0`: of several video streams, that is the first, not the one ffmpeg picks. The
source is decoded once from the first clip's start (input `-ss`, a keyframe seek) to
the last clip's end (input `-t`), whatever the number of clips.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
from dataclasses import dataclass
from fractions import Fraction

from dataprep.ffmpeg import ffmpeg_exe
from dataprep.stages.video.plan import Geometry, scale_filters

log = logging.getLogger(__name__)

# Seconds decoded before the first clip when seeking, so the keyframe seek never lands inside a clip.
_PREROLL = 1.0


class FFmpegError(RuntimeError):
    """ffmpeg exited with an error; the message is the tail of its log."""


@dataclass(frozen=True)
class Encoder:
    """Video encoder settings shared by every clip."""

    codec: str = "libx264"  # or "h264_nvenc"
    crf: int = 20
    preset: str = "fast"
    gop: int | None = None
    threads: int = 1
    audio: bool = False
    audio_bitrate: str = "128k"


@dataclass(frozen=True)
class ClipJob:
    """One clip to write: source seconds [start, end), `frames` output frames, into `path`."""

    start: float
    end: float
    frames: int
    geometry: Geometry
    path: str


@functools.cache
def nvenc_available() -> bool:
    """Whether this ffmpeg has h264_nvenc and an NVIDIA device is visible."""
    if not os.path.exists("/dev/nvidia0"):
        return False
    try:
        out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "h264_nvenc" in out.stdout


def build_argv(
    path: str, jobs: list[ClipJob], *, stream: int, fps: Fraction, source_fps: float | None, encoder: Encoder,
    with_audio: bool,
) -> list[str]:
    """The ffmpeg command line for `jobs`, all cut from the video stream at absolute index `stream` of `path`."""
    first = min(j.start for j in jobs)
    last = max(j.end for j in jobs)
    seek = first - _PREROLL if first > 2 * _PREROLL else 0.0
    # Frames are selected by presentation time; a quarter frame of slack absorbs float rounding of times.
    slack = 0.25 / source_fps if source_fps else 0.002
    threads = str(encoder.threads)
    argv = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-threads", threads]
    if seek > 0:
        argv += ["-ss", f"{seek:.6f}"]
    argv += ["-t", f"{last - seek + _PREROLL:.6f}", "-i", path, "-filter_complex_threads", threads]
    n = len(jobs)
    video = f"[0:{stream}]"
    graph = [f"{video}split={n}" + "".join(f"[v{i}]" for i in range(n))] if n > 1 else []
    if with_audio:
        graph.append(f"[0:a:0]asplit={n}" + "".join(f"[a{i}]" for i in range(n)) if n > 1 else "[0:a:0]anull[a0]")
    for i, job in enumerate(jobs):
        src = f"[v{i}]" if n > 1 else video
        a, b = job.start - seek - slack, job.end - seek - slack
        chain = [f"trim=start={max(a, 0):.6f}:end={b:.6f}", "setpts=PTS-STARTPTS", f"fps={fps}:start_time=0"]
        chain += scale_filters(job.geometry)
        chain.append("format=yuv420p")
        graph.append(src + ",".join(chain) + f"[o{i}]")
        if with_audio:
            graph.append(
                f"[a{i}]atrim=start={max(job.start - seek, 0):.6f}:end={job.end - seek:.6f},asetpts=PTS-STARTPTS[oa{i}]"
            )
    argv += ["-filter_complex", ";".join(graph)]
    for i, job in enumerate(jobs):
        argv += ["-map", f"[o{i}]"]
        if with_audio:
            argv += ["-map", f"[oa{i}]", "-c:a", "aac", "-b:a", encoder.audio_bitrate]
        else:
            argv += ["-an"]
        argv += ["-sn", "-dn", "-map_metadata", "-1", "-frames:v", str(job.frames), "-r", str(fps)]
        argv += _video_codec_args(encoder)
        argv += ["-movflags", "+faststart", "-f", "mp4", job.path]
    return argv


def _video_codec_args(encoder: Encoder) -> list[str]:
    args = ["-c:v", encoder.codec, "-pix_fmt", "yuv420p"]
    if encoder.codec == "h264_nvenc":
        args += ["-preset", "p4", "-rc", "vbr", "-cq", str(encoder.crf), "-b:v", "0"]
    else:
        args += ["-preset", encoder.preset, "-crf", str(encoder.crf), "-threads", str(encoder.threads)]
    if encoder.gop is not None:
        args += ["-g", str(encoder.gop)]
    return args


def run_ffmpeg(argv: list[str], *, timeout: float) -> None:
    """Run ffmpeg; raise `FFmpegError` with its last log lines when it fails or exceeds `timeout` seconds."""
    log.debug("ffmpeg: %s", " ".join(argv))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise FFmpegError(f"ffmpeg ran past {timeout:.0f}s and was stopped") from exc
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise FFmpegError(f"ffmpeg exited {done.returncode}: {' | '.join(lines[-3:]) or 'no message'}")
