"""Which clips to cut from a scene, and to what size: pure arithmetic, no media touched.

A scene is [start, end) in seconds of the source. Scenes shorter than `min_seconds`
are dropped; longer than `max_seconds` are split into consecutive chunks of exactly
`max_seconds` (the remainder becomes a last clip if it is at least `min_seconds`),
truncated to the first `max_seconds`, or dropped, as `long_policy` says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from dataprep.errors import Rejected

# Slack for float times (s): a scene 4.9999999 s long is 5 s long.
_EPS = 1e-6


class ClipRejected(Rejected):
    """A scene yields no clip; the message is the ledger reason."""


@dataclass(frozen=True)
class Clip:
    """One output clip: source seconds [start, end), exactly `frames` frames at the target rate."""

    start: float
    end: float
    frames: int
    index: int | None  # chunk number within its scene; None when the scene is one clip


def plan_clips(
    start: float, end: float, *, fps: Fraction, min_seconds: float, max_seconds: float | None, long_policy: str
) -> list[Clip]:
    """The clips of one scene; raises `ClipRejected` with the reason when there are none."""
    length = end - start
    if length + _EPS < min_seconds:
        raise ClipRejected(f"clip:too_short: {length:.3f}s < min_seconds {min_seconds}s")
    if max_seconds is None or frames_in(length, fps) <= frames_in(max_seconds, fps):
        # Within one output frame of max_seconds (a 2.002 s NTSC scene for a 2 s max) is not long.
        stop = min(end, start + max_seconds) if max_seconds is not None else end
        return [Clip(start, stop, frames_in(stop - start, fps), None)]
    if long_policy == "drop":
        raise ClipRejected(f"clip:too_long: {length:.3f}s > max_seconds {max_seconds}s (long_policy=drop)")
    if long_policy == "truncate":
        return [Clip(start, start + max_seconds, frames_in(max_seconds, fps), None)]
    clips: list[Clip] = []
    t = start
    while end - t + _EPS >= max(min_seconds, _EPS * 10):
        stop = min(t + max_seconds, end)
        clips.append(Clip(t, stop, frames_in(stop - t, fps), len(clips)))
        t = stop
    return clips


def frames_in(seconds: float, fps: Fraction) -> int:
    """Whole frames of a clip `seconds` long at `fps`: its length rounded down to a frame (>= 1)."""
    return max(1, math.floor(seconds * fps + _EPS))


@dataclass(frozen=True)
class Geometry:
    """Output size, how the picture is fitted into it, and the part of the source that is picture."""

    width: int
    height: int
    mode: str  # "crop", "pad" or "fit"
    bucket: str | None = None
    # (x, y, w, h) in source pixels as displayed: the picture inside letterbox bars; None: the whole frame.
    source_crop: tuple[int, int, int, int] | None = None


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to width/height (by log ratio, so 2:1 and 1:2 are equally far)."""
    aspect = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - aspect), -b[0] * b[1]))


def upscale_factor(width: int, height: int, geometry: Geometry) -> float:
    """How much the source is enlarged to reach the output size (1.0 or less: no enlargement)."""
    sx, sy = geometry.width / width, geometry.height / height
    return max(sx, sy) if geometry.mode == "crop" else min(sx, sy)


def scale_filters(geometry: Geometry) -> list[str]:
    """ffmpeg filters that bring any picture to `geometry`, honouring the display aspect (`dar`).

    A `source_crop` is cut first, so the scale sees the picture's aspect, not the barred frame's.
    """
    w, h = geometry.width, geometry.height
    wider = f"gt(dar,{w}/{h})"
    picture: list[str] = []
    if geometry.source_crop is not None:  # ffmpeg's crop keeps the pixel aspect, so `dar` is the picture's after it
        x, y, cw, ch = geometry.source_crop
        picture = [f"crop={cw}:{ch}:{x}:{y}"]
    if geometry.mode == "crop":  # cover the target, then cut the overflow evenly from both sides
        sw = f"if({wider},ceil({h}*dar/2)*2,{w})"
        sh = f"if({wider},{h},ceil({w}/dar/2)*2)"
        return [*picture, f"scale=w='{sw}':h='{sh}':flags=bicubic", "setsar=1", f"crop={w}:{h}"]
    sw = f"if({wider},{w},max(2,floor({h}*dar/2)*2))"
    sh = f"if({wider},max(2,floor({w}/dar/2)*2),{h})"
    filters = [*picture, f"scale=w='{sw}':h='{sh}':flags=bicubic", "setsar=1"]
    if geometry.mode == "pad":
        filters.append(f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:black")
    return filters
