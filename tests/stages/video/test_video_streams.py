"""Files with several video streams: every stage reads the one ffmpeg picks by default, the same one.

The picked stream holds a blue scene then a yellow one; the other stream is red, so a
stage that reads the wrong stream shows red, and one scene instead of two.
"""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from video_media import colour_of, decode_clip, describe, ffmpeg, table

from dataprep.ffmpeg import ffmpeg_exe
from dataprep.stages.pyav import default_video_index
from dataprep.stages.video.frames import FrameSample, FrameSampleParams
from dataprep.stages.video.scene_split import SceneSplit
from dataprep.stages.video.standardize import Standardize, StandardizeParams

RED = [("red", 2.5)]
BLUE_YELLOW = [("blue", 1.2), ("yellow", 1.3)]  # a cut at 1.2 s: frame 30 at 25 fps
# (file name, streams as (size, scenes, disposition), index ffmpeg picks)
FILES = {
    # no stream marked default: the larger picture wins
    "larger_second": ([("96x64", RED, "0"), ("192x128", BLUE_YELLOW, "0")], 1),
    # `default` is worth 5,000,000 pixels: it outweighs a larger picture without it
    "default_smaller": ([("192x128", RED, "0"), ("96x64", BLUE_YELLOW, "default")], 1),
    # same size, same disposition: the first
    "tie": ([("96x64", BLUE_YELLOW, "0"), ("96x64", RED, "0")], 0),
}
PICKED_STREAMS = ["larger_second", "default_smaller"]
STANDARDIZE = StandardizeParams(preset="ultrafast", min_seconds=0.5, max_seconds=4, width=64, height=48)


def _make(path: Path, streams: list[tuple[str, list[tuple[str, float]], str]]) -> Path:
    """An mkv with one video stream per entry, each a concat of solid-colour scenes (mkv keeps the dispositions)."""
    inputs: list[str] = []
    graph: list[str] = []
    for s, (size, scenes, _) in enumerate(streams):
        first = len(inputs) // 4  # input number of its first scene: four arguments per input
        for colour, seconds in scenes:
            inputs += ["-f", "lavfi", "-i", f"color=c={colour}:s={size}:r=25:d={seconds}"]
        graph.append("".join(f"[{first + i}]" for i in range(len(scenes))) + f"concat=n={len(scenes)}:v=1:a=0[s{s}]")
    maps = [a for s in range(len(streams)) for a in ("-map", f"[s{s}]")]
    dispositions = [a for s, (_, _, d) in enumerate(streams) for a in (f"-disposition:v:{s}", d)]
    ffmpeg(*inputs, "-filter_complex", ";".join(graph), *maps, *dispositions, "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", str(path))
    return path


@pytest.fixture(scope="module")
def files(media_dir: Path) -> dict[str, Path]:
    return {name: _make(media_dir / f"streams_{name}.mkv", streams) for name, (streams, _) in FILES.items()}


def _rows(path: Path, probed: bool) -> pa.Table:
    """The input row of `path` with probe's `video_stream` column, or as if no probe ran (the stage must choose)."""
    batch = table([describe(path, "v")])
    return batch if probed else batch.drop_columns(["video_stream"])


@pytest.mark.parametrize("name", sorted(FILES))
def test_the_choice_is_the_one_ffmpeg_makes(files: dict[str, Path], name: str) -> None:
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(files[name]), "-frames:v", "1", "-f", "null", "-"],
                          capture_output=True, text=True, timeout=60, check=True)
    mapped = re.search(r"Stream #0:(\d+)\S* -> #0:0", done.stderr)
    assert mapped, done.stderr
    with av.open(str(files[name])) as container:
        assert default_video_index(container.streams) == int(mapped.group(1)) == FILES[name][1]


def _stream(index: int, width: int, height: int, disposition: int = 0, kind: str = "video") -> SimpleNamespace:
    return SimpleNamespace(index=index, type=kind, disposition=av.stream.Disposition(disposition),
                           codec_context=SimpleNamespace(width=width, height=height))


def test_the_rule_for_cover_art_defaults_and_ties() -> None:
    pic, default = av.stream.Disposition.attached_pic, av.stream.Disposition.default
    audio = _stream(0, 0, 0, kind="audio")
    assert default_video_index([audio]) is None
    # cover art scores 1: any picture beats it, however large, but it is chosen when alone
    assert default_video_index([audio, _stream(1, 3840, 2160, pic), _stream(2, 64, 48)]) == 2
    assert default_video_index([audio, _stream(1, 640, 480, pic)]) == 1
    # `default` adds 5,000,000 pixels: a 4K picture (8.3 M) still beats a default 640x360
    assert default_video_index([_stream(0, 640, 360, default), _stream(1, 3840, 2160)]) == 1
    assert default_video_index([_stream(0, 1920, 1080), _stream(1, 640, 360, default)]) == 1
    assert default_video_index([_stream(0, 64, 48), _stream(1, 64, 48)]) == 0
    # a stream PyAV has no decoder for has no known size, yet is a stream ffmpeg could map
    no_codec = SimpleNamespace(index=0, type="video", disposition=av.stream.Disposition(0), codec_context=None)
    assert default_video_index([no_codec]) == 0


@pytest.mark.parametrize("probed", [True, False], ids=["probed", "unprobed"])
@pytest.mark.parametrize("name", PICKED_STREAMS)
def test_scene_split_reads_the_picked_stream(files: dict[str, Path], name: str, probed: bool) -> None:
    out = SceneSplit().process_batch(_rows(files[name], probed)).to_pylist()
    assert [(r["scene_start_frame"], r["scene_end_frame"], r["_reject"]) for r in out] == [(0, 30, None),
                                                                                          (30, 63, None)]


@pytest.mark.parametrize("probed", [True, False], ids=["probed", "unprobed"])
@pytest.mark.parametrize("name", PICKED_STREAMS)
def test_frame_sample_shows_the_picked_stream(files: dict[str, Path], name: str, probed: bool) -> None:
    out = FrameSample(FrameSampleParams(num_frames=2)).process_batch(_rows(files[name], probed))
    thumbs = [np.asarray(Image.open(io.BytesIO(t)).convert("RGB")) for t in out.column("frames")[0].as_py()]
    assert [colour_of(t) for t in thumbs] == ["blue", "yellow"]  # at 0.625 s and 1.875 s


@pytest.mark.parametrize("probed", [True, False], ids=["probed", "unprobed"])
@pytest.mark.parametrize("name", PICKED_STREAMS)
def test_standardize_cuts_the_picked_stream(files: dict[str, Path], name: str, probed: bool) -> None:
    (whole,) = Standardize(STANDARDIZE).process_batch(_rows(files[name], probed)).to_pylist()
    clip = decode_clip(whole["media"])
    assert whole["_reject"] is None and (colour_of(clip["first"]), colour_of(clip["last"])) == ("blue", "yellow")
    scenes = SceneSplit().process_batch(_rows(files[name], probed))
    clips = [decode_clip(r["media"]) for r in Standardize(STANDARDIZE).process_batch(scenes).to_pylist()]
    assert [(colour_of(c["first"]), colour_of(c["last"])) for c in clips] == [("blue", "blue"), ("yellow", "yellow")]


def test_the_recorded_stream_is_the_one_read(files: dict[str, Path]) -> None:
    # Probe's record wins over choosing again, so every stage reads the stream probe described.
    batch = table([{**describe(files["larger_second"], "v"), "video_stream": 0}])
    scenes = SceneSplit().process_batch(batch).to_pylist()
    assert [(r["scene_start_frame"], r["scene_end_frame"]) for r in scenes] == [(0, 63)]
    (thumb,) = FrameSample(FrameSampleParams(num_frames=1)).process_batch(batch).column("frames")[0].as_py()
    assert colour_of(np.asarray(Image.open(io.BytesIO(thumb)).convert("RGB"))) == "red"
    (clip,) = Standardize(STANDARDIZE).process_batch(batch).to_pylist()
    assert colour_of(decode_clip(clip["media"])["last"]) == "red"

