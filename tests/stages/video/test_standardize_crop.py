"""standardize with letterbox's `crop`: clips of real video padded with bars come out without them, bucketed
by the picture's aspect; rows without a crop are cut as before."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from video_media import describe, ffmpeg, table

from dataprep.stages.quality.letterbox import Letterbox
from dataprep.stages.video import encode
from dataprep.stages.video.plan import Geometry, scale_filters
from dataprep.stages.video.standardize import Standardize, StandardizeParams

# One bucket per aspect: 16:9, 4:3, 1:1 and their portrait twins.
BUCKETS = [(128, 72), (128, 96), (96, 96), (72, 128), (96, 128)]
# A real video padded with black bars (filters), its bucket with the bars and without them. The pictures are
# exactly a bucket's aspect, so `resize_mode: pad` adds no bar of its own.
PADDED = {
    "letterbox": ("decord_flipping_a_pancake.mkv", "scale=384:216,pad=384:288:0:36:black", "128x96", "128x72"),
    "pillarbox": ("mmaction2_test.avi", "pad=428:240:54:0:black", "128x72", "128x96"),  # 4:3 in 16:9
    # the letterboxed video shown turned 90 degrees: portrait, the bars left and right
    "rotated": ("decord_flipping_a_pancake.mkv", "scale=384:216,pad=384:288:0:36:black", "96x128", "72x128"),
}
BLACK = 24  # luma of a bar pixel at most (letterbox's black_level)


@pytest.fixture(scope="module")
def padded(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("padded")
    out = {}
    for kind, (name, pad, _, _) in PADDED.items():
        path = folder / f"{kind}.mp4"
        ffmpeg("-t", "2.5", "-i", str(shared_data / "videos" / name), "-vf", pad, "-an", "-c:v", "libx264",
               "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))
        out[kind] = path
    turned = folder / "rotated90.mp4"
    ffmpeg("-display_rotation:v:0", "90", "-i", str(out["rotated"]), "-c", "copy", str(turned))
    out["rotated"] = turned
    return out


def _borders(media: bytes) -> np.ndarray:
    """Mean luma of the 2-px strip along each edge (top, bottom, left, right) of every frame: (frames, 4)."""
    import av

    with av.open(io.BytesIO(media)) as container:
        frames = [f.to_ndarray(format="gray").astype(float) for f in container.decode(video=0)]
    return np.array([(g[:2].mean(), g[-2:].mean(), g[:, :2].mean(), g[:, -2:].mean()) for g in frames])


@pytest.mark.parametrize("mode", ["crop", "pad"])  # pad: a bar that was not cut out stays in sight
@pytest.mark.parametrize("kind", list(PADDED))
def test_clips_hold_the_picture_without_bars(padded: dict[str, Path], kind: str, mode: str) -> None:
    measured = Letterbox().process_batch(table([describe(padded[kind], kind)]))
    (crop,) = measured.column("crop").to_pylist()
    assert crop is not None
    params = StandardizeParams(preset="ultrafast", min_seconds=1, max_seconds=2, buckets=BUCKETS, resize_mode=mode)
    _, _, barred_bucket, picture_bucket = PADDED[kind]
    with_crop = Standardize(params).process_batch(measured).to_pylist()
    assert [r["bucket"] for r in with_crop] == [picture_bucket]
    assert (_borders(with_crop[0]["media"]) > BLACK).all()  # every edge of every frame is picture
    # the same rows without `crop` are cut as before: the frame's aspect, bars at two edges
    (plain,) = Standardize(params).process_batch(measured.drop_columns(["crop"])).to_pylist()
    assert plain["bucket"] == barred_bucket
    assert ((_borders(plain["media"]) <= BLACK).sum(axis=1) >= 2).all()


def test_the_crop_comes_before_the_scale_and_only_with_a_crop() -> None:
    plain = Geometry(128, 72, "crop")
    assert scale_filters(plain)[0].startswith("scale=")  # rows without a crop: the filters they always had
    cropped = Geometry(128, 72, "crop", source_crop=(0, 40, 426, 240))
    assert scale_filters(cropped) == ["crop=426:240:0:40", *scale_filters(plain)]
    job = encode.ClipJob(0.0, 1.0, 24, cropped, "/tmp/out.mp4")
    argv = encode.build_argv("/in.mp4", [job], stream=0, fps=Fraction(24), source_fps=24.0,
                             encoder=encode.Encoder(), with_audio=False)
    graph = argv[argv.index("-filter_complex") + 1]
    assert graph.index("crop=426:240:0:40") < graph.index("scale=")


def test_a_crop_outside_the_frame_is_rejected(padded: dict[str, Path]) -> None:
    row = {**describe(padded["letterbox"], "lb"), "crop": {"x": 0, "y": 36, "w": 384, "h": 260}}  # 296 > 288
    (out,) = Standardize(StandardizeParams(preset="ultrafast", min_seconds=1)).process_batch(
        pa.Table.from_pylist([row])).to_pylist()
    assert out["_reject"].startswith("clip:bad_crop: ") and "384x288 frame" in out["_reject"]


def test_upscale_limit_is_judged_on_the_picture(padded: dict[str, Path]) -> None:
    row = {**describe(padded["letterbox"], "lb"), "crop": {"x": 100, "y": 100, "w": 100, "h": 60}}
    params = StandardizeParams(preset="ultrafast", min_seconds=1, width=320, height=192, max_upscale=2.0)
    (out,) = Standardize(params).process_batch(pa.Table.from_pylist([row])).to_pylist()
    # the 384x288 frame would fit; its 100x60 picture needs 3.2x
    assert out["_reject"] == ("clip:too_small: 100x60 (picture inside the bars) needs 3.2x upscale to 320x192 "
                              "> max_upscale 2.0")
