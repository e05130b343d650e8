"""A real Ray cluster started with `ray start --head` (token auth, loopback): --address and the Jobs API."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A head node on loopback with token authentication; yields (gcs address, dashboard URL, env)."""
    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable))
    if ray_bin is None:
        pytest.skip("the `ray` command is not installed beside this Python")
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               PYTHONPATH=str(REPO), PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    port, dashboard = free_port(), free_port()
    temp_dir = tmp_path_factory.mktemp("ray")
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", "--disable-usage-stats", f"--temp-dir={temp_dir}",
         # Explicit free ports: the defaults clash with any other Ray on this machine (the test session's own).
         f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
         f"--runtime-env-agent-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        probe = subprocess.run([sys.executable, "-m", "dataprep.cli", "status", "raysubmit_none", "--address", url],
                               env=env, capture_output=True, text=True)
        if "does not exist" in probe.stderr + probe.stdout or probe.returncode == 0:
            break
        time.sleep(2)
    else:
        os.killpg(head.pid, signal.SIGKILL)
        pytest.fail("the Ray head did not come up within 120 s")
    yield f"127.0.0.1:{port}", url, env
    # SIGKILL to the head's whole group: SIGTERM has `ray start --block` drain each process for ~30 s, and nothing
    # of this test cluster needs to end cleanly.
    os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=60)


def _probe_tasks(url: str, token: str) -> int:
    """How many tasks running the probe stage the cluster at `url` has seen (Ray's state API)."""
    import urllib.request

    request = urllib.request.Request(f"{url}/api/v0/tasks?limit=10000", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        tasks = json.loads(response.read())["data"]["result"]["result"]
    return sum("probe" in (t.get("name") or "") for t in tasks)


def test_run_with_address_uses_the_cluster(ray_cluster, sample_dir, tmp_path):
    gcs, url, env = ray_cluster
    out = tmp_path / "out"
    before = _probe_tasks(url, env["RAY_AUTH_TOKEN"])
    subprocess.run([sys.executable, "-m", "dataprep.cli", "run", str(QUICKSTART), "--input", str(sample_dir),
                    "--output", str(out), "--address", gcs, "-q"], env=env, check=True, timeout=300)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"]["kept"] + summary["totals"]["rejected"] == len(
        (sample_dir / "manifest.jsonl").read_text().splitlines())
    # The stage's tasks ran on the cluster at `--address`, not on an embedded Ray of the driver's own.
    assert _probe_tasks(url, env["RAY_AUTH_TOKEN"]) > before


def test_submit_status_logs(ray_cluster, sample_dir, tmp_path):
    _, url, env = ray_cluster
    out = tmp_path / "submitted"
    cli = [sys.executable, "-m", "dataprep.cli"]
    submitted = subprocess.run([*cli, "submit", str(QUICKSTART), "--input", str(sample_dir), "--output", str(out),
                                "--address", url, "--wait"], env=env, capture_output=True, text=True, timeout=600)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = submitted.stdout.splitlines()[0].strip()
    assert submitted.stdout.rstrip().endswith("SUCCEEDED")
    state = subprocess.run([*cli, "status", job_id, "--address", url], env=env, capture_output=True, text=True)
    assert state.stdout.strip() == "SUCCEEDED"
    logs = subprocess.run([*cli, "logs", job_id, "--address", url], env=env, capture_output=True, text=True)
    last = json.loads([line for line in logs.stdout.splitlines() if line.startswith("{")][-1])
    assert last["totals"]["kept"] == pq.read_table(out / "manifest.parquet").num_rows > 0


def _get(url: str, token: str | None) -> int:
    """HTTP status of a GET, sending `token` as Ray's clients do (`Authorization: Bearer ...`)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token is not None else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_token_auth_refuses_requests_without_or_with_a_wrong_token(ray_cluster):
    _, url, env = ray_cluster
    jobs = f"{url}/api/jobs/"
    assert _get(jobs, env["RAY_AUTH_TOKEN"]) == 200  # the same request with the token goes through
    assert _get(jobs, None) == 401
    assert _get(jobs, "0" * 64) in (401, 403)
    # And dataprep's own client, without the token, gets a refusal rather than an answer.
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
    no_token["HOME"] = "/nonexistent-home"  # no token file to fall back on
    result = subprocess.run([sys.executable, "-m", "dataprep.cli", "status", "raysubmit_x", "--address", url],
                            env=no_token, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "does not exist" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "refused" in result.stderr and "RAY_AUTH_TOKEN" in result.stderr
    # With the token and no RAY_AUTH_MODE (the mode follows from the token), an unknown job is one line.
    no_mode = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
    result = subprocess.run([sys.executable, "-m", "dataprep.cli", "status", "raysubmit_x", "--address", url],
                            env=no_mode, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "raysubmit_x does not exist" in result.stderr and "fix:" in result.stderr
