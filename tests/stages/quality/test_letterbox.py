"""letterbox: bars found on real media padded with known bars, none on dark real media, thumbnails cropped."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageOps

from dataprep.ffmpeg import ffmpeg_exe
from dataprep.stages.quality.letterbox import Letterbox, LetterboxParams, picture_box
from dataprep.stages.video.frames import FrameSample

# Real videos and where their picture sits once padded: (file, seconds, pad filter, true (x, y, w, h)).
PADDED = {
    # 16:9 (426x240) in a 4:3 frame: bars top and bottom
    "letterbox": ("decord_flipping_a_pancake.mkv", "pad=426:320:0:40:black", (0, 40, 426, 240)),
    # 4:3 (320x240) in a ~16:9 frame: bars left and right
    "pillarbox": ("mmaction2_test.avi", "pad=428:240:54:0:black", (54, 0, 320, 240)),
    # a small window: bars on all four sides, 80% of the frame
    "windowbox": ("decord_flipping_a_pancake.mkv", "pad=960:540:267:150:black", (267, 150, 426, 240)),
}


def _ffmpeg(*args: str) -> None:
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _padded(shared_data: Path, folder: Path, kind: str) -> Path:
    name, pad, _ = PADDED[kind]
    path = folder / f"{kind}.mp4"
    if not path.exists():
        _ffmpeg("-t", "2.5", "-i", str(shared_data / "videos" / name), "-vf", pad, "-an", "-c:v", "libx264",
                "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("letterbox")


def _row(path: Path, key: str, **fields) -> dict:
    """What probe says about `path`: its displayed size (after rotation) and the video stream."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        first = next(container.decode(stream))
        turned = int(first.rotation or 0) % 180 != 0
        width, height = (first.height, first.width) if turned else (first.width, first.height)
        return {"key": key, "source": str(path), "media_type": "video", "width": width, "height": height,
                "video_stream": stream.index, **fields}


def _image_row(path: Path, key: str) -> dict:
    with Image.open(path) as image:
        width, height = ImageOps.exif_transpose(image).size
    return {"key": key, "source": str(path), "media_type": "image", "width": width, "height": height}


def _table(rows: list[dict]) -> pa.Table:
    """A batch of `rows`, with every field any row has (missing ones null)."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    return pa.Table.from_pylist([{name: row.get(name) for name in names} for row in rows])


def _run(rows: list[dict] | pa.Table, **options) -> list[dict]:
    stage = Letterbox(LetterboxParams(**options))
    out = stage.process_batch(_table(rows) if isinstance(rows, list) else rows)
    reasons = stage.reasons(out)
    return [{**row, "reason": row.get("_reject") or reason} for row, reason in zip(out.to_pylist(), reasons,
                                                                                    strict=True)]


def _close(crop: dict, truth: tuple[int, int, int, int], px: float) -> bool:
    x, y, w, h = truth
    edges = (crop["x"] - x, crop["y"] - y, crop["x"] + crop["w"] - x - w, crop["y"] + crop["h"] - y - h)
    return all(abs(e) <= px for e in edges)


@pytest.mark.parametrize("kind", ["letterbox", "pillarbox"])
def test_bars_padded_onto_a_real_video_are_found(shared_data: Path, media: Path, kind: str) -> None:
    path = _padded(shared_data, media, kind)
    (row,) = _run([_row(path, kind)])
    truth = PADDED[kind][2]
    assert row["reason"] is None
    assert row["crop"] is not None and _close(row["crop"], truth, 2), row["crop"]
    frame_area = row["width"] * row["height"]
    assert row["bar_fraction"] == pytest.approx(1 - truth[2] * truth[3] / frame_area, abs=0.01)
    assert "frames" not in row  # it sampled its own frames; frame_sample comes later in a t2v job


def test_crop_of_a_rotated_video_is_in_displayed_pixels(shared_data: Path, media: Path) -> None:
    rotated = media / "letterbox_rot90.mp4"
    _ffmpeg("-display_rotation:v:0", "90", "-i", str(_padded(shared_data, media, "letterbox")), "-c", "copy",
            str(rotated))
    (row,) = _run([_row(rotated, "rot")])
    assert (row["width"], row["height"]) == (320, 426)  # shown portrait: the bars are now left and right
    assert _close(row["crop"], (40, 0, 240, 426), 2), row["crop"]


def test_mostly_bars_is_rejected_unless_allowed(shared_data: Path, media: Path) -> None:
    row = _row(_padded(shared_data, media, "windowbox"), "window")
    (strict,) = _run([row])
    assert _close(strict["crop"], PADDED["windowbox"][2], 2), strict["crop"]
    assert strict["reason"].startswith("letterbox:too_small: bars cover 80% of the frame > max_bar_fraction 0.75")
    (allowed,) = _run([row], max_bar_fraction=None)
    assert allowed["reason"] is None and allowed["crop"] == strict["crop"]


def test_dark_real_media_without_bars_gets_no_crop(shared_data: Path) -> None:
    videos, images = shared_data / "videos", shared_data / "images"
    rows = [
        # a lit table under a black ceiling that fills the top sixth: a dark band with no twin below
        _image_row(images / "dlib_2008_007676.jpg", "bar_at_night"),
        _image_row(images / "dlib_2008_001009.jpg", "dark_room"),
        _image_row(images / "skimage_hubble_deep_field.jpg", "stars"),
        # black, then a copyright line on black: only one line holds picture
        _row(videos / "pyscenedetect_testvideo.mp4", "title_card", scene_start=0.0, scene_end=1.0),
        _row(videos / "moviepy_no_duration.webm", "all_dark"),  # every frame near black
    ]
    sampled = _run(rows)
    with_frames = _run(FrameSample().process_batch(_table(rows[:3])))  # t2i: 256 px thumbnails
    for row in sampled + with_frames:
        assert (row["crop"], row["bar_fraction"], row["reason"]) == (None, 0.0, None), row["key"]


def test_real_pillarboxed_photo_is_cropped_at_its_black_columns(shared_data: Path) -> None:
    path = shared_data / "images" / "face_recognition_obama-720p.jpg"  # a portrait photo inside a 16:9 frame
    gray = np.asarray(Image.open(path).convert("L"))
    black = np.flatnonzero(gray.max(axis=0) > 0)  # the truth: columns with any pixel that is not pure black
    truth = (int(black[0]), 0, int(black[-1] - black[0] + 1), gray.shape[0])
    (sampled,) = _run([_image_row(path, "obama")])  # measured at 1024 px
    assert _close(sampled["crop"], truth, 2), (sampled["crop"], truth)
    assert sampled["reason"] is None  # 52% bars, but the picture is a full 608x720 photo: kept
    (thumbs,) = _run(FrameSample().process_batch(_table([_image_row(path, "obama")])))
    assert _close(thumbs["crop"], truth, 1280 / 256 + 1), (thumbs["crop"], truth)  # one 256 px thumbnail pixel


def test_thumbnails_of_a_barred_image_are_replaced_by_the_picture(shared_data: Path, tmp_path: Path) -> None:
    photo = Image.open(shared_data / "images" / "skimage_chelsea.png").convert("RGB")  # 451x300
    framed = Image.new("RGB", (600, 300))
    framed.paste(photo, (74, 0))  # pillarbox: 74 px left, 75 px right
    framed_path = tmp_path / "framed.png"
    framed.save(framed_path)
    rows = [_image_row(framed_path, "framed"), _image_row(shared_data / "images" / "skimage_coffee.png", "plain")]
    before = FrameSample().process_batch(_table(rows))
    framed_row, plain_row = _run(before)
    assert _close(framed_row["crop"], (74, 0, 451, 300), 600 / 256 + 1), framed_row["crop"]
    (thumb,) = framed_row["frames"]
    picture = np.asarray(Image.open(io.BytesIO(thumb)).convert("L"))
    assert picture.shape[1] / picture.shape[0] == pytest.approx(451 / 300, rel=0.03)  # the picture's aspect
    assert picture[:, :2].mean() > 24 and picture[:, -2:].mean() > 24  # no black column left at either side
    assert plain_row["crop"] is None and plain_row["frames"] == before.column("frames")[1].as_py()  # untouched


def test_a_band_dark_in_one_frame_only_is_picture() -> None:
    frames = [np.full((60, 80), 120, np.uint8) for _ in range(3)]
    for frame in frames:  # real bars: 6 black rows top and bottom in every frame
        frame[:6], frame[-6:] = 0, 0
    frames[1][:20], frames[1][-20:] = 5, 5  # one dark shot reaches further in; the others show picture there
    box = picture_box(frames, black_level=24)
    assert box is not None and (box.x, box.y, box.w, box.h) == (0, 6, 80, 48)


def test_bad_rows_are_rejected_with_a_reason(media: Path, shared_data: Path) -> None:
    ok = _row(_padded(shared_data, media, "letterbox"), "ok")
    rows = [
        {**ok, "key": "garbage", "frames": [b"not a jpeg"]},
        {**ok, "key": "missing", "source": str(media / "nope.mp4"), "frames": None},
        {**ok, "key": "no_size", "width": None, "frames": None},
    ]
    by_key = {r["key"]: r["reason"] for r in _run(rows)}
    assert by_key["garbage"].startswith("error:FrameDecodeError: frames[0]: not a decodable image")
    assert by_key["missing"].startswith("error:")
    assert by_key["no_size"].startswith("letterbox:unknown_dimensions:")
