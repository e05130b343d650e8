"""Which ffmpeg runs: imageio-ffmpeg's over an old one on PATH, `DATAPREP_FFMPEG` over both, a checked PATH one last."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataprep import ffmpeg
from dataprep.ffmpeg import NEEDED, FFmpegNotFoundError, ffmpeg_description, ffmpeg_exe

CLI = [sys.executable, "-m", "dataprep.cli"]
OLD_VERSION = "4.4.2-0ubuntu0.22.04.1"


@pytest.fixture(autouse=True)
def fresh_choice(monkeypatch: pytest.MonkeyPatch):
    """Each test resolves anew, and leaves no fake binary cached for the tests after it."""
    monkeypatch.delenv(ffmpeg.ENV, raising=False)
    ffmpeg._resolve.cache_clear()
    yield
    ffmpeg._resolve.cache_clear()


@pytest.fixture
def old_ffmpeg(tmp_path: Path) -> Path:
    """An `ffmpeg` that acts as Ubuntu 22.04's 4.4: all that dataprep uses but the zoneplate source and
    `-display_rotation`, and every real command fails."""
    folder = tmp_path / "old-bin"
    folder.mkdir()
    # The listings in ffmpeg's own layout: a flags column, then the name.
    (folder / "filters.txt").write_text("Filters:\n ------\n" + "".join(
        f" ..S {name:<16} V->V       imitated\n" for name in sorted(NEEDED["filters"] - {"zoneplate"})))
    (folder / "encoders.txt").write_text("Encoders:\n ------\n" + "".join(
        f" V....D {name:<20} imitated\n" for name in sorted(NEEDED["encoders"])))
    (folder / "options.txt").write_text("".join(
        f"-{name}  imitated\n" for name in sorted(NEEDED["options"] - {"display_rotation"})))
    exe = folder / "ffmpeg"
    exe.write_text(f"""#!/bin/sh
case " $* " in
  *" -version "*) echo "ffmpeg version {OLD_VERSION} Copyright (c) 2000-2021 the FFmpeg developers" ;;
  *" -filters "*) cat {folder}/filters.txt ;;
  *" -encoders "*) cat {folder}/encoders.txt ;;
  *" -h long "*) cat {folder}/options.txt ;;
  *) echo "No such filter: 'zoneplate' (imitated ffmpeg 4.4)" >&2; exit 1 ;;
esac
""")
    exe.chmod(0o755)
    return exe


@pytest.fixture
def bundled() -> str:
    """imageio-ffmpeg's own binary."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _first_on_path(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Put `folder` first on PATH, for this process and the commands it starts."""
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_old_ffmpeg_first_on_path_is_not_picked(old_ffmpeg: Path, bundled: str, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    _first_on_path(monkeypatch, old_ffmpeg.parent)
    caplog.set_level(logging.INFO, logger="dataprep.ffmpeg")
    assert ffmpeg_exe() == bundled
    assert ffmpeg_exe() == bundled
    assert ffmpeg_description().startswith(f"{bundled} (version ") and ffmpeg_description().endswith(
        ", from imageio-ffmpeg)")
    assert [r.getMessage() for r in caplog.records] == [f"ffmpeg: {ffmpeg_description()}"]  # once per process


@pytest.mark.slow
def test_sample_data_runs_with_old_ffmpeg_first_on_path(old_ffmpeg: Path, bundled: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _first_on_path(monkeypatch, old_ffmpeg.parent)
    done = subprocess.run([*CLI, "sample-data", str(tmp_path / "sample")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"ffmpeg: {bundled} (version " in done.stderr
    assert (tmp_path / "sample" / "manifest.jsonl").exists()


def test_override_wins_even_when_old(old_ffmpeg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ffmpeg.ENV, str(old_ffmpeg))
    assert ffmpeg_exe() == str(old_ffmpeg)
    assert ffmpeg_description() == f"{old_ffmpeg} (version {OLD_VERSION}, from DATAPREP_FFMPEG)"
    # and it is what runs: the sample set then fails the way an old ffmpeg makes it fail
    done = subprocess.run([*CLI, "sample-data", str(tmp_path / "sample")], capture_output=True, text=True)
    assert done.returncode != 0
    assert f"ffmpeg: {old_ffmpeg} (version {OLD_VERSION}, from DATAPREP_FFMPEG)" in done.stderr
    assert "No such filter: 'zoneplate'" in done.stderr


@pytest.mark.parametrize("problem", ["does not exist", "is not executable"])
def test_unusable_override_is_a_clear_error(problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    value = tmp_path / "ffmpeg"
    if problem == "is not executable":
        value.write_text("#!/bin/sh\n")
    monkeypatch.setenv(ffmpeg.ENV, str(value))
    with pytest.raises(FFmpegNotFoundError) as raised:
        ffmpeg_exe()
    message = str(raised.value)
    assert f"`DATAPREP_FFMPEG` names {str(value)!r}, which {problem}; fix: " in message
    assert "unset `DATAPREP_FFMPEG`" in message
    # The CLI says it in one line, before writing anything.
    done = subprocess.run([*CLI, "sample-data", str(tmp_path / "sample")], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"`DATAPREP_FFMPEG` names {str(value)!r}, which {problem}" in done.stderr
    assert not (tmp_path / "sample").exists()


def test_without_imageio_binary_path_ffmpeg_must_pass_the_check(old_ffmpeg: Path, bundled: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # `import imageio_ffmpeg` now fails
    _first_on_path(monkeypatch, old_ffmpeg.parent)
    with pytest.raises(FFmpegNotFoundError) as raised:
        ffmpeg_exe()
    assert (f"imageio-ffmpeg is not installed, and {old_ffmpeg} on PATH lacks filter zoneplate, "
            "option display_rotation, which dataprep uses; fix: ") in str(raised.value)

    # A recent build on PATH passes: the real binary, under the name a system install gives it.
    recent = tmp_path / "recent-bin"
    recent.mkdir()
    (recent / "ffmpeg").symlink_to(bundled)
    _first_on_path(monkeypatch, recent)
    ffmpeg._resolve.cache_clear()
    assert ffmpeg_exe() == str(recent / "ffmpeg")
    assert ffmpeg_description().endswith(", from PATH, checked)")
