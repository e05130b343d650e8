"""`blur_filter`: drop images and clips with no sharp sampled frame (variance of the Laplacian).

    stages:
      - stage: frame_sample
      - stage: blur_filter
        min_score: 100

The Laplacian responds to edges; its variance over a gray frame is high when the frame holds
fine detail and low when defocus, upscaling or heavy smoothing removed it (Pech-Pacheco et al.,
"Diatom autofocusing in brightfield microscopy", ICPR 2000). A row's score is its sharpest
frame's: an out-of-focus or upscaled source is soft in every frame, while motion blur in some
frames of a moving clip is what real footage looks like and worth learning, so one sharp frame
is evidence enough that the source is not soft. The variance grows as a picture is shrunk (a
blur of k px becomes k/2 px at half size), so frames are scored at `frame_sample`'s 256 px
thumbnail size: larger thumbnails are shrunk to it first.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataprep import arrow
from dataprep.stage import Filter, StageParams

SCORE = "blur_score"
# Longer side (px) frames are scored at: frame_sample's default, on which `min_score` was calibrated.
WORKING_SIDE = 256


class BlurParams(StageParams):
    """Options of `blur_filter`."""

    min_score: float = Field(
        100.0, ge=0, description="Rows whose sharpest frame has a Laplacian variance (gray levels squared, at 256 px) "
        "below this are dropped. 100: on 256 px thumbnails of real photos (the deepface, dlib and moviepy photos "
        "of the test data) originals score 207 and up, and copies blurred by a Gaussian of sigma 2 px at thumbnail "
        "size (1/128 of the longer side) 43 at most; 100 is near the geometric middle, and also drops every copy "
        "blurred with sigma 1.5 px (92 at most).")


class BlurFilter(Filter):
    """Scores each row by the Laplacian variance of its sharpest sampled frame and drops soft ones."""

    name = "blur_filter"
    reads = ("frames",)
    writes = (SCORE,)
    Params = BlurParams
    batch_size = 64

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Add `blur_score` (null, and the row rejected, when its frames do not decode)."""
        from dataprep.stages.quality.frames_io import FrameDecodeError, decode_frames

        scores: list[float | None] = []
        rejects: list[str | None] = []
        for frames in batch.column("frames").to_pylist():
            try:
                scores.append(max(laplacian_variance(gray) for gray in decode_frames(frames, gray=True)))
                rejects.append(None)
            except FrameDecodeError as exc:
                scores.append(None)
                rejects.append(f"blur:bad_frames: {exc}")
        return arrow.set_rejects(arrow.put(batch, SCORE, scores, pa.float64()), rejects)

    def reasons(self, batch: pa.Table) -> list[str | None]:
        """Below `min_score` is too blurry; a row without a score (not run through `process_batch`) is not kept."""
        limit = self.params.min_score
        return ["blur:unscored: no blur_score" if s is None
                else f"blur:too_blurry: laplacian variance {s:.1f} < {limit:g} (sharpest frame)" if s < limit else None
                for s in batch.column(SCORE).to_pylist()]


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian of a (H, W) uint8 frame, shrunk first to `WORKING_SIDE` when larger."""
    import cv2

    h, w = gray.shape
    if max(h, w) > WORKING_SIDE:
        scale = WORKING_SIDE / max(h, w)
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    _, std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_64F))
    return float(std[0, 0]) ** 2
