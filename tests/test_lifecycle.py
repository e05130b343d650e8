"""Model-ready workers: setup when an actor starts, teardown when it ends, fatal errors, autoscaling pools,
and a global stage that no row reaches."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataprep.config import parse_config
from dataprep.errors import ConfigError, FatalStageError
from dataprep.plan import build_plan
from dataprep.runner import run_plan
from dataprep.stage_task import StageTask
from tests.helpers import planned, read_ledger
from tests.lifecycle_stages import DeviceLost, Flaky, Timed


def _plan(sample_dir, out, stages):
    return build_plan(parse_config({"input": str(sample_dir), "output": str(out),
                                    "plugins": ["tests.lifecycle_stages", "tests.plugin_stages"], "stages": stages}))


def test_setup_runs_when_the_worker_starts_and_teardown_once_when_it_ends(tmp_path):
    task = StageTask(planned(Timed, setup_seconds=0.0, log_dir=str(tmp_path)), str(tmp_path))
    assert task.stage.started <= task.stage.ended  # setup ran in the constructor, before any batch
    task(pa.table({"key": ["a"], "source": ["/a"]}))
    task.close()
    task.close()
    assert len(list(tmp_path.glob("teardown-*"))) == 1


def test_fatal_exception_propagates_and_an_ordinary_one_rejects_the_row(tmp_path):
    batch = pa.table({"key": ["k1", "k2", "k3"], "source": ["/1", "/2", "/3"]})
    with pytest.raises(FatalStageError, match="DeviceLost: device lost at k3"):
        StageTask(planned(Flaky), str(tmp_path / "fatal"))(batch)
    assert read_ledger(tmp_path / "fatal") == []
    kept = StageTask(planned(Flaky, fatal=False), str(tmp_path / "plain"))(batch)
    assert kept.column("key").to_pylist() == ["k1", "k2"]
    (row,) = read_ledger(tmp_path / "plain")
    assert row["key"] == "k3" and row["reason"] == "error:ValueError: device lost at k3"


def test_fatal_by_dotted_name(tmp_path):
    class ByName(Flaky):
        name = "by_name"
        fatal = (f"{DeviceLost.__module__}.DeviceLost",)

    with pytest.raises(FatalStageError):
        StageTask(planned(ByName), str(tmp_path))(pa.table({"key": ["k3"], "source": ["/3"]}))


@pytest.mark.integration
def test_fatal_error_fails_the_job_and_a_rerun_resumes(ray_session, sample_dir, tmp_path):
    out, healed = tmp_path / "out", tmp_path / "device-back"
    inputs = (sample_dir / "manifest.jsonl").read_text().splitlines()
    stages = [{"stage": "ingest"}, {"stage": "flaky", "fatal_key_suffix": "a", "healed_when_exists": str(healed)}]
    with pytest.raises(FatalStageError, match="stage 'flaky' failed fatally: DeviceLost"):
        run_plan(_plan(sample_dir, out, stages), progress=False)
    assert not [r for r in read_ledger(out) if r["stage"] == "flaky"]  # no row was blamed for the device
    healed.touch()  # the device is back: the same job resumes and completes, every row exactly once
    run_plan(_plan(sample_dir, out, stages), progress=False)
    kept = pq.read_table(out / "manifest.parquet").column("key").to_pylist()
    rejected = pq.read_table(out / "rejects.parquet").column("key").to_pylist()
    assert len(kept) + len(rejected) == len(inputs) and not set(kept) & set(rejected)
    assert any(k.endswith("a") for k in kept)


@pytest.mark.integration
def test_autoscaling_actor_pool_with_setup_before_batches(ray_session, sample_dir, tmp_path):
    out = tmp_path / "out"
    run_plan(_plan(sample_dir, out, [{"stage": "ingest"},
                                     {"stage": "timed", "concurrency": [1, 2], "setup_seconds": 0.5}]),
             progress=False)
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert rows and all(r["setup_ended"] <= r["batch_started"] for r in rows)
    assert 1 <= len({r["worker_pid"] for r in rows}) <= 2
    # One setup per worker: every row of a worker saw the same setup.
    per_worker = {}
    for r in rows:
        per_worker.setdefault(r["worker_pid"], set()).add(r["setup_started"])
    assert all(len(v) == 1 for v in per_worker.values())


@pytest.mark.integration
def test_every_row_rejected_before_a_global_stage_finishes_normally(ray_session, sample_dir, tmp_path):
    out = tmp_path / "out"
    result = run_plan(_plan(sample_dir, out, [{"stage": "ingest"}, {"stage": "reject_all"},
                                              {"stage": "same_caption"}, {"stage": "probe"}]), progress=False)
    inputs = (sample_dir / "manifest.jsonl").read_text().splitlines()
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    assert len({r["key"] for r in rejects}) == len(rejects) == len(inputs)
    assert {r["reason"] for r in rejects} == {"all:rejected"}
    assert pq.read_table(out / "manifest.parquet").num_rows == 0
    assert result.summary["totals"] == {"kept": 0, "rejected": len(inputs), "shards": 0, "shard_bytes": 0}
    assert (out / "summary.json").exists()
    assert run_plan(_plan(sample_dir, out, [{"stage": "ingest"}, {"stage": "reject_all"},
                                            {"stage": "same_caption"}, {"stage": "probe"}]),
                    progress=False).new_rows == 0


def _config_problems(tmp_path, stages) -> str:
    with pytest.raises(ConfigError) as info:
        _plan(tmp_path, tmp_path / "out", stages)
    return str(info.value)


@pytest.mark.parametrize("option", [{"batch_size": 8}, {"concurrency": 2}, {"resources": {"cpus": 2}}])
def test_options_a_global_stage_cannot_honour_are_refused(tmp_path, option):
    message = _config_problems(tmp_path, [{"stage": "ingest"}, {"stage": "same_caption", **option}])
    assert "'same_caption'" in message and f"`{next(iter(option))}`" in message and "fix: remove" in message


def test_source_refuses_runner_options(tmp_path):
    message = _config_problems(tmp_path, [{"stage": "ingest", "concurrency": 4}])
    assert "'ingest'" in message and "`concurrency`" in message


def test_concurrency_range_needs_an_actor_stage(tmp_path):
    message = _config_problems(tmp_path, [{"stage": "ingest"}, {"stage": "flaky", "concurrency": [1, 3]}])
    assert "actor pool" in message and "concurrency: 3" in message
    for bad in ([3, 1], [0, 2], 0):
        message = _config_problems(tmp_path, [{"stage": "ingest"}, {"stage": "timed", "concurrency": bad}])
        assert "`concurrency`" in message or "concurrency" in message


def test_concurrency_range_accepted_for_an_actor_stage(tmp_path):
    plan = _plan(tmp_path, tmp_path / "out", [{"stage": "ingest"}, {"stage": "timed", "concurrency": [1, 3]}])
    assert plan.stages[0].concurrency == (1, 3)
