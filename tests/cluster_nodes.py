"""A real two-node Ray cluster on loopback for tests: `ray start --head` and `ray start --address`.

    with TwoNodeCluster(tmp_path) as cluster:   # token auth on; each node declares its own CPUs
        subprocess.run(["dataprep", "submit", ..., "--address", cluster.dashboard], env=cluster.env)

    subprocess.run(["dataprep", "run", CONFIG, "--address", cluster.gcs], env=cluster.env)  # a driver here

Each node is one `ray start --block` in a process group of its own. The cluster stops by those
groups only (never `ray stop`, which would end every Ray on this machine: other test sessions
run theirs), and a test can kill the second node outright, raylet and workers, as a lost machine.
The nodes have loopback addresses and the dashboard listens on 127.0.0.1; Ray's GCS listens on
every interface, as on any multi-node cluster, behind the token.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]
# Two loopback addresses, one per node, as two machines would have. Not 127.0.0.1: Ray swaps that for the
# machine's network address unless multi-node is off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which the tests'
# conftest sets and `ray start --address` refuses), and other addresses of 127.0.0.0/8 it keeps.
HEAD_HOST, WORKER_HOST = "127.0.0.2", "127.0.0.3"
# The dashboard (Jobs and state APIs) answers here only.
DASHBOARD_HOST = "127.0.0.1"
# A cold `ray start` on a loaded 2-core machine takes 10-30 s; twice that is a broken start, not a slow one.
START_TIMEOUT_S = 120.0
# Ray's settings for this cluster. GCS declares a node dead after 2 missed health checks 1 s apart instead
# of 5 x 3 s, so a test of a lost node does not wait a quarter of a minute before Ray reacts. And a raylet
# keeps up to 8 idle workers for a minute: by default it keeps as many as its node has CPUs (one here) and
# kills the others after 1 s, so a job starts dozens of workers (2 CPU-seconds each) instead of a few.
SYSTEM_CONFIG = {"health_check_period_ms": 1000, "health_check_failure_threshold": 2,
                 "num_workers_soft_limit": 8, "idle_worker_killing_time_threshold_ms": 60_000}
# A process that ended meanwhile, or is not ours to look at.
GONE = (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError, PermissionError)


def ray_command() -> str | None:
    """The `ray` command of this Python's environment, if installed."""
    return shutil.which("ray", path=os.path.dirname(sys.executable))


def _port_flags() -> list[str]:
    """A free port for every port a node listens on: the defaults clash with any other Ray on this machine."""
    return [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]


class TwoNodeCluster:
    """A head and a second node on loopback with token authentication, started and stopped by this object.

    `env` is what a client needs (the token, the import path of this checkout); `gcs` is the address
    `ray.init` and `dataprep run --address` take, `dashboard` the URL of the Jobs and state APIs.
    """

    def __init__(self, root: Path, *, head_cpus: int = 1, worker_cpus: int = 1) -> None:
        self.root, self.head_cpus, self.worker_cpus = root, head_cpus, worker_cpus
        ray_bin = ray_command()
        if ray_bin is None:
            raise FileNotFoundError("the `ray` command is not installed beside this Python")
        self.ray_bin = ray_bin
        self.env = dict(os.environ)
        self.env.update(
            RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), PYTHONPATH=str(REPO),
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1",
            PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
        port, dashboard = free_port(), free_port()
        self.gcs = f"{HEAD_HOST}:{port}"
        self.dashboard = f"http://{DASHBOARD_HOST}:{dashboard}"
        self._head_args = [
            "--head", f"--port={port}", f"--dashboard-port={dashboard}", f"--dashboard-host={DASHBOARD_HOST}",
            f"--ray-client-server-port={free_port()}", f"--num-cpus={head_cpus}",
            f"--system-config={json.dumps(SYSTEM_CONFIG)}"]
        # Ray's sockets live under its temp dir, and a socket path has at most 107 bytes: a short folder.
        self._temp = tempfile.mkdtemp(prefix="ray2n-")
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self._workers_started = 0
        self._lost: set[str] = set()  # node ids of killed second nodes, which Ray may count as alive a while

    def __enter__(self) -> TwoNodeCluster:
        try:
            self.head = self._start_node("head", HEAD_HOST, self._head_args)
            self._wait(lambda: self._jobs_api_up(), "the head's Jobs API")
            self.start_worker()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start_node(self, name: str, host: str, args: list[str]) -> subprocess.Popen:
        temp_dir = os.path.join(self._temp, name)
        with open(self.root / f"{name}.log", "wb") as log:  # the node writes to its own copy of the file
            return subprocess.Popen(
                [self.ray_bin, "start", "--block", f"--node-ip-address={host}", "--disable-usage-stats",
                 f"--temp-dir={temp_dir}", *_port_flags(), *args],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_worker(self) -> None:
        """Start the second node (again, after `kill_worker`) and wait until the head counts its CPUs."""
        self._workers_started += 1
        self.worker = self._start_node(f"worker{self._workers_started}", WORKER_HOST,
                                       [f"--address={self.gcs}", f"--num-cpus={self.worker_cpus}"])
        self._wait(lambda: self.node_id("worker") is not None, "the second node")

    def kill_worker(self) -> None:
        """SIGKILL the second node's raylet, agents and workers at once, as when its machine is lost."""
        assert self.worker is not None, "the second node is not running"
        self._lost.add(self.node_id("worker") or "")
        _kill(_group(self.worker.pid))
        self.worker.wait(timeout=30)
        self.worker = None

    def raylets(self) -> dict[str, psutil.Process]:
        """The raylet process of each running node of this cluster: "head", "worker"."""
        nodes = {"head": self.head, "worker": self.worker}
        return {name: p for name, proc in nodes.items() if proc is not None
                for p in _group(proc.pid) if _name(p) == "raylet"}

    def workers(self, node: str | None = None) -> list[tuple[psutil.Process, str]]:
        """Ray worker processes of this cluster (of one node: "head", "worker"), with their titles (`ray::...`)."""
        found = []
        for name, raylet in self.raylets().items():
            if node not in (None, name):
                continue
            with contextlib.suppress(*GONE):
                for child in raylet.children(recursive=True):
                    with contextlib.suppress(*GONE):
                        title = " ".join(child.cmdline())
                        if title.startswith("ray::"):
                            found.append((child, title))
        return found

    def state(self, resource: str, *, detail: bool = False, **equal: str) -> list[dict[str, Any]]:
        """Rows of Ray's state API (`/api/v0/RESOURCE`) whose fields equal `equal`, asked with the cluster's token;
        `detail` adds the fields Ray leaves out by default (an actor's `num_restarts`)."""
        query = [("limit", "10000"), ("detail", str(detail).lower())]
        for key, value in equal.items():
            query += [("filter_keys", key), ("filter_predicates", "="), ("filter_values", value)]
        request = urllib.request.Request(f"{self.dashboard}/api/v0/{resource}?{urllib.parse.urlencode(query)}",
                                         headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["data"]["result"]["result"]

    def node_id(self, node: str) -> str | None:
        """The Ray node id of the "head" or the "worker" node while the head counts it alive, else None."""
        host = HEAD_HOST if node == "head" else WORKER_HOST
        try:
            alive = self.state("nodes", state="ALIVE")
        except OSError:  # the head's state API is not up yet
            return None
        return next((n["node_id"] for n in alive if n.get("node_ip") == host and n["node_id"] not in self._lost), None)

    def stop(self) -> None:
        """Kill both nodes, every process of their groups: SIGTERM would have each drain for up to 30 s first,
        and nothing of a test cluster outlives it but its temp folder, which goes too."""
        for proc in (self.worker, self.head):
            if proc is not None:
                _kill(_group(proc.pid))
                proc.wait(timeout=30)
        self.head = self.worker = None
        shutil.rmtree(self._temp, ignore_errors=True)

    def _jobs_api_up(self) -> bool:
        request = urllib.request.Request(f"{self.dashboard}/api/jobs/",
                                         headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status == 200
        except OSError:
            return False

    def _wait(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not condition():
            for proc in (self.head, self.worker):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"a `ray start` exited with {proc.returncode} waiting for {what}; "
                                       f"see the logs in {self.root}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not come up within {START_TIMEOUT_S:.0f} s; logs in {self.root}")
            time.sleep(0.5)


def _group(pid: int) -> list[psutil.Process]:
    """`pid`, every process in its session, and every descendant (Ray may start some in a session of their own)."""
    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(*GONE):
        root = psutil.Process(pid)
        found[pid] = root
        for child in root.children(recursive=True):
            found[child.pid] = child
    for p in psutil.process_iter():
        with contextlib.suppress(*GONE):
            if os.getsid(p.pid) == pid:
                found[p.pid] = p
    return list(found.values())


def _kill(processes: list[psutil.Process]) -> None:
    for p in processes:
        with contextlib.suppress(*GONE):
            p.send_signal(signal.SIGKILL)


def _name(p: psutil.Process) -> str:
    with contextlib.suppress(*GONE):
        return p.name()
    return ""
