"""blur_filter: real photos against their blurred copies, the sharpest-frame rule, bad frames.

The default `min_score` was chosen on the deepface_*, dlib_* and moviepy_* photos of ../shared/data;
the face_recognition_*, skimage_* and exif-orientation-* photos were kept out of the choice.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from dataprep.stages.quality.blur import BlurFilter, BlurParams
from dataprep.stages.quality.frames_io import encode_jpeg
from dataprep.stages.video.frames import FrameSample, FrameSampleParams

# Blur of the copies: a Gaussian of sigma 1/128 of the longer side, 2 px on a 256 px thumbnail.
BLUR_PER_SIDE = 1 / 128


def _thumbs(paths: list[Path], **params) -> list[bytes]:
    """frame_sample's thumbnail of each image, as the pipeline makes it."""
    rows = [{"key": p.stem, "source": str(p), "media_type": "image"} for p in paths]
    out = FrameSample(FrameSampleParams(**params)).process_batch(pa.Table.from_pylist(rows))
    return [frames[0] for frames in out.column("frames").to_pylist()]


def _decide(frames: list[list[bytes] | None], **params) -> tuple[list[float | None], list[str | None]]:
    """(blur_score, reason) per row as the runner gets them: the stage's reject, else `reasons`."""
    stage = BlurFilter(BlurParams(**params))
    out = stage.process_batch(pa.Table.from_pylist([{"frames": f} for f in frames],
                                                   schema=pa.schema([("frames", pa.list_(pa.binary()))])))
    rejects = out.column("_reject").to_pylist()
    return out.column("blur_score").to_pylist(), [r or why for r, why in zip(rejects, stage.reasons(out), strict=True)]


@pytest.fixture(scope="module")
def blurred(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Every real photo and its blurred copy, by file name."""
    folder = tmp_path_factory.mktemp("blurred")
    pairs = {}
    for path in sorted((shared_data / "images").iterdir()):
        image = cv2.imread(str(path))  # upright per EXIF, as frame_sample reads it
        scale = min(1.0, 1024 / max(image.shape[:2]))  # blurring a 1024 px copy is as good and 4x faster
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        pairs[path.name] = (path, folder / f"{path.stem}.jpg")
        cv2.imwrite(str(pairs[path.name][1]), cv2.GaussianBlur(image, (0, 0), max(image.shape[:2]) * BLUR_PER_SIDE),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
    return pairs


@pytest.fixture(scope="module")
def photos(blurred: dict[str, tuple[Path, Path]]) -> dict[str, tuple[bytes, bytes]]:
    """The thumbnails frame_sample makes of every real photo and of its blurred copy, by file name."""
    originals, copies = _thumbs([p for p, _ in blurred.values()]), _thumbs([c for _, c in blurred.values()])
    return dict(zip(blurred, zip(originals, copies, strict=True), strict=True))


def test_every_real_photo_is_kept_and_its_blurred_copy_dropped(photos):
    names = list(photos)
    scores, reasons = _decide([[photos[n][0]] for n in names] + [[photos[n][1]] for n in names])
    kept = dict(zip(names, reasons[:len(names)], strict=True))
    blurred = dict(zip(names, reasons[len(names):], strict=True))
    assert len(names) >= 40
    assert {n: r for n, r in kept.items() if r is not None} == {}, "a sharp photo was dropped"
    assert [n for n, r in blurred.items() if r is None or not r.startswith("blur:too_blurry:")] == [], \
        "a blurred copy was kept"
    assert all(s is not None and s >= 0 for s in scores)


def test_the_sharpest_frame_decides_a_clip(photos):
    sharp, soft = photos["skimage_astronaut.png"]
    _, reasons = _decide([[soft, soft, sharp, soft], [soft] * 4])
    assert reasons[0] is None  # motion blur in most frames, one sharp: the source is not soft
    assert reasons[1].startswith("blur:too_blurry: laplacian variance")


def test_larger_thumbnails_are_scored_at_the_calibrated_size(blurred):
    copies = [blurred[n][1] for n in ("skimage_coffee.png", "dlib_dogs.jpg", "deepface_img2.jpg")]
    at_256, _ = _decide([[t] for t in _thumbs(copies)])
    at_512, _ = _decide([[t] for t in _thumbs(copies, max_side=512)])
    # Unshrunk, a 512 px thumbnail of a blurred photo scores about 4x lower: its blur spans twice the pixels.
    assert all(0.5 < big / small < 2 for small, big in zip(at_256, at_512, strict=True)), (at_256, at_512)


def test_bad_frames_reject_their_row_only(photos):
    sharp, _ = photos["skimage_camera.png"]
    scores, reasons = _decide([[sharp], [sharp, b"not a jpeg"], None, []])
    assert reasons[0] is None and scores[0] > 100
    assert reasons[1] == "blur:bad_frames: frames[1]: not a decodable image (10 bytes)" and scores[1] is None
    assert all(r.startswith("blur:bad_frames: frames: the row has no thumbnails") for r in reasons[2:])


def test_flat_frames_score_zero_and_the_threshold_is_an_option():
    flat = encode_jpeg(np.full((144, 256), 128, np.uint8))
    scores, reasons = _decide([[flat]])
    assert scores == [0.0] and reasons[0] == "blur:too_blurry: laplacian variance 0.0 < 100 (sharpest frame)"
    assert _decide([[flat]], min_score=0)[1] == [None]


def test_the_score_is_recorded_for_dropped_rows():
    assert BlurFilter.score_columns() == ("blur_score",)
