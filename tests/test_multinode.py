"""The t2v-shaped job submitted to a real two-node Ray cluster (`tests.cluster_nodes`), and the faults of a
cluster: a worker killed, the job stopped, the second node lost.

    .venv/bin/python -m pytest tests/test_multinode.py -q

Each fault ends with the exactly-once check of the kill tests against one uninterrupted run on the same
cluster. One cluster and one reference run serve the whole module; the node-loss test runs last.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.cluster_nodes import TwoNodeCluster, ray_command
from tests.kill import wait_until
from tests.test_resume_kill_t2v import SHAPE, Output, _check_exactly_once, _config, _manifest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLI = [sys.executable, "-m", "dataprep.cli"]
ENDED = ("SUCCEEDED", "FAILED", "STOPPED")
# A job of this size takes 20-60 s; one that has not ended by then hangs.
JOB_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and a second node, one CPU each: the job's stages cannot all fit on one node."""
    if ray_command() is None:
        pytest.skip("the `ray` command is not installed beside this Python")
    with TwoNodeCluster(tmp_path_factory.mktemp("cluster"), head_cpus=1, worker_cpus=1) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sample_dir) -> Path:
    """The videos of the kill test (cuts, duplicates, a portrait, a too-short and a broken one)."""
    return _manifest(sample_dir, tmp_path_factory.mktemp("inputs"))


def _job_config(folder: Path, inputs: Path) -> Path:
    """The t2v config cut to the kill test's stages that shape a job (`SHAPE`), into `folder/out`."""
    # SHAPE, not the filters too: what is tested here is the cluster's faults, not each filter's resume.
    return _config(folder, str(inputs), str(folder / "out"), stages=SHAPE)


class Job:
    """A job sent with `dataprep submit`; `poll()` is None while it runs, as for a process (`tests.kill`)."""

    def __init__(self, cluster: TwoNodeCluster, config: Path) -> None:
        self.cluster, self.config = cluster, config
        submitted = subprocess.run([*CLI, "submit", str(config), "--address", cluster.dashboard], env=cluster.env,
                                   capture_output=True, text=True, timeout=300)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        self.id = submitted.stdout.split()[0]
        self._state, self._asked = "PENDING", 0.0

    def info(self) -> dict[str, Any]:
        """The Jobs API's record of this job (its state, its Ray job id, its driver)."""
        request = urllib.request.Request(f"{self.cluster.dashboard}/api/jobs/{self.id}",
                                         headers={"Authorization": f"Bearer {self.cluster.env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def poll(self) -> int | None:
        """None while the job runs, else 0 if it succeeded and 1 if not."""
        # wait_until asks every 10 ms; the Jobs API is asked twice a second at most.
        if self._state not in ENDED and time.monotonic() - self._asked > 0.5:
            self._state, self._asked = self.info()["status"], time.monotonic()
        return None if self._state not in ENDED else int(self._state != "SUCCEEDED")

    def wait(self) -> str:
        """Block until the job ends; its state as `dataprep status` tells it."""
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while self.poll() is None:
            assert time.monotonic() < deadline, f"job {self.id} did not end within {JOB_TIMEOUT_S} s"
            time.sleep(0.5)
        return self.cli("status")

    def cli(self, command: str) -> str:
        """`dataprep status|logs|stop JOB` against the cluster; its stdout."""
        result = subprocess.run([*CLI, command, self.id, "--address", self.cluster.dashboard], env=self.cluster.env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout.strip()

    def stage_tasks(self, **equal: str) -> list[dict[str, Any]]:
        """Every attempt of every task of this job that ran its stages (Ray Data's `MapBatches` operators),
        from Ray's state API; `equal` narrows them down (state="RUNNING", node_id=...)."""
        return [t for t in self.cluster.state("tasks", job_id=self.info()["job_id"], **equal)
                if "MapBatches(" in (t.get("name") or "")]

    def stage_actors(self) -> list[dict[str, Any]]:
        """The alive actors of this job's actor-pool stages (Ray Data's `MapWorker(MapBatches(...))`)."""
        return [a for a in self.cluster.state("actors", job_id=self.info()["job_id"], state="ALIVE")
                if "MapBatches(" in (a.get("class_name") or "")]


def _mid_job(out: Path, found: list, find: Any = lambda: [True]) -> Any:
    """A condition: some rows are committed (a ledger or lineage part), none is in a shard yet, and `find()`
    finds something (asked twice a second at most), which it leaves in `found`."""
    asked = [0.0]

    def condition() -> bool:
        work = out / "_work"
        committed = any((work / d).is_dir() and any((work / d).iterdir()) for d in ("rejects", "lineage"))
        if not committed or (out / "shards").is_dir() or time.monotonic() - asked[0] < 0.5:
            return False
        asked[0] = time.monotonic()
        found[:] = find()
        return bool(found)

    return condition


@pytest.fixture(scope="module")
def reference(cluster, inputs, tmp_path_factory) -> tuple[Output, Job]:
    """One uninterrupted run of the job on the cluster: what every faulted run must end up equal to."""
    folder = tmp_path_factory.mktemp("reference")
    job = Job(cluster, _job_config(folder, inputs))
    assert job.wait() == "SUCCEEDED", job.cli("logs")[-3000:]
    return Output(str(folder / "out"), cluster.env), job


def test_submitted_job_runs_on_both_nodes(cluster, reference):
    output, job = reference
    _check_exactly_once(output, output)  # whole shards, one record per key, no orphans
    nodes = {t["node_id"] for t in job.stage_tasks() if t.get("node_id")}
    assert len(nodes) == 2 and cluster.node_id("head") in nodes, f"the stages ran on {len(nodes)} node(s)"
    # The run's own actors (shard numbers, progress) live beside the driver, on the head: a lost worker node
    # must not take them down with it.
    own = {a["class_name"].rsplit(".", 1)[-1]: a for a in cluster.state("actors", job_id=job.info()["job_id"])
           if (a.get("class_name") or "").rsplit(".", 1)[-1] in ("ShardCounter", "Tally")}.values()
    assert sorted(a["class_name"].rsplit(".", 1)[-1] for a in own) == ["ShardCounter", "Tally"], \
        [a.get("class_name") for a in cluster.state("actors", job_id=job.info()["job_id"])]
    assert {a.get("node_id") for a in own} == {cluster.node_id("head")}, own
    last = json.loads([line for line in job.cli("logs").splitlines() if line.startswith("{")][-1])
    assert last["totals"]["kept"] > 0 and last["output"] == output.root


def test_worker_killed_mid_job_completes(cluster, reference, inputs, tmp_path):
    job = Job(cluster, _job_config(tmp_path, inputs))
    pids = lambda: {p.pid: p for p, _ in cluster.workers()}  # noqa: E731 - the processes of this cluster only
    found: list = []
    # The victim: the worker process of a stage's actor (the video stages run in one), busy with batches.
    assert wait_until(job, _mid_job(tmp_path / "out", found, lambda: [
        (p, a) for a in job.stage_actors() if (p := pids().get(a.get("pid")))]), timeout=JOB_TIMEOUT_S), \
        "the job ended first"
    victim, actor = found[0]
    victim.kill()
    assert job.wait() == "SUCCEEDED", job.cli("logs")[-3000:]
    (after,) = cluster.state("actors", detail=True, actor_id=actor["actor_id"])
    assert int(after["num_restarts"]) >= 1, after  # Ray started the actor anew, and the job went on with it
    _check_exactly_once(Output(str(tmp_path / "out"), cluster.env), reference[0])


def test_stopped_job_resubmitted_completes(cluster, reference, inputs, tmp_path):
    config = _job_config(tmp_path, inputs)
    job = Job(cluster, config)
    assert wait_until(job, _mid_job(tmp_path / "out", []), timeout=JOB_TIMEOUT_S), "the job ended first"
    assert job.cli("stop") == "stopped"
    assert job.wait() == "STOPPED"
    assert not (tmp_path / "out" / "manifest.parquet").exists()
    again = Job(cluster, config)
    assert again.wait() == "SUCCEEDED", again.cli("logs")[-3000:]
    _check_exactly_once(Output(str(tmp_path / "out"), cluster.env), reference[0])


def test_second_node_lost_mid_job(cluster, reference, inputs, tmp_path):
    """Last in this module: it kills the second node, and starts it again for whatever runs after."""
    config = _job_config(tmp_path, inputs)
    job = Job(cluster, config)
    second = cluster.node_id("worker")
    try:
        # Lost while it runs the job's stages: its raylet, its workers and the blocks in its object store.
        assert wait_until(job, _mid_job(tmp_path / "out", [], lambda: job.stage_tasks(state="RUNNING", node_id=second)),
                          timeout=JOB_TIMEOUT_S), "the job ended first"
        cluster.kill_worker()
        state = job.wait()
        if state != "SUCCEEDED":  # a clean failure is allowed; then a resubmission must finish on the head alone
            assert state == "FAILED", state
            again = Job(cluster, config)
            assert again.wait() == "SUCCEEDED", again.cli("logs")[-3000:]
        assert [n for n in cluster.state("nodes", node_id=second) if n["state"] == "DEAD"], "Ray never lost the node"
        _check_exactly_once(Output(str(tmp_path / "out"), cluster.env), reference[0])
    finally:
        if cluster.worker is None:
            cluster.start_worker()
