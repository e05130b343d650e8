"""The command line as a user meets it (`python -m dataprep`): help, validate, stages, stats, inspect, sample-data."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "dataprep"]


def _run(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=REPO, **kw)


def test_help_imports_no_heavy_module():
    code = ("import sys; from dataprep import cli; cli.build_parser().format_help(); "
            "heavy = {'ray', 'pyarrow', 'torch', 'numpy', 'pydantic', 'cv2', 'av', 'transformers'}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert _run("--help").returncode == 0


def test_python_m_dataprep_is_the_command():
    result = _run("--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: dataprep") and "inspect" in result.stdout


def test_validate_reports_problems_with_exit_code_2(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(f"input: {tmp_path}\noutput: {tmp_path}/o\nstages:\n  - stage: ingest\n  - stage: size_filtr\n")
    result = _run("validate", str(config))
    assert result.returncode == 2
    assert "unknown stage 'size_filtr'" in result.stderr and "did you mean 'size_filter'" in result.stderr


def test_validate_ok_lists_the_plan(tmp_path):
    result = _run("validate", "configs/quickstart.yaml", "--input", str(tmp_path))
    assert result.returncode == 0 and "size_filter" in result.stdout and "reads width" in result.stdout


def test_stages_json_and_markdown():
    rows = json.loads(_run("stages", "--json").stdout)
    by_name = {r["name"]: r for r in rows}
    assert {"ingest", "probe", "size_filter"} <= set(by_name)
    size = {o["name"]: o for o in by_name["size_filter"]["options"]}
    assert size["min_side"]["default"] == "64" and "px" in size["min_side"]["description"]
    markdown = _run("stages", "--markdown").stdout
    assert "### `size_filter` (filter)" in markdown and "| `min_side` |" in markdown


def test_stats_and_inspect_on_a_finished_job(ray_session, sample_dir, tmp_path):
    from dataprep.config import load_config
    from dataprep.plan import build_plan
    from dataprep.runner import run_plan
    from dataprep.shard_view import shard_listing

    out = tmp_path / "out"
    # The quickstart's stages plus thumbnails, so that --extract has every kind of member to write.
    config = tmp_path / "job.yaml"
    config.write_text((REPO / "configs/quickstart.yaml").read_text().replace(
        "sink:", "  - stage: frame_sample\n    num_frames: 2\nsink:", 1))
    run_plan(build_plan(load_config(config, input=str(sample_dir), output=str(out))), progress=False)
    stats = json.loads(_run("stats", str(out), "--json").stdout)
    assert stats["totals"]["kept"] > 0
    table = _run("stats", str(out)).stdout
    assert "funnel" in table and "size_filter" in table
    shard = sorted((out / "shards").glob("*.tar"))[0]
    listing = _run("inspect", str(shard)).stdout
    key = listing.splitlines()[1].split(":")[0].strip()
    sample = json.loads(_run("inspect", str(shard), key).stdout)
    assert sample["key"] == key and sample["metadata"]["key"] == key and "json" in sample["files"]
    missing = _run("inspect", str(shard), "no-such-key")
    assert missing.returncode == 2 and "no sample with key 'no-such-key'" in missing.stderr
    assert _run("stats", str(tmp_path / "nothing")).returncode == 2

    shard, video = next((tar, s) for tar in sorted((out / "shards").rglob("*.tar"))
                        for s in shard_listing(str(tar)) if "mp4" in s["files"])
    key = video["key"]
    assert {"mp4", "json", "frames.0.jpg", "frames.1.jpg"} <= set(video["files"])
    extracted = tmp_path / "extracted"
    result = _run("inspect", str(shard), key, "--extract", str(extracted))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in extracted.iterdir()) == sorted(f"{key}.{member}" for member in video["files"])
    assert json.loads((extracted / f"{key}.json").read_text())["key"] == key
    assert (extracted / f"{key}.frames.0.jpg").read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    assert (extracted / f"{key}.mp4").read_bytes()[4:8] == b"ftyp"  # an MP4 container
    whole = tmp_path / "whole"
    assert _run("inspect", str(shard), "--extract", str(whole)).returncode == 0
    assert {p.name.split(".")[0] for p in whole.iterdir()} == {s["key"] for s in shard_listing(str(shard))}


@pytest.mark.slow
def test_sample_data_is_reproducible_and_complete(tmp_path):
    digests = []
    for name in ("a", "b"):
        assert _run("sample-data", str(tmp_path / name)).returncode == 0
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / name).iterdir()})
    assert digests[0] == digests[1]
    names = list(digests[0])
    assert sum(n.endswith(".mp4") for n in names) >= 20
    assert sum(n.endswith((".jpg", ".png")) for n in names) >= 20
    assert {"broken_truncated.mp4", "broken_garbage.jpg", "manifest.jsonl"} <= set(names)
    assert any(n.startswith("dup_") and n.endswith(".mp4") for n in names)


def test_unwritable_output_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _run("run", "configs/quickstart.yaml", "--input", str(tmp_path), "--output", str(blocker / "out"))
    assert result.returncode == 2 and "cannot be written" in result.stderr
