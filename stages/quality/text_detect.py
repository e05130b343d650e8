"""Text detection only (no recognition): PP-OCR's DB text detector, as ONNX inside the `rapidocr` wheel.

    detector = TextDetector(threads=1)
    detector.area(bgr_frame)   # fraction of the frame covered by text boxes, 0-1

The weights are the detection model the installed rapidocr wheel ships in its `models/` folder
(PP-OCRv6 small in rapidocr 3.10; Apache-2.0). The session is opened here on onnxruntime's CPU
provider from that file, so rapidocr's own model resolver, which downloads a model it does not
find, is never reached. Only rapidocr's pre- and post-processing of the DB detector are used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Frames are scored at most this long a side (px): frame_sample's default thumbnail, on which the
# guard below and text_filter's default were measured. Larger frames are shrunk to it, never enlarged:
# upscaled 256 px thumbnails make the detector return large blobs over faces and objects.
WORKING_SIDE = 256
# A text box whose shorter side exceeds this fraction of the frame's shorter side is kept only when
# the detector is sure of it (mean text probability >= SURE_SCORE). On 256 px thumbnails the detector
# now and then marks a whole face, body or pool as one box of 0.4-0.99 of the frame, with scores of
# 0.51-0.79 in the test media; real text lines measured at most 0.27 of the frame, and the one thicker
# real box, a two-line title card (Big Buck Bunny), scored 0.87-0.90.
MAX_LINE_HEIGHT = 0.3
SURE_SCORE = 0.85
# rapidocr's default DB post-processing (config.yaml, Det): pixel threshold, box score, box growth.
_DB = {"thresh": 0.3, "box_thresh": 0.5, "max_candidates": 1000, "unclip_ratio": 1.6, "use_dilation": True,
       "score_mode": "fast"}


class TextModelNotFoundError(FileNotFoundError):
    """No text detection model: the rapidocr wheel has none and no `model_path` was given."""


def bundled_model_path() -> Path:
    """The text detection ONNX file the installed rapidocr wheel ships (listed in its RECORD).

    Models rapidocr downloaded later land in the same folder, so the folder alone does not say which one
    came with the wheel.
    """
    from importlib.metadata import PackageNotFoundError, files

    try:
        shipped = [f for f in files("rapidocr") or () if f.parent.name == "models" and f.suffix == ".onnx"
                   and "det" in f.name]
    except PackageNotFoundError as exc:
        raise TextModelNotFoundError("text detection needs rapidocr; fix: pip install 'rapidocr>=3.0'") from exc
    found = [Path(str(f.locate())) for f in shipped if Path(str(f.locate())).is_file()]
    if not found:
        raise TextModelNotFoundError("the installed rapidocr wheel ships no text detection model (models/*det*.onnx); "
                                     "fix: reinstall rapidocr, or set `model_path` to a PP-OCR detection ONNX file")
    return found[0]


class TextDetector:
    """PP-OCR's DB text detector on onnxruntime's CPU provider, loaded once."""

    def __init__(self, model_path: str | Path | None = None, *, threads: int = 1) -> None:
        import onnxruntime as ort
        from rapidocr.ch_ppocr_det.utils import DBPostProcess

        path = Path(model_path) if model_path else bundled_model_path()
        if not path.is_file():
            raise TextModelNotFoundError(f"`model_path`: {str(path)!r} is not a file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: nothing a user could act on is logged below that
        self.model_path = path
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._post = DBPostProcess(**_DB)

    def boxes(self, image: np.ndarray) -> list[np.ndarray]:
        """The text boxes of a BGR (H, W, 3) uint8 frame: (4, 2) int32 corner points each, in its pixels."""
        import cv2
        from rapidocr.ch_ppocr_det.utils import DetPreProcess

        h, w = image.shape[:2]
        # DetPreProcess rounds each side to a multiple of 32, as the network needs; "max" never enlarges.
        tensor = DetPreProcess(WORKING_SIDE, "max")(image)  # (1, 3, H', W') float32
        if tensor is None:
            return []
        (prob,) = self._session.run(None, {self._input: tensor})  # (1, 1, H', W') text probability
        found, scores = self._post(prob, (h, w))
        line_limit = MAX_LINE_HEIGHT * min(h, w)
        return [box for box, score in zip(found, scores, strict=True)
                if score >= SURE_SCORE or min(cv2.minAreaRect(box.astype(np.float32))[1]) <= line_limit]

    def area(self, image: np.ndarray) -> float:
        """Fraction (0-1) of a BGR frame's pixels inside its text boxes (overlaps counted once)."""
        import cv2

        mask = np.zeros(image.shape[:2], np.uint8)
        for box in self.boxes(image):
            cv2.fillPoly(mask, [box.astype(np.int32)], 1)
        return float(mask.mean())

