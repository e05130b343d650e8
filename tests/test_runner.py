"""Whole jobs on Ray: the quickstart's output, exactly-once accounting, idempotent reruns."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from dataprep.config import load_config
from dataprep.errors import ConfigError
from dataprep.plan import build_plan
from dataprep.runner import run_plan
from tests.helpers import write_config

pytestmark = pytest.mark.integration
QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def _digest_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def quickstart_output(ray_session, sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart") / "out"
    plan = build_plan(load_config(QUICKSTART, input=str(sample_dir), output=str(out)))
    result = run_plan(plan, progress=False)
    return out, result, plan


def test_every_input_once_in_shards_or_ledger(quickstart_output, sample_dir):
    out, result, _ = quickstart_output
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    inputs = [json.loads(line)["uri"] for line in (sample_dir / "manifest.jsonl").read_text().splitlines()]
    sources = [r["source"] for r in manifest] + [r["source"] for r in rejects]
    assert sorted(Path(s).name for s in sources) == sorted(inputs)
    assert len({r["key"] for r in manifest} | {r["key"] for r in rejects}) == len(inputs)
    assert result.summary["totals"]["kept"] == len(manifest) and result.new_rows == len(inputs)


def test_corrupt_files_are_rejected_with_error_reasons(quickstart_output):
    out, _, _ = quickstart_output
    rejects = {Path(r["source"]).name: r for r in pq.read_table(out / "rejects.parquet").to_pylist()}
    assert rejects["broken_truncated.mp4"]["reason"].startswith("error:InvalidDataError")
    assert rejects["broken_garbage.jpg"]["reason"].startswith("error:")
    assert rejects["too_short.mp4"]["reason"].startswith("size:min_seconds")
    assert rejects["img_small.jpg"]["stage"] == "size_filter"


def test_shards_read_back_and_match_manifest(quickstart_output):
    out, result, _ = quickstart_output
    shards = sorted((out / "shards").glob("*.tar"))
    assert len(shards) == result.summary["totals"]["shards"] >= 3
    samples = list(wds.WebDataset([str(s) for s in shards], shardshuffle=False))
    manifest = {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert sorted(s["__key__"] for s in samples) == sorted(manifest)
    for sample in samples:
        media = [ext for ext in ("mp4", "jpg", "png") if ext in sample]
        assert len(media) == 1 and len(sample[media[0]]) > 100
        meta = json.loads(sample["json"])
        assert meta["key"] == sample["__key__"] and sample["txt"].decode() == manifest[meta["key"]]["caption"]
        stats = json.loads((out / manifest[meta["key"]]["shard"].replace(".tar", ".stats.json")).read_text())
        assert sample["__key__"] in stats["keys"]
    for shard in shards:
        stats = json.loads(shard.with_name(shard.name.replace(".tar", ".stats.json")).read_text())
        assert stats["count"] <= 16


def test_funnel_adds_up(quickstart_output):
    _, result, _ = quickstart_output
    funnel = result.summary["funnel"]
    assert [f["stage"] for f in funnel] == ["ingest", "probe", "size_filter"]
    for before, after in zip(funnel, funnel[1:], strict=False):
        assert after["in"] == before["out"]
    for stage in funnel:
        assert stage["in"] == stage["out"] + stage["rejected"]
    assert funnel[-1]["out"] == result.summary["totals"]["kept"]


def test_rerun_does_no_work_and_changes_no_byte(quickstart_output):
    out, _, plan = quickstart_output
    before = _digest_tree(out)
    again = run_plan(plan, progress=False)
    assert again.new_rows == 0
    assert _digest_tree(out) == before


def test_other_config_into_same_output_is_refused(quickstart_output, sample_dir):
    out, _, _ = quickstart_output
    config = load_config(QUICKSTART, input=str(sample_dir), output=str(out))
    config.stages[2].options["min_side"] = 10
    with pytest.raises(ConfigError, match="different config"):
        run_plan(build_plan(config), progress=False)


def test_global_stage_segment_ledger_and_resume(ray_session, sample_dir, tmp_path):
    out = tmp_path / "out"
    config = write_config(tmp_path / "job.yaml", input=sample_dir, output=out, plugins=["tests.plugin_stages"],
                          stages=["ingest", "probe", "same_caption", "size_filter"])
    plan = build_plan(load_config(config))
    first = run_plan(plan, progress=False)
    manifest = {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    dups = [r for r in pq.read_table(out / "rejects.parquet").to_pylist() if r["stage"] == "same_caption"]
    assert {Path(r["source"]).stem for r in dups} == {"testsrc_landscape", "mandelbrot_zoom", "img_mandelbrot",
                                                      "img_testsrc"}
    for dup in dups:
        assert dup["reason"] == "duplicate" and manifest[dup["duplicate_of"]]["source"] != dup["source"]
    assert (out / "_work" / "segment-002" / "_SUCCESS").exists()
    funnel = {f["stage"]: f for f in first.summary["funnel"]}
    assert funnel["same_caption"]["reasons"] == {"duplicate": 4}
    before = _digest_tree(out)
    assert run_plan(plan, progress=False).new_rows == 0
    assert _digest_tree(out) == before


def test_stage_with_setup_runs_on_an_actor_pool(ray_session, sample_dir, tmp_path):
    out = tmp_path / "out"
    config = tmp_path / "job.yaml"
    config.write_text(f"""
input: {sample_dir}
output: {out}
plugins: [tests.plugin_stages]
stages:
  - stage: ingest
  - stage: setup_once
    concurrency: 2
    batch_size: 3
""")
    run_plan(build_plan(load_config(config)), progress=False)
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert len(manifest) == len((sample_dir / "manifest.jsonl").read_text().splitlines())
    assert {r["setup_calls"] for r in manifest} == {1}
    assert max(r["batches_seen"] for r in manifest) > 1  # state outlives a batch: an actor, not a task
    assert 1 <= len({r["worker_pid"] for r in manifest}) <= 2


def test_output_inside_input_is_not_read_back(ray_session, sample_dir, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(sample_dir, data)
    out = data / "out"
    plan = build_plan(load_config(QUICKSTART, input=str(data), output=str(out)))
    first = run_plan(plan, progress=False)
    again = run_plan(plan, progress=False)
    assert again.new_rows == 0
    sources = [r["source"] for r in pq.read_table(out / "rejects.parquet").to_pylist()]
    assert not [s for s in sources if "/out/" in s]
    assert first.summary["totals"] == again.summary["totals"]


def test_small_input_is_cut_so_every_cpu_gets_work(sample_dir, tmp_path):
    """No stage's batch outgrows a block: Ray fuses stages and bundles rows by their largest batch_size."""
    from dataprep import runner

    class Recorder:
        def __init__(self) -> None:
            self.batch_sizes: list[int] = []

        def map_batches(self, fn, **kwargs):
            self.batch_sizes.append(kwargs["batch_size"])
            return self

    plan = build_plan(load_config(QUICKSTART, input=str(sample_dir), output=str(tmp_path / "out")))
    cpus, rows = 2, 49
    block = runner._block_rows(rows, cpus)
    blocks = runner._blocks(pa.table({"key": [str(i) for i in range(rows)]}), block)
    ds = Recorder()
    runner._pipeline(ds, plan, str(tmp_path / "out"), "token", None, cpus, max_batch=block, tally=None)
    assert len(blocks) >= 2 * cpus
    assert max(plan.stages, key=lambda p: p.batch_size).batch_size > block  # size_filter asks for 256
    assert ds.batch_sizes and max(ds.batch_sizes) <= block
