"""exposure_filter: real photos against darkened and washed-out copies, black and white frames, bad frames.

The default bounds were chosen on the deepface_*, dlib_* and moviepy_* photos of ../shared/data;
the face_recognition_*, skimage_* and exif-orientation-* photos were kept out of the choice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from dataprep.stages.quality.exposure import ExposureFilter, ExposureParams
from dataprep.stages.quality.frames_io import encode_jpeg
from dataprep.stages.video.frames import FrameSample

# Copies with the picture's range squeezed into a quarter of it: 2 stops under (gain 0.25), and the
# mirror, every tone lifted into the top quarter (fog, a flare, a wrong black level).
EDITS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "darkened": lambda x: x * 0.25,
    "washed_out": lambda x: 255 - (255 - x) * 0.25,
}
BLACK = encode_jpeg(np.zeros((144, 256, 3), np.uint8))
WHITE = encode_jpeg(np.full((144, 256, 3), 255, np.uint8))


def _thumbs(paths: list[Path]) -> list[bytes]:
    """frame_sample's thumbnail of each image or the frames of each video, as the pipeline makes them."""
    rows = [{"key": p.stem, "source": str(p), "media_type": "image"} for p in paths]
    out = FrameSample().process_batch(pa.Table.from_pylist(rows))
    return [frames[0] for frames in out.column("frames").to_pylist()]


def _decide(frames: list[list[bytes] | None], **params) -> tuple[list[dict], list[str | None]]:
    """(exposure scores, reason) per row as the runner gets them: the stage's reject, else `reasons`."""
    stage = ExposureFilter(ExposureParams(**params))
    out = stage.process_batch(pa.Table.from_pylist([{"frames": f} for f in frames],
                                                   schema=pa.schema([("frames", pa.list_(pa.binary()))])))
    rejects = out.column("_reject").to_pylist()
    reasons = [r or why for r, why in zip(rejects, stage.reasons(out), strict=True)]
    return out.select(list(ExposureFilter.writes)).to_pylist(), reasons


@pytest.fixture(scope="module")
def photos(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    """Per real photo, the thumbnail of the original and of each edited copy."""
    folder = tmp_path_factory.mktemp("exposure")
    paths = sorted((shared_data / "images").iterdir())
    files: dict[str, list[Path]] = {"original": paths, **{edit: [] for edit in EDITS}}
    for path in paths:
        image = cv2.imread(str(path)).astype(np.float32)  # upright per EXIF, as frame_sample reads it
        scale = min(1.0, 1024 / max(image.shape[:2]))  # editing a 1024 px copy is as good and faster
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        for edit, fn in EDITS.items():
            files[edit].append(folder / f"{path.stem}.{edit}.jpg")
            cv2.imwrite(str(files[edit][-1]), np.clip(fn(image), 0, 255).round().astype(np.uint8),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
    thumbs = {kind: _thumbs(group) for kind, group in files.items()}
    return {p.name: {kind: thumbs[kind][i] for kind in thumbs} for i, p in enumerate(paths)}


def test_real_photos_are_kept_and_their_badly_exposed_copies_flagged(photos):
    names = list(photos)
    # A darkened star field is 98% black pixels, so a black frame: either code flags the copy.
    for kind, codes in (("original", None), ("darkened", ("exposure:underexposed:", "exposure:black_frames:")),
                        ("washed_out", ("exposure:washed_out:", "exposure:white_frames:"))):
        _, reasons = _decide([[photos[n][kind]] for n in names])
        wrong = {n: r for n, r in zip(names, reasons, strict=True)
                 if (r is not None if codes is None else r is None or not r.startswith(codes))}
        assert wrong == {}, f"{kind} photos decided wrongly"
    assert len(names) >= 40


def test_dark_scenes_with_light_in_them_are_not_underexposed(photos):
    # A star field and a dark-background portrait: dark on average, well exposed.
    scores, reasons = _decide([[photos[n]["original"]] for n in ("skimage_hubble_deep_field.jpg",
                                                                  "face_recognition_obama-240p.jpg")])
    assert reasons == [None, None]
    assert all(s["exposure_mean"] < 50 for s in scores)
    _, reasons = _decide([[photos["face_recognition_obama-240p.jpg"]["original"]]], min_mean=50)
    assert reasons[0].startswith("exposure:too_dark: mean luma")


def test_a_real_black_video_is_dropped(shared_data):
    path = shared_data / "videos" / "moviepy_no_duration.webm"  # decodes to near-black frames
    rows = [{"key": "v", "source": str(path), "media_type": "video"}]
    (frames,) = FrameSample().process_batch(pa.Table.from_pylist(rows)).column("frames").to_pylist()
    (scores,), (reason,) = _decide([frames])
    assert len(frames) == 4 and scores["exposure_black_frames"] == 1.0
    assert reason == "exposure:black_frames: 100% of sampled frames black > 25%"


def test_black_and_white_frames_are_counted_per_frame(photos):
    good = photos["skimage_coffee.png"]["original"]
    rows = [[good] * 3 + [BLACK], [good] * 2 + [BLACK] * 2, [good] * 3 + [WHITE], [good] * 2 + [WHITE] * 2, [WHITE]]
    scores, reasons = _decide(rows)
    assert reasons[0] is None and scores[0]["exposure_black_frames"] == 0.25  # one fade frame is kept
    assert reasons[1] == "exposure:black_frames: 50% of sampled frames black > 25%"
    assert reasons[2] is None and scores[2]["exposure_white_frames"] == 0.25
    assert reasons[3] == "exposure:white_frames: 50% of sampled frames white > 25%"
    assert reasons[4].startswith("exposure:white_frames: 100%")
    assert _decide(rows[1:2], max_black_frames=0.5)[1] == [None]


def test_bad_frames_reject_their_row_only(photos):
    good = photos["skimage_camera.png"]["original"]
    scores, reasons = _decide([[good], [good, b"not a jpeg"], None, [good]])
    assert reasons[0] is None and reasons[3] is None and scores[0] == scores[3]
    assert reasons[1] == "exposure:bad_frames: frames[1]: not a decodable image (10 bytes)"
    assert reasons[2].startswith("exposure:bad_frames: frames: the row has no thumbnails")
    assert all(v is None for v in scores[1].values()) and all(v is None for v in scores[2].values())


def test_scores_are_recorded_for_dropped_rows():
    assert ExposureFilter.score_columns() == ("exposure_mean", "exposure_highlight", "exposure_shadow",
                                              "exposure_black_frames", "exposure_white_frames")
