"""On a cluster, a local output path that a node does not see fails before any work, naming the node."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


@pytest.fixture(scope="module")
def blind_cluster(tmp_path_factory):
    """A `ray start --head` whose processes see an empty tmpfs at `hidden/`: a node without the driver's disk.

    The head runs in its own mount namespace (unshare -m), on the same loopback network as the test.
    Yields (gcs address, env, the hidden folder).
    """
    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable))
    if ray_bin is None or shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs the `ray` command, unshare(1) and root to give the head its own mount namespace")
    hidden = tmp_path_factory.mktemp("hidden")
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               PYTHONPATH=str(REPO), PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    port = free_port()
    ports = " ".join(f"--{name}={free_port()}" for name in (
        "dashboard-port", "dashboard-agent-listen-port", "metrics-export-port", "runtime-env-agent-port",
        "dashboard-agent-grpc-port"))
    temp_dir = tmp_path_factory.mktemp("ray")
    script = (f"mount -t tmpfs none {hidden} && exec {ray_bin} start --head --block --port={port} --num-cpus=2 "
              f"--dashboard-host=127.0.0.1 --disable-usage-stats --temp-dir={temp_dir} {ports}")
    log = open(temp_dir / "head.log", "wb")  # noqa: SIM115 - closed at teardown
    head = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    gcs = f"127.0.0.1:{port}"
    probe = f"import ray; ray.init(address={gcs!r}, logging_level='ERROR'); print(len(ray.nodes()))"
    deadline = time.monotonic() + 120
    while subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, timeout=120).returncode:
        if time.monotonic() > deadline or head.poll() is not None:
            if head.poll() is None:
                os.killpg(head.pid, signal.SIGKILL)
            pytest.fail(f"the head did not come up: {(temp_dir / 'head.log').read_text()[-2000:]}")
        time.sleep(2)
    yield gcs, env, hidden
    # SIGKILL to the head's whole group: SIGTERM has `ray start --block` drain each process for ~30 s, and nothing
    # of this test cluster needs to end cleanly.
    os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=60)
    log.close()


def _run(gcs: str, env: dict, sample_dir: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataprep.cli", "run", str(QUICKSTART), "--input", str(sample_dir),
                           "--output", str(out), "--address", gcs, "-q"], env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_local_output_the_cluster_cannot_see_fails_before_work(blind_cluster, sample_dir):
    gcs, env, hidden = blind_cluster
    out = hidden / "out"
    run = _run(gcs, env, sample_dir, out)
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"`output` '{out}' is a local path that Ray node 127.0.0.1 does not see" in run.stderr
    assert "s3://" in run.stderr and "Traceback" not in run.stderr
    assert not (out / "shards").exists() and not (out / "manifest.parquet").exists()


def test_an_output_the_cluster_sees_runs(blind_cluster, sample_dir, tmp_path):
    gcs, env, _ = blind_cluster
    run = _run(gcs, env, sample_dir, tmp_path / "seen")
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "seen" / "manifest.parquet").exists()
