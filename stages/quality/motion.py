"""`motion_filter`: drop static clips (and, when asked, clips that move too much) by optical flow.

    stages:
      - stage: frame_sample
        num_frames: 4
      - stage: motion_filter
        min_score: 1.0

Farneback optical flow is measured between consecutive sampled frames shrunk to 128 px on the
longer side; a pair's motion is the 90th percentile of the flow magnitude (px at that size: how
far the most moving tenth of the picture moved), and a clip's score the mean over its pairs.
The percentile, not the mean over the picture, because a static camera on a moving subject is
moving footage: a face covering 11% of a still background and shifting 2 px per gap has a mean
flow of 0.37 px, like a frozen clip with grain, but a 90th percentile of 1.8 px.

The frames are `frame_sample`'s, spread over the whole clip (4 frames of a 10 s clip are 2.5 s
apart), not consecutive video frames, so the score measures how far the picture moved between
moments of the clip, not its per-frame speed. That is what tells a still image turned into a
video, a frozen stream or a slide from a moving shot: their samples are the same picture up to
encoder noise (0.44 px at most, with heavy grain), while every real moving clip of the test data
scores 3.1 px or more. It is a weak measure of excessive motion: a real photo panned by a known
shift is measured within 2% up to 10 px per gap (8% of the picture), but past that Farneback
loses track (12 to 24 px shifts measured 7 to 16 px), and ordinary moving clips of the test data
already score 3 to 9 px at 2.5 s apart; so `max_score` is off by default, and worth setting only
with frames sampled densely (many frames per second of clip). Images, and rows with one frame,
are not judged: they keep a null score.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from dataprep import arrow
from dataprep.stage import Filter, StageParams

SCORE = "motion_score"
# Longer side (px) the flow is measured at, so the score's unit: px at this size, whatever
# the thumbnails' size. Small is fast (a few ms a pair), and sample gaps are large anyway.
WORKING_SIDE = 128
# Percentile of a pair's flow magnitudes taken as its motion: the tenth of the picture that moves most.
MOVING_SHARE_AT = 0.9
# OpenCV's own Farneback example (samples/python/opt_flow.py): pyramid scale 0.5, 3 levels,
# 15 px window, 3 iterations, 5 px polynomial neighbourhood with sigma 1.2.
_FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)


class MotionParams(StageParams):
    """Options of `motion_filter`; None disables a bound."""

    min_score: float | None = Field(
        1.0, ge=0, description="Clips whose motion score (px per sample gap at 128 px, see the module docstring) is "
        "below this are static. 1.0: still pictures encoded as video score 0.44 at most (with heavy grain), the real "
        "moving clips of the test data 3.1 and up.")
    max_score: float | None = Field(
        None, gt=0, description="Clips whose motion score (px per sample gap at 128 px) is above this move too much. "
        "Off by default: the flow is measured only up to about 10 px, which ordinary clips nearly reach with samples "
        "seconds apart; set it only with densely sampled frames.")

    @model_validator(mode="after")
    def _ordered(self) -> MotionParams:
        if self.min_score is not None and self.max_score is not None and self.min_score > self.max_score:
            raise ValueError(f"`min_score` ({self.min_score}) must be <= `max_score` ({self.max_score})")
        return self


class MotionFilter(Filter):
    """Scores each clip's motion between its sampled frames and drops static (or too fast) ones."""

    name = "motion_filter"
    reads = ("frames", "media_type")
    writes = (SCORE,)
    Params = MotionParams
    batch_size = 32

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Add `motion_score` (null for images and one-frame rows; null and rejected for undecodable frames)."""
        from dataprep.stages.quality.frames_io import FrameDecodeError, decode_frames

        scores: list[float | None] = []
        rejects: list[str | None] = []
        for frames, kind in zip(batch.column("frames").to_pylist(), batch.column("media_type").to_pylist(),
                                strict=True):
            if kind == "image" or (frames is not None and len(frames) < 2):
                scores.append(None)  # a still has no motion to judge
                rejects.append(None)
                continue
            try:
                scores.append(flow_score(decode_frames(frames, gray=True)))
                rejects.append(None)
            except FrameDecodeError as exc:
                scores.append(None)
                rejects.append(f"motion:bad_frames: {exc}")
        return arrow.set_rejects(arrow.put(batch, SCORE, scores, pa.float64()), rejects)

    def reasons(self, batch: pa.Table) -> list[str | None]:
        """Below `min_score` is static, above `max_score` too fast; unjudged rows (null score) are kept."""
        lo, hi = self.params.min_score, self.params.max_score
        return [None if s is None
                else f"motion:static: flow {s:.2f} px < {lo:g} px per sample gap" if lo is not None and s < lo
                else f"motion:too_fast: flow {s:.2f} px > {hi:g} px per sample gap" if hi is not None and s > hi
                else None
                for s in batch.column(SCORE).to_pylist()]


def flow_score(grays: list[np.ndarray]) -> float:
    """Mean over consecutive (H, W) uint8 frames of the 90th-percentile Farneback flow magnitude (px at 128 px)."""
    import cv2

    h, w = grays[0].shape
    scale = WORKING_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = [cv2.resize(g, size, interpolation=cv2.INTER_AREA) for g in grays]
    moved = []
    for a, b in zip(small, small[1:]):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, *_FARNEBACK)  # (h, w, 2): dx, dy per pixel
        magnitude = cv2.magnitude(flow[..., 0], flow[..., 1]).ravel()
        k = int(MOVING_SHARE_AT * (magnitude.size - 1))
        moved.append(float(np.partition(magnitude, k)[k]))  # the 90th percentile, without a full sort
    return float(np.mean(moved))
