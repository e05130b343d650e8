"""Letterbox and pillarbox detection: the picture inside black bars, which standardize then crops to.

    stages:
      - stage: letterbox
        black_level: 24
        max_bar_fraction: 0.75

A line (a row or a column) is black when at most 1% of its pixels are brighter than
`black_level`; the bars are the runs of lines black in every frame looked at, from
each edge inward. Real bars are digital black and the same in every frame; the dark
parts of a scene hold lights, texture and motion. Three guards keep a dark scene
whole: a line must be black in all frames, the bars of an axis come as a pair of
near-equal size (a centred picture; a dark sky over a lit street has no twin below),
and at least half the lines left must hold picture in some frame (a title card on
black is not a windowbox). A frame black everywhere has no bars.

The frames are the row's `frames` (frame_sample's thumbnails) when it has them, and
then they are replaced by the cropped thumbnails, so deduplication and embeddings
after it see picture, not bars; measured on 256 px thumbnails, the crop is exact to one
thumbnail pixel (5 px of a 1280 px image). Without them (a t2v job, where letterbox runs
before standardize) it runs frame_sample itself for `num_frames` frames of up to
`max_side` px, so the stream, the times and the rotation are frame_sample's.

`crop` is {x, y, w, h} in pixels of the source as displayed (after rotation, as probe's
width and height), with barred edges moved inward to even pixels; null when there are
no bars. `bar_fraction` is the share of the frame outside `crop`.
standardize crops videos to `crop` before it chooses a bucket and scales; an image keeps
its bars in `media`, and `crop` (in its KEY.json) tells a trainer where the picture is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
from pydantic import Field

from dataprep import arrow, columns
from dataprep.errors import Rejected
from dataprep.stage import Filter, Resources, RowResult, StageParams

if TYPE_CHECKING:
    import numpy as np

CROP_TYPE = pa.struct([("x", pa.int32()), ("y", pa.int32()), ("w", pa.int32()), ("h", pa.int32())])
_FIELDS = pa.schema([("crop", CROP_TYPE), ("bar_fraction", pa.float64())])

# Share of a line's pixels that may be brighter than black_level: compression noise and a stray
# hot pixel in a bar, not the 3%+ of lights and texture a dark real scene has.
_LINE_TOLERANCE = 0.01
# Two bars of one axis are a pair when they differ by at most 2 px (rounding of the padding, ringing)
# plus 10% of the larger (a dark edge of the picture that stays dark in every frame).
_PAIR_SLACK_PX = 2
_PAIR_SLACK = 0.1
# Share of the lines inside the bars that must hold picture in some frame.
_MIN_PICTURE_LINES = 0.5
# JPEG quality of the frames sampled for measuring: high, so ringing never brightens a bar line.
_SAMPLE_QUALITY = 95


class LetterboxParams(StageParams):
    """Options of `letterbox`."""

    black_level: int = Field(
        24, ge=0, le=254, description="Brightest luma (0-255, full range) a bar pixel may have. 24 is ffmpeg "
        "cropdetect's default: video black (16) decodes to 0, and compression noise in a bar stays below it.",
    )
    max_bar_fraction: float | None = Field(
        0.75, gt=0, le=1, description="Reject rows whose bars cover more than this fraction of the frame's area: "
        "the picture is a small window inside it. 0.75 keeps a 9:16 phone video pillarboxed in 16:9 (0.68 bars); "
        "standardize's `max_upscale` judges the picture's own size. None keeps all.",
    )
    num_frames: int = Field(
        5, ge=1, le=16, description="Frames sampled per video when the row has no `frames` (count); a line is a "
        "bar only when black in all of them, and 5 spread over a scene seldom all share one dark region.",
    )
    max_side: int = Field(
        1024, ge=64, le=4096, description="Longer side of those sampled frames (px); 1024 puts a 1080p bar "
        "edge within 2 px and holds a 4K or 8K source's frames to a few MB.",
    )
    quality: int = Field(
        85, ge=1, le=100, description="JPEG quality (1-100) of the cropped thumbnails that replace `frames`; "
        "85 as frame_sample writes them.",
    )
    threads: int | None = Field(
        None, ge=1, description="Decoder threads per video (count); None uses the CPUs given to the stage."
    )


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int


class Letterbox(Filter):
    """Adds `crop`, the picture inside black bars, and `bar_fraction`; rejects rows that are mostly bars."""

    name = "letterbox"
    reads = (columns.SOURCE, "media_type", "width", "height")
    writes = ("crop", "bar_fraction")
    scores = ("crop", "bar_fraction")
    Params = LetterboxParams
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    batch_size = 16

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Measure every row; a row with its own `frames` gets them cropped when it has bars."""
        sampled = self._sample_missing(batch)
        fields = _FIELDS
        if "frames" in batch.column_names:
            fields = pa.schema([*_FIELDS, batch.schema.field("frames")])
        # map_rows calls the function once per row, in order: `sampled` yields in step with it.
        return self.map_rows(batch, lambda row: self._measure(row, next(sampled)), fields=fields)

    def reasons(self, batch: pa.Table) -> list[str | None]:
        """Rows whose bars cover more than `max_bar_fraction` of the frame."""
        limit = self.params.max_bar_fraction
        out: list[str | None] = []
        for crop, fraction in zip(batch.column("crop").to_pylist(), batch.column("bar_fraction").to_pylist(),
                                  strict=True):
            too_much = limit is not None and fraction is not None and fraction > limit
            out.append(f"letterbox:too_small: bars cover {fraction:.0%} of the frame > max_bar_fraction {limit}; "
                       f"picture {crop['w']}x{crop['h']} px" if too_much else None)
        return out

    def _sample_missing(self, batch: pa.Table) -> Iterator[list[bytes] | str | None]:
        """Per row in order: None when it has `frames`, else frames sampled from its media, or why that failed."""
        from dataprep.stages.video.frames import FrameSample, FrameSampleParams

        own = arrow.column_or_none(batch, "frames")
        missing = [i for i, frames in enumerate(own) if not frames]
        found: dict[int, list[bytes] | str] = {}
        if missing:
            p = self.params
            sampler = FrameSample(FrameSampleParams(num_frames=p.num_frames, max_side=p.max_side,
                                                    quality=_SAMPLE_QUALITY, threads=self.worker_threads(p.threads)))
            out = sampler.process_batch(batch.take(pa.array(missing, pa.int64())))
            for i, frames, reason in zip(missing, out.column("frames").to_pylist(), arrow.rejects(out), strict=True):
                found[i] = reason if reason is not None else frames
        return iter([found.get(i) for i in range(batch.num_rows)])

    def _measure(self, row: dict[str, Any], sampled: list[bytes] | str | None) -> RowResult:
        import cv2

        from dataprep.stages.quality.frames_io import decode_frames, encode_jpeg

        if isinstance(sampled, str):  # frame_sample's reason: the media does not decode
            raise Rejected(sampled)
        own = sampled is None
        images = decode_frames(row["frames"] if own else sampled)  # (H, W, 3) BGR each
        sizes = {image.shape[:2] for image in images}
        if len(sizes) > 1:
            raise Rejected(f"letterbox:mixed_sizes: frames of {len(sizes)} sizes {sorted(sizes)}; cannot share bars")
        width, height = row.get("width"), row.get("height")
        if not width or not height:
            raise Rejected("letterbox:unknown_dimensions: no width/height to scale the crop to; fix: run probe first")
        box = picture_box([cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for image in images], self.params.black_level)
        if box is None:
            return {"crop": None, "bar_fraction": 0.0}
        crop = to_source(box, (images[0].shape[1], images[0].shape[0]), (width, height))
        out: RowResult = {"crop": asdict(crop), "bar_fraction": 1.0 - crop.w * crop.h / (width * height)}
        if own:  # what later stages read: the picture alone
            out["frames"] = [encode_jpeg(image[box.y:box.y + box.h, box.x:box.x + box.w], self.params.quality)
                             for image in images]
        return out


def picture_box(frames: list[np.ndarray], black_level: int) -> Box | None:
    """The picture inside the bars all `frames` share ((H, W) uint8 gray, one size), or None when there are none."""
    import numpy as np

    bright = np.stack(frames) > black_level  # (F, H, W)
    _, height, width = bright.shape
    black_rows = (bright.mean(axis=2) <= _LINE_TOLERANCE).all(axis=0)  # (H,)
    top, bottom = _paired_bars(black_rows)
    band = bright[:, top:height - bottom]  # pillars are measured beside the picture rows only
    black_cols = (band.mean(axis=1) <= _LINE_TOLERANCE).all(axis=0)  # (W,)
    left, right = _paired_bars(black_cols)
    if top + bottom + left + right == 0:
        return None
    picture_rows, picture_cols = ~black_rows[top:height - bottom], ~black_cols[left:width - right]
    if picture_rows.mean() < _MIN_PICTURE_LINES or picture_cols.mean() < _MIN_PICTURE_LINES:
        return None  # mostly black inside too: a title card or a dark frame, not a framed picture
    return Box(left, top, width - left - right, height - top - bottom)


def _paired_bars(black: np.ndarray) -> tuple[int, int]:
    """The bars at both ends of one axis (lines black in every frame), or (0, 0) when they are not a pair."""
    import numpy as np

    lit = np.flatnonzero(~black)
    if lit.size == 0:  # black everywhere: nothing tells a bar from the picture
        return 0, 0
    first, last = int(lit[0]), len(black) - 1 - int(lit[-1])  # lengths of the black runs at each end
    if min(first, last) == 0 or abs(first - last) > _PAIR_SLACK_PX + _PAIR_SLACK * max(first, last):
        return 0, 0
    return first, last


def to_source(box: Box, size: tuple[int, int], source: tuple[int, int]) -> Box:
    """`box`, measured on a frame of `size` (w, h), in pixels of the `source` (w, h).

    Barred edges move inward to even pixels (yuv420p shares chroma between pixel pairs, and a part-bar
    line is worse than a lost picture line); edges without a bar stay at the frame's edge.
    """
    sx, sy = source[0] / size[0], source[1] / size[1]
    x0 = _even_up(box.x * sx) if box.x else 0
    y0 = _even_up(box.y * sy) if box.y else 0
    x1 = _even_down((box.x + box.w) * sx) if box.x + box.w < size[0] else source[0]
    y1 = _even_down((box.y + box.h) * sy) if box.y + box.h < size[1] else source[1]
    return Box(x0, y0, x1 - x0, y1 - y0)


def _even_up(value: float) -> int:
    return 2 * math.ceil(value / 2 - 1e-6)


def _even_down(value: float) -> int:
    return 2 * math.floor(value / 2 + 1e-6)
