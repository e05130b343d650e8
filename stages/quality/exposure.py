"""`exposure_filter`: drop black or white frames, underexposed and washed-out pictures (luma histograms).

    stages:
      - stage: frame_sample
      - stage: exposure_filter
        max_black_frames: 0.25
        min_highlight: 100

Each sampled frame's gray-level histogram is taken once; from it come, per frame, whether it
is black or white (ffmpeg blackdetect's test: 98% of pixels at most 10% from the end of the
range), and, pooled over a row's frames, the mean luma and the 1st and 99th percentiles.
Underexposure is judged on the highlights, not the mean: an underexposed picture has its whole
range squeezed into the dark end, so even its brightest pixels are dim, while a well-exposed
night scene, a dark-background portrait or a star field is dark on average but has light in it.
On the real photos of the test data the mean luma of originals (19 to 168) and of copies
darkened by 2 stops (5 to 42) overlap; their 99th percentiles (149 and up, 65 at most) do not.
Washed-out pictures are the mirror case, judged on the shadows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataprep import arrow
from dataprep.stage import Filter, StageParams

MEAN, HIGHLIGHT, SHADOW = "exposure_mean", "exposure_highlight", "exposure_shadow"
BLACK_FRAMES, WHITE_FRAMES = "exposure_black_frames", "exposure_white_frames"
# ffmpeg blackdetect's defaults: a pixel is black at most 10% of the range above black (25 of 255
# in full-range thumbnails), a picture is black when 98% of its pixels are; white mirrors it.
BLACK_LEVEL, WHITE_LEVEL, FRAME_RATIO = 25, 230, 0.98
# Percentiles (fractions of pixels) read as a row's shadows and highlights: 1% ignores specks.
SHADOW_AT, HIGHLIGHT_AT = 0.01, 0.99


class ExposureParams(StageParams):
    """Options of `exposure_filter`; None disables a bound."""

    max_black_frames: float = Field(
        0.25, ge=0, le=1, description="Rows with more than this fraction of sampled frames black are dropped. 0.25: "
        "of 4 frames one black one (a fade at a clip's end) is kept, two are not; an image (one frame) is dropped "
        "when black.")
    max_white_frames: float = Field(
        0.25, ge=0, le=1, description="The same for white frames (flashes, blown-out shots, blank pages).")
    min_highlight: int | None = Field(
        100, ge=0, le=255, description="Rows whose 99th-percentile luma (0-255, pooled over the frames) is below "
        "this are underexposed. 100: on the real photos of the test data, originals have 149 and up, copies "
        "darkened by 2 stops (gain 0.25) 65 at most; 100 is near their geometric middle.")
    max_shadow: int | None = Field(
        155, ge=0, le=255, description="Rows whose 1st-percentile luma (0-255) is above this are washed out: no "
        "shadow anywhere. 155 mirrors `min_highlight` (255 - 100); originals of the test data have 43 at most.")
    min_mean: float | None = Field(
        None, ge=0, le=255, description="Rows whose mean luma (0-255) is below this are dropped. Off by default: "
        "the mean tells a night scene from a bright one, not a badly exposed picture from a good one (see the "
        "module docstring); set it to cut dark content on purpose.")
    max_mean: float | None = Field(
        None, ge=0, le=255, description="Rows whose mean luma (0-255) is above this are dropped; off by default "
        "for the same reason (snow, white studio backgrounds).")


class ExposureFilter(Filter):
    """Scores each row's luma histogram and drops black, white, underexposed or washed-out rows."""

    name = "exposure_filter"
    reads = ("frames",)
    writes = (MEAN, HIGHLIGHT, SHADOW, BLACK_FRAMES, WHITE_FRAMES)
    Params = ExposureParams
    batch_size = 64

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Add the exposure scores (null, and the row rejected, when its frames do not decode)."""
        import cv2
        import pyarrow.compute as pc

        from dataprep.stages.quality.frames_io import FrameDecodeError, decode_frames

        column = batch.column("frames")
        # One (256,) pixel count per frame, filled in place: no per-frame array to stack afterwards.
        hists = np.empty((pc.sum(pc.list_value_length(column)).as_py() or 0, 256), np.float32)
        counts = np.zeros(batch.num_rows, np.int64)  # frames per row; 0 for an undecodable row
        rejects: list[str | None] = []
        done = 0
        for i, frames in enumerate(column.to_pylist()):
            try:
                grays = decode_frames(frames, gray=True)
            except FrameDecodeError as exc:
                rejects.append(f"exposure:bad_frames: {exc}")
                continue
            rejects.append(None)
            for gray in grays:
                cv2.calcHist([gray], [0], None, [256], [0, 256], hist=hists[done].reshape(256, 1))
                done += 1
            counts[i] = len(grays)
        missing = counts == 0
        for name, values in histogram_scores(hists[:done], counts).items():
            type_ = pa.int32() if name in (HIGHLIGHT, SHADOW) else pa.float64()
            batch = arrow.put(batch, name, pa.array(values, mask=missing, type=type_), type_)
        return arrow.set_rejects(batch, rejects)

    def reasons(self, batch: pa.Table) -> list[str | None]:
        """The first bound a row breaks, in the order black, white, underexposed, washed out, mean."""
        p = self.params
        mean, high, shadow, black, white = (batch.column(c).to_numpy(zero_copy_only=False).astype(float)
                                            for c in self.writes)
        lo, hi = -np.inf, np.inf  # a bound set to None breaks for no row
        checks = [  # (rows breaking it, reason of row i); NaN compares false: only the first sees unscored rows
            (np.isnan(mean), lambda i: "exposure:unscored: no exposure scores"),
            (black > p.max_black_frames,
             lambda i: f"exposure:black_frames: {black[i]:.0%} of sampled frames black > {p.max_black_frames:.0%}"),
            (white > p.max_white_frames,
             lambda i: f"exposure:white_frames: {white[i]:.0%} of sampled frames white > {p.max_white_frames:.0%}"),
            (high < (lo if p.min_highlight is None else p.min_highlight),
             lambda i: f"exposure:underexposed: 99th percentile luma {high[i]:.0f} < {p.min_highlight}"),
            (shadow > (hi if p.max_shadow is None else p.max_shadow),
             lambda i: f"exposure:washed_out: 1st percentile luma {shadow[i]:.0f} > {p.max_shadow}"),
            (mean < (lo if p.min_mean is None else p.min_mean),
             lambda i: f"exposure:too_dark: mean luma {mean[i]:.1f} < {p.min_mean:g}"),
            (mean > (hi if p.max_mean is None else p.max_mean),
             lambda i: f"exposure:too_bright: mean luma {mean[i]:.1f} > {p.max_mean:g}"),
        ]
        out: list[str | None] = [None] * batch.num_rows
        for broken, reason in reversed(checks):  # the first check a row breaks writes last
            for i in np.flatnonzero(broken):
                out[i] = reason(i)
        return out


def histogram_scores(hists: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per row, the exposure scores of its frames' gray histograms.

    `hists` (F, 256) holds the pixel counts of the frames of all rows in order, `counts` (R,) how
    many frames belong to each row; a row with no frames gets zeros, to be masked.
    """
    out = {c: np.zeros(len(counts)) for c in (MEAN, HIGHLIGHT, SHADOW, BLACK_FRAMES, WHITE_FRAMES)}
    scored = counts > 0
    if not scored.any():
        return out
    # Exact counts as integers, levels first: numpy's running sums are several times faster over
    # integers and along the contiguous axis.
    by_level = np.ascontiguousarray(hists.T, dtype=np.int64)  # (256, F)
    pixels = by_level.sum(axis=0)  # (F,)
    black = by_level[:BLACK_LEVEL + 1].sum(axis=0) >= FRAME_RATIO * pixels
    white = by_level[WHITE_LEVEL:].sum(axis=0) >= FRAME_RATIO * pixels
    # A row's frames are pooled as the difference of running sums at its ends (np.add.reduceat is slower).
    ends = np.cumsum(counts[scored])
    starts = ends - counts[scored]
    running = np.zeros((256, len(pixels) + 1), np.int64)
    np.cumsum(by_level, axis=1, out=running[:, 1:])
    pooled = np.ascontiguousarray((running[:, ends] - running[:, starts]).T)  # (rows scored, 256)
    cdf = np.cumsum(pooled, axis=1)  # pixels at or below each level
    total = cdf[:, -1:]
    out[MEAN][scored] = pooled @ np.arange(256) / total[:, 0]
    out[SHADOW][scored] = np.argmax(cdf >= SHADOW_AT * total, axis=1)
    out[HIGHLIGHT][scored] = np.argmax(cdf >= HIGHLIGHT_AT * total, axis=1)
    for name, flags in ((BLACK_FRAMES, black), (WHITE_FRAMES, white)):
        seen = np.concatenate([[0], np.cumsum(flags)])
        out[name][scored] = (seen[ends] - seen[starts]) / counts[scored]
    return out
