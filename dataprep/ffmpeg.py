"""Which ffmpeg binary dataprep runs, chosen once per process and logged.

    DATAPREP_FFMPEG=/usr/bin/ffmpeg dataprep sample-data sample/   # force a binary

In order:
1. `DATAPREP_FFMPEG`, when set: the user chose it, so it is used unchecked.
2. The binary imageio-ffmpeg ships: a known recent build, whatever the system has.
3. Only when there is no such binary: the ffmpeg on PATH, if it has every filter,
   encoder and option in NEEDED. Distributions lag: Debian 12's 5.1 and Ubuntu
   22.04's 4.4 lack the `zoneplate` source and `-display_rotation`.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from dataprep.errors import ConfigError

log = logging.getLogger(__name__)

ENV = "DATAPREP_FFMPEG"

# What dataprep's command lines use (stages/video/encode.py and plan.py, stages/sample_data.py, the tests),
# as `ffmpeg -filters`, `-encoders` and `-h long` list them.
NEEDED: dict[str, frozenset[str]] = {
    "filters": frozenset({
        # clip standardization
        "split", "asplit", "anull", "trim", "atrim", "setpts", "asetpts", "fps", "scale", "setsar", "crop", "pad",
        "format",
        # the sample set and test media
        "testsrc", "testsrc2", "rgbtestsrc", "yuvtestsrc", "smptebars", "smptehdbars", "mandelbrot", "life",
        "cellauto", "zoneplate", "color", "nullsrc", "geq", "overlay", "concat", "hue", "sine", "drawbox", "select",
        "eq", "fade",
    }),
    "encoders": frozenset({"libx264", "aac", "mjpeg", "png", "libvpx-vp9"}),
    "options": frozenset({"display_rotation", "filter_complex_threads", "fps_mode"}),
}

# The ffmpeg arguments that list each kind of NEEDED.
_LISTING = {"filters": ("-filters",), "encoders": ("-encoders",), "options": ("-h", "long")}

# Seconds one query of a candidate binary may take; a binary that hangs on `-version` is not usable.
_QUERY_TIMEOUT = 30.0


class FFmpegNotFoundError(ConfigError):
    """No usable ffmpeg; raised before any work, so the CLI reports it as it reports a config problem."""

    def __init__(self, problem: str) -> None:
        super().__init__([problem])


@dataclass(frozen=True)
class _Choice:
    path: str
    version: str
    origin: str  # "DATAPREP_FFMPEG", "imageio-ffmpeg" or "PATH, checked"

    def __str__(self) -> str:
        return f"{self.path} (version {self.version}, from {self.origin})"


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary to run (see the module docstring for the order)."""
    return _chosen().path


def ffmpeg_description() -> str:
    """Which ffmpeg runs, e.g. `/path/ffmpeg (version 7.0.2, from imageio-ffmpeg)`."""
    return str(_chosen())


_LOCK = threading.Lock()


def _chosen() -> _Choice:
    # sample-data's thread pool asks from many threads at once: resolve, and log, once per process.
    with _LOCK:
        return _resolve()


@functools.cache
def _resolve() -> _Choice:
    """Choose the binary and log the choice (once per process: the cache holds it)."""
    override = os.environ.get(ENV)
    if override:
        path, origin = _override_path(override), ENV
    else:
        path, why_not = _imageio_binary()
        origin = "imageio-ffmpeg"
        if path is None:
            path, origin = _checked_system_binary(why_not), "PATH, checked"
    choice = _Choice(path, _version(path), origin)
    log.info("ffmpeg: %s", choice)
    return choice


def _override_path(value: str) -> str:
    """The binary `DATAPREP_FFMPEG` names (a path or a name on PATH); it must exist and be executable."""
    found = shutil.which(value)
    if found:
        return found
    unset = f"or unset `{ENV}` to use imageio-ffmpeg's binary"
    if os.path.isfile(value):
        raise FFmpegNotFoundError(f"`{ENV}` names {value!r}, which is not executable; fix: `chmod +x {value}`, "
                                  f"set it to another ffmpeg binary, {unset}")
    raise FFmpegNotFoundError(f"`{ENV}` names {value!r}, which does not exist; fix: set it to the path of an "
                              f"ffmpeg binary, {unset}")


def _imageio_binary() -> tuple[str | None, str]:
    """The binary inside the imageio-ffmpeg package, or None and why there is none."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None, "imageio-ffmpeg is not installed"
    try:
        picked = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        return None, "imageio-ffmpeg found no binary"
    # Without a binary of its own, imageio-ffmpeg falls back to IMAGEIO_FFMPEG_EXE, conda's or PATH's ffmpeg:
    # none of these is the known build.
    package = Path(imageio_ffmpeg.__file__).resolve().parent
    if Path(picked).resolve().is_relative_to(package):
        return picked, ""
    return None, f"imageio-ffmpeg has no binary of its own (it offered {picked})"


def _checked_system_binary(why_not_bundled: str) -> str:
    """PATH's ffmpeg, if it has everything in NEEDED."""
    fix = (f"fix: `pip install --force-reinstall imageio-ffmpeg` (it ships a recent ffmpeg), or set `{ENV}` "
           "to an ffmpeg binary to use it unchecked")
    found = shutil.which("ffmpeg")
    if not found:
        raise FFmpegNotFoundError(f"no ffmpeg: {why_not_bundled} and none is on PATH; {fix}")
    missing = _missing(found)
    if missing:
        raise FFmpegNotFoundError(f"no usable ffmpeg: {why_not_bundled}, and {found} on PATH lacks "
                                  f"{', '.join(missing)}, which dataprep uses; {fix}")
    return found


def _missing(path: str) -> list[str]:
    """What of NEEDED the binary at `path` lacks, e.g. `filter zoneplate`; everything if it cannot be queried."""
    missing = []
    for kind, needed in NEEDED.items():
        try:
            listing = _query(path, *_LISTING[kind])
        except (OSError, subprocess.SubprocessError) as exc:
            return [f"a working `ffmpeg {' '.join(_LISTING[kind])}` ({type(exc).__name__}: {exc})"]
        have = _options(listing) if kind == "options" else _names(listing)
        missing += [f"{kind[:-1]} {name}" for name in sorted(needed - have)]
    return missing


def _query(path: str, *args: str) -> str:
    done = subprocess.run([path, "-hide_banner", *args], capture_output=True, text=True, timeout=_QUERY_TIMEOUT,
                          stdin=subprocess.DEVNULL, check=True)
    return done.stdout


def _names(listing: str) -> set[str]:
    """Names in `-filters`/`-encoders` output: the word after the flags column (` TS. zoneplate |->V ...`)."""
    return {words[1] for words in map(str.split, listing.splitlines()) if len(words) > 1}


def _options(listing: str) -> set[str]:
    """Option names in `-h long` output: `-display_rotation[:<stream_spec>] <angle>  set ...` gives display_rotation."""
    return {line.split()[0].split("[")[0][1:] for line in listing.splitlines() if line.startswith("-")}


def _version(path: str) -> str:
    """The version `path -version` reports (`ffmpeg version 5.1.6-0+deb12u1 ...`), or "unknown"."""
    try:
        first = _query(path, "-version").partition("\n")[0].split()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return first[2] if first[:2] == ["ffmpeg", "version"] and len(first) > 2 else "unknown"
