"""`text_filter`: drop images and clips whose frames are mostly text (title cards, slides, burnt-in text).

    stages:
      - stage: frame_sample
      - stage: text_filter
        max_text_area: 0.15

Text is found by PP-OCR's text detector (detection only, no recognition; see `text_detect`), whose
weights ship inside the rapidocr wheel: it runs offline on CPU, about 16 ms of CPU per 256 px thumbnail.
`text_area` is the fraction of a frame covered by text boxes, for the row's most text-covered
frame: a title card or a caption shown in one sampled frame is in the clip (Big Buck Bunny's title
covers 28% of one of four frames of the test clip, 7% on average), so the mean would let it through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from dataprep import arrow
from dataprep.stage import Filter, Resources, StageParams

SCORE = "text_area"


class TextParams(StageParams):
    """Options of `text_filter`."""

    max_text_area: float = Field(
        0.15, ge=0, le=1, description="Rows whose most text-covered frame has more than this fraction (0-1) of its "
        "area in text boxes are dropped. 0.15: on 256 px thumbnails title cards measured 0.28-0.44 and a keyboard "
        "close-up 0.16, while a one-line burnt-in subtitle measured 0.10, press-wall backdrops 0.12-0.14, small "
        "labels 0.07 and less, and false alarms on text-free photos and clips 0.08 at most; 0.05 also drops "
        "subtitled clips, with more false alarms.")
    model_path: str | None = Field(
        None, description="A PP-OCR text detection ONNX file to use instead of the one in the rapidocr wheel.")
    threads: int | None = Field(
        None, ge=1, description="onnxruntime threads per worker (count); None uses the CPUs given to the stage.")


class TextFilter(Filter):
    """Measures the text-covered area of each row's frames and drops rows that are mostly text."""

    name = "text_filter"
    reads = ("frames",)
    writes = (SCORE,)
    Params = TextParams
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    batch_size = 32

    def __init__(self, params: StageParams | None = None, **options: Any) -> None:
        super().__init__(params, **options)
        self._detector: Any = None

    def preflight(self) -> list[str]:
        """A missing detection model, named with the fix."""
        from dataprep.stages.quality.text_detect import TextModelNotFoundError, bundled_model_path

        path = self.params.model_path
        if path is not None:
            return [] if Path(path).is_file() else [f"`model_path`: {path!r} is not a file; fix: point it at a PP-OCR "
                                                    "detection ONNX file, or remove it to use the one rapidocr ships"]
        try:
            bundled_model_path()
        except TextModelNotFoundError as exc:
            return [str(exc)]
        return []

    def setup(self) -> None:
        """Open the detector once per worker."""
        from dataprep.stages.quality.text_detect import TextDetector

        self._detector = TextDetector(self.params.model_path, threads=self.worker_threads(self.params.threads))

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Add `text_area` (null, and the row rejected, when its frames do not decode)."""
        if self._detector is None:
            self.setup()
        from dataprep.stages.quality.frames_io import FrameDecodeError, decode_frames

        areas: list[float | None] = []
        rejects: list[str | None] = []
        for frames in batch.column("frames").to_pylist():
            try:
                areas.append(max(self._detector.area(image) for image in decode_frames(frames)))
                rejects.append(None)
            except FrameDecodeError as exc:
                areas.append(None)
                rejects.append(f"text:bad_frames: {exc}")
        return arrow.set_rejects(arrow.put(batch, SCORE, areas, pa.float64()), rejects)

    def reasons(self, batch: pa.Table) -> list[str | None]:
        """Above `max_text_area` is too much text; a row without a score is not kept unchecked."""
        limit = self.params.max_text_area
        return ["text:unscored: no text_area" if a is None
                else f"text:too_much_text: text covers {a:.1%} of a frame > {limit:.1%}" if a > limit else None
                for a in batch.column(SCORE).to_pylist()]
