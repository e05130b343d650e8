"""A dedup stage over a small segment runs as one task, with the result it has over the cluster."""

from __future__ import annotations

import logging

import pyarrow.parquet as pq
import pytest

from dataprep.config import load_config
from dataprep.plan import build_plan
from dataprep.runner import run_plan

pytestmark = pytest.mark.integration


def _run(tmp_path, sample_dir, name: str, small_global_mb: float) -> tuple[list, list]:
    out = tmp_path / name
    config = tmp_path / f"{name}.yaml"
    config.write_text(f"""
input: {sample_dir}
output: {out}
stages:
  - stage: ingest
  - stage: minhash_dedup
    mode: text
    keep: key
ray: {{small_global_mb: {small_global_mb}}}
""")
    run_plan(build_plan(load_config(config)), progress=False)
    kept = sorted(pq.read_table(out / "manifest.parquet", columns=["key"]).column("key").to_pylist())
    rejects = pq.read_table(out / "rejects.parquet", columns=["key", "reason", "duplicate_of"])
    return kept, sorted(rejects.to_pylist(), key=lambda r: r["key"])


class _Messages(logging.Handler):
    """The messages of one logger (Ray Data's logging setup replaces the root's handlers, caplog's with them)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def global_run_log():
    logger, handler = logging.getLogger("dataprep.global_run"), _Messages()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_small_segment_runs_as_one_task_with_the_clusters_result(ray_session, sample_dir, tmp_path, global_run_log):
    one_task = _run(tmp_path, sample_dir, "one_task", 64)
    assert [m for m in global_run_log if "run as one task" in m]
    global_run_log.clear()
    cluster = _run(tmp_path, sample_dir, "cluster", 0)
    assert not [m for m in global_run_log if "run as one task" in m]
    kept, rejects = one_task
    assert [r for r in rejects if r["reason"].startswith("duplicate")], "the sample set's caption copies"
    assert one_task == cluster


def test_a_stage_error_in_the_one_task_stops_the_run_with_its_message(ray_session, sample_dir, tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text(f"""
input: {sample_dir}
output: {tmp_path / "out"}
plugins: [tests.plugin_stages]
stages:
  - stage: ingest
  - stage: broken_global
""")
    with pytest.raises(ValueError, match="broken_global fails on purpose; fix: leave it out"):
        run_plan(build_plan(load_config(config)), progress=False)
