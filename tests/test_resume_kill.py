"""Exactly once under SIGKILL: kill real runs at several moments, rerun, and account for every key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from tests.helpers import write_config
from tests.kill import kill_session, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]



def _config(tmp_path: Path, sample_dir: Path, out: Path) -> Path:
    return write_config(tmp_path / f"{out.name}.yaml", input=sample_dir, output=out, plugins=["tests.plugin_stages"],
                        stages=["ingest", "probe", "sleepy", "size_filter"], sink="{max_samples: 2}")


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env


def _start(config: Path, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dataprep.cli", "run", str(config), "-q"], env=_env(tmp_path),
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _count(folder: Path, pattern: str) -> int:
    return len(list(folder.glob(pattern))) if folder.exists() else 0


def test_killed_runs_resume_to_exactly_once(tmp_path, sample_dir, ray_session):
    from dataprep.config import load_config
    from dataprep.plan import build_plan
    from dataprep.runner import run_plan

    reference_out = tmp_path / "reference"
    reference = run_plan(build_plan(load_config(_config(tmp_path, sample_dir, reference_out))), progress=False)
    expected_kept = set(pq.read_table(reference_out / "manifest.parquet").column("key").to_pylist())

    out = tmp_path / "killed"
    config = _config(tmp_path, sample_dir, out)
    shards, ledger = out / "shards", out / "_work" / "rejects"
    moments = [
        ("before Ray starts work", lambda base: (out / "_work" / "owner").exists(), True),
        ("after the first rejection", lambda base: _count(ledger, "*.parquet") > base[1], True),
        ("after one new shard", lambda base: _count(shards, "*.stats.json") > base[0], False),
        ("mid-shard, three more shards", lambda base: _count(shards, "*.stats.json") >= base[0] + 3, True),
        ("right after the next commit", lambda base: _count(shards, "*.stats.json") > base[0], True),
    ]
    killed = []
    for label, condition, whole in moments:
        base = (_count(shards, "*.stats.json"), _count(ledger, "*.parquet"))
        proc = _start(config, tmp_path)
        if wait_until(proc, lambda c=condition, b=base: c(b)):
            kill_session(proc, whole_session=whole)
            killed.append(label)
        else:
            assert proc.returncode == 0
    assert len(killed) >= 4, f"only killed at {killed}"

    final = _start(config, tmp_path)
    assert final.wait(timeout=300) == 0

    manifest = pq.read_table(out / "manifest.parquet").column("key").to_pylist()
    rejects = pq.read_table(out / "rejects.parquet").column("key").to_pylist()
    assert set(manifest) == expected_kept
    assert len(manifest) == len(set(manifest)) and not set(manifest) & set(rejects)
    assert len(manifest) + len(rejects) == reference.new_rows
    in_shards = []
    for stats_file in sorted(shards.glob("*.stats.json")):
        stats = json.loads(stats_file.read_text())
        tar = stats_file.with_name(stats_file.name.replace(".stats.json", ".tar"))
        keys = [s["__key__"] for s in wds.WebDataset(str(tar), shardshuffle=False)]
        assert keys == stats["keys"]
        in_shards += keys
    assert sorted(in_shards) == sorted(manifest)
    assert not list(out.rglob("*.partial")) and not list(out.rglob("*.tmp-*"))
    assert {p.name for p in shards.glob("*.tar")} == {p.name.replace(".stats.json", ".tar") for p in shards.glob("*.stats.json")}
