"""Where the ffmpeg binary is: the system's if on PATH, else the one imageio-ffmpeg installs."""

from __future__ import annotations

import functools
import os
import shutil


@functools.cache
def ffmpeg_exe() -> str:
    """Path of an ffmpeg binary; `DATAPREP_FFMPEG` overrides the search."""
    override = os.environ.get("DATAPREP_FFMPEG")
    if override:
        return override
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise RuntimeError("no ffmpeg on PATH; fix: `pip install imageio-ffmpeg` or install ffmpeg") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()
