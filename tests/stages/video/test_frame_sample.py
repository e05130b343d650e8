"""frame_sample: evenly spaced JPEG thumbnails from clip bytes, from the source, and from images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from video_media import colour_of, describe, raw_row, table

from dataprep.stages.video.frames import FrameSample, FrameSampleParams
from dataprep.stages.video.scene_split import SceneSplit
from dataprep.stages.video.standardize import Standardize, StandardizeParams


def _images(thumbs: list[bytes]) -> list[np.ndarray]:
    out = []
    for data in thumbs:
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG"
        out.append(np.asarray(image.convert("RGB")))
    return out


def test_thumbnails_from_clip_bytes(scenes_30fps: Path) -> None:
    scenes = SceneSplit().process_batch(table([describe(scenes_30fps, "vid")]))
    clips = Standardize(StandardizeParams(preset="ultrafast", min_seconds=1, max_seconds=None, width=320,
                                          height=240)).process_batch(scenes)
    out = FrameSample(FrameSampleParams(num_frames=3, max_side=64)).process_batch(clips)
    assert out.schema.field("frames").type == pa.list_(pa.binary())
    colours = ["red", "green", "blue", "yellow"]
    for row, colour in zip(out.to_pylist(), colours, strict=True):
        images = _images(row["frames"])
        assert len(images) == 3 and all(max(im.shape[:2]) == 64 for im in images)
        assert {colour_of(im) for im in images} == {colour}


def test_thumbnails_from_source_within_the_scene(scenes_30fps: Path) -> None:
    scenes = SceneSplit().process_batch(table([describe(scenes_30fps, "vid")]))
    out = FrameSample(FrameSampleParams(num_frames=5)).process_batch(scenes).to_pylist()
    for row, colour in zip(out, ["red", "green", "blue", "yellow"], strict=True):
        assert [colour_of(im) for im in _images(row["frames"])] == [colour] * 5
    whole = FrameSample(FrameSampleParams(num_frames=4)).process_batch(table([describe(scenes_30fps, "v")]))
    # at 1/8, 3/8, 5/8, 7/8 of 9.5 s: 1.19 s red, 3.56 s green, 5.94 s blue, 8.31 s yellow
    assert [colour_of(im) for im in _images(whole.column("frames")[0].as_py())] == ["red", "green", "blue", "yellow"]


def test_long_source_is_sampled_by_seeking(media_dir: Path) -> None:
    from video_media import ffmpeg

    path = media_dir / "long.mp4"
    colours = ["red", "green", "blue", "yellow"]
    inputs = [a for c in colours for a in ("-f", "lavfi", "-i", f"color=c={c}:s=64x48:r=10:d=30")]
    ffmpeg(*inputs, "-filter_complex", "[0][1][2][3]concat=n=4:v=1:a=0[v]", "-map", "[v]", "-c:v", "libx264",
           "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p", str(path))
    out = FrameSample(FrameSampleParams(num_frames=4)).process_batch(table([describe(path, "long")]))
    assert [colour_of(im) for im in _images(out.column("frames")[0].as_py())] == colours


def test_rotated_source_video_gives_upright_thumbnails(media_dir: Path) -> None:
    from video_media import ffmpeg

    base, path = media_dir / "fs_base.mp4", media_dir / "fs_rot90.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=160x96:r=25:d=1", "-vf", "drawbox=x=0:y=0:w=160:h=48:c=blue:t=fill",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(base))
    ffmpeg("-display_rotation:v:0", "90", "-i", str(base), "-c", "copy", str(path))
    out = FrameSample(FrameSampleParams(num_frames=1, max_side=160)).process_batch(table([describe(path, "r")]))
    (image,) = _images(out.column("frames")[0].as_py())
    assert image.shape[:2] == (160, 96)  # portrait, as a player shows it
    # the same picture ffmpeg's autorotate gives (standardize's path)
    clips = Standardize(StandardizeParams(preset="ultrafast", min_seconds=0.5, width=96, height=160,
                                          resize_mode="fit")).process_batch(table([describe(path, "r")]))
    (from_clip,) = _images(FrameSample(FrameSampleParams(num_frames=1, max_side=160)).process_batch(clips)
                           .column("frames")[0].as_py())
    assert np.abs(image.astype(int) - from_clip.astype(int)).mean() < 10


def test_image_gives_itself_upright(media_dir: Path) -> None:
    path = media_dir / "rotated.jpg"
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:, :100] = (255, 0, 0)  # left half red, right half blue as stored
    pixels[:, 100:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    Image.fromarray(pixels).save(path, exif=exif)
    row = raw_row(path, "img", media_type="image", width=100, height=200)
    (thumb,) = FrameSample(FrameSampleParams(max_side=50)).process_batch(table([row])).column("frames")[0].as_py()
    image = _images([thumb])[0]
    assert image.shape[:2] == (50, 25)  # portrait after rotation
    assert colour_of(image[:20]) == "red" and colour_of(image[-20:]) == "blue"


def test_broken_inputs_are_rejected(media_dir: Path) -> None:
    empty = media_dir / "empty_frames.mp4"
    empty.write_bytes(b"")
    bad_image = media_dir / "bad.jpg"
    bad_image.write_bytes(b"not a jpeg")
    out = FrameSample().process_batch(table([raw_row(empty, "v"), raw_row(bad_image, "i", media_type="image")]))
    reasons = out.column("_reject").to_pylist()
    assert reasons[0].startswith("error:InvalidDataError") and reasons[1].startswith("error:UnidentifiedImageError")
    assert out.column("frames").to_pylist() == [None, None]


def test_thumbnails_become_jpeg_members_of_a_sample(scenes_30fps: Path) -> None:
    from dataprep.members import SampleLayout, declared_members

    out = FrameSample(FrameSampleParams(num_frames=2, max_side=32)).process_batch(table([describe(scenes_30fps, "v")]))
    (files,) = SampleLayout(out.schema, declared_members([FrameSample()])).encode(out)
    assert sorted(files) == ["frames.0.jpg", "frames.1.jpg"]  # KEY.frames.0.jpg, ... in the shard
    # at 1/4 and 3/4 of 9.5 s: 2.4 s green, 7.1 s blue
    assert [colour_of(image) for image in _images([files["frames.0.jpg"], files["frames.1.jpg"]])] == ["green", "blue"]


def test_params_are_checked() -> None:
    with pytest.raises(Exception, match="num_frames"):
        FrameSampleParams(num_frames=0)
