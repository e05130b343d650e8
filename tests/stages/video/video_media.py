"""Helpers for the video stage tests: make media with ffmpeg, describe it as probe would, read clips back."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dataprep.ffmpeg import ffmpeg_exe

# Scene colours of the colour-coded test video, as (name, RGB).
# The colour-coded test video: (colour, seconds). Green is longer than the 2 s max used in tests, so it is split.
SCENES = [("red", 2.0), ("green", 3.4), ("blue", 2.6), ("yellow", 1.5)]
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0), "white": (255, 255, 255)}


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly; fail the test with its message if it fails."""
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def colour_scenes(path: Path, scenes: list[tuple[str, float]], *, rate: str = "30", size: str = "320x240",
                  extra: tuple[str, ...] = ()) -> Path:
    """A video of solid-colour scenes (colour name, seconds), lightly noised so it is not trivially static."""
    inputs: list[str] = []
    for colour, seconds in scenes:
        inputs += ["-f", "lavfi", "-i", f"color=c={colour}:s={size}:r={rate}:d={seconds}"]
    n = len(scenes)
    graph = "".join(f"[{i}]" for i in range(n)) + f"concat=n={n}:v=1:a=0,noise=alls=6:allf=t[v]"
    ffmpeg(*inputs, "-filter_complex", graph, "-map", "[v]", *extra, "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", str(path))
    return path


def describe(path: Path | str, key: str = "clip") -> dict[str, Any]:
    """One input row as ingest + probe make it: display size, rate, duration, frames, the stream read."""
    import av

    from dataprep.stages.pyav import length_seconds, video_stream

    with av.open(str(path)) as container:
        stream = video_stream(container)
        first = next(container.decode(stream))
        rotation = int(first.rotation or 0) % 360
        w, h = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        rate = stream.average_rate or stream.guessed_rate
        duration = length_seconds(container, stream)
        return {"key": key, "source": str(path), "caption": None, "media_type": "video", "width": w, "height": h,
                "rotation": rotation, "fps": float(rate) if rate else None, "duration": duration,
                "frame_count": stream.frames or None, "codec": stream.codec_context.name,
                "pix_fmt": stream.codec_context.pix_fmt, "size_bytes": Path(path).stat().st_size,
                "has_audio": bool(container.streams.audio), "video_stream": stream.index}


SCHEMA = pa.schema([("key", pa.string()), ("source", pa.string()), ("caption", pa.string()),
                    ("media_type", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                    ("rotation", pa.int32()), ("fps", pa.float64()), ("duration", pa.float64()),
                    ("frame_count", pa.int64()), ("codec", pa.string()), ("pix_fmt", pa.string()),
                    ("size_bytes", pa.int64()), ("has_audio", pa.bool_()), ("video_stream", pa.int32())])


def table(rows: list[dict[str, Any]]) -> pa.Table:
    """An input batch from row dicts (missing fields null)."""
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in SCHEMA} for r in rows], schema=SCHEMA)


def raw_row(path: Path | str, key: str, media_type: str = "video", **fields: Any) -> dict[str, Any]:
    """A row for a file probe could not describe (broken inputs): only what ingest knows plus `fields`."""
    return {"key": key, "source": str(path), "media_type": media_type, **fields}


def decode_clip(data: bytes) -> dict[str, Any]:
    """Everything a test checks about a clip: stream facts and the first and last frame as RGB arrays."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        info = {"rate": stream.average_rate, "width": stream.width, "height": stream.height,
                "pix_fmt": stream.codec_context.pix_fmt, "stated_frames": stream.frames,
                "audio": len(container.streams.audio)}
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    info["decoded"] = len(frames)
    info["first"], info["last"] = frames[0], frames[-1]
    return info


def colour_of(rgb: np.ndarray) -> str:
    """The name of the test colour nearest to a frame's mean colour."""
    mean = rgb.reshape(-1, 3).mean(axis=0)
    return min(COLOURS, key=lambda name: float(np.abs(mean - np.array(COLOURS[name])).sum()))
