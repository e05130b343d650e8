"""Generated media shared by the video stage tests (each made once per session, small and fast)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# `tests/` is on sys.path (for tests/conftest.py) and holds a `stages/` folder without
# __init__.py, which Python takes for the `stages` namespace package unless the repo
# root is on sys.path too, as it is under `python -m pytest` but not plain `pytest`.
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

from video_media import SCENES, colour_scenes, ffmpeg  # noqa: E402


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("video_media")


@pytest.fixture(scope="session")
def scenes_30fps(media_dir: Path) -> Path:
    return colour_scenes(media_dir / "scenes30.mp4", SCENES, rate="30")


@pytest.fixture(scope="session")
def scenes_ntsc(media_dir: Path) -> Path:
    return colour_scenes(media_dir / "scenes2997.mp4", SCENES, rate="30000/1001")


@pytest.fixture(scope="session")
def scenes_25fps(media_dir: Path) -> Path:
    return colour_scenes(media_dir / "scenes25.mp4", SCENES, rate="25")


@pytest.fixture(scope="session")
def portrait(media_dir: Path) -> Path:
    return colour_scenes(media_dir / "portrait.mp4", [("blue", 2.5)], size="180x320")


@pytest.fixture(scope="session")
def with_audio(media_dir: Path) -> Path:
    path = media_dir / "audio.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=3", "-f", "lavfi", "-i", "sine=f=440:d=3",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path))
    return path
