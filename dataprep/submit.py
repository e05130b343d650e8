"""Sending a job to a Ray cluster through its Jobs API, and following it.

The head's dashboard answers with a token when it was started with token
authentication (`RAY_AUTH_MODE=token`); the client sends `RAY_AUTH_TOKEN` from the
environment, as Ray's own CLI does.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from pathlib import Path

AGENT_WAIT_SECONDS = 120


def _client(address: str):  # noqa: ANN202 - JobSubmissionClient is imported lazily
    # Ray's client sends a token only in token mode, read when Ray is imported; a given token means that mode.
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def submit(config: str, *, address: str, input: str | None = None, output: str | None = None) -> str:
    """Submit `config` as a Ray job running `dataprep.jobs.run_job`; returns the job id."""
    staging = tempfile.mkdtemp(prefix="dataprep-submit-")
    try:
        name = Path(config).name
        shutil.copy(config, os.path.join(staging, name))
        command = ["python", "-m", "dataprep.jobs.run_job", name]
        if input:
            command += ["--input", input]
        if output:
            command += ["--output", output]
        client = _client(address)
        # A head that has just started answers 500 until its job agent is up; that is worth waiting for.
        deadline = time.monotonic() + AGENT_WAIT_SECONDS
        while True:
            try:
                return client.submit_job(
                    entrypoint=shlex.join(command),
                    runtime_env={"working_dir": staging},
                    metadata={"tool": "dataprep", "config": name},
                )
            except RuntimeError as exc:
                if "No available agent" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(2)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def status(job_id: str, *, address: str) -> str:
    """The job's state: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
    return str(_client(address).get_job_status(job_id).value)


def logs(job_id: str, *, address: str) -> str:
    """Everything the job has printed so far."""
    return _client(address).get_job_logs(job_id)


def stop(job_id: str, *, address: str) -> bool:
    """Ask the cluster to stop the job; True if it was running."""
    return bool(_client(address).stop_job(job_id))


def wait(job_id: str, *, address: str, timeout: float | None = None, poll_seconds: float = 2.0) -> str:
    """Block until the job ends; returns its final state."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        state = status(job_id, address=address)
        if state in ("SUCCEEDED", "FAILED", "STOPPED"):
            return state
        if deadline is not None and time.monotonic() > deadline:
            return state
        time.sleep(poll_seconds)
