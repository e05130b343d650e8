"""A run that makes no progress fails after `ray.stall_timeout`, naming what is stuck; a rerun resumes it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataprep import commit, job_record
from dataprep.config import load_config, parse_config
from dataprep.errors import ConfigError
from dataprep.liveness import LiveExecutor, StalledError, Watchdog
from dataprep.plan import build_plan
from dataprep.progress import Pulse, Running, Tally, at_work
from tests.kill import alive
from tests.plugin_stages import STUCK_ENV

REPO = Path(__file__).resolve().parents[1]
STALL_TIMEOUT = 10  # seconds: more than the first batch takes to start on a busy 2-core machine
# A stalled run must end within this: Ray's start, the rows before the stuck one, the timeout, the shutdown.
STALLED_RUN_BOUND = 120


class FakeClock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Remote:
    """Stands in for a Ray actor handle of a Tally: each `.method.remote(...)` calls the tally at once."""

    def __init__(self, tally: Tally) -> None:
        for name in ("add", "begin", "end"):
            setattr(self, name, types.SimpleNamespace(remote=getattr(tally, name)))


STUCK = Running(stage="sleepy", task="task 1f2e (pid 42 on node-a)", keys=("k7",), rows=1, seconds=612.0)


# -- the tally: what is at work ----------------------------------------------------------------


def test_tally_names_the_batches_at_work_oldest_first_and_beats_when_one_ends():
    tally = Tally()
    tally.begin("b1", "probe", "task a", ["k1", "k2", "k3"], 8)
    time.sleep(0.01)
    tally.begin("b2", "sleepy", "task b", ["k9"], 1)
    before = tally.pulse()
    assert [r.stage for r in before.running] == ["probe", "sleepy"] and before.running[0].seconds > 0
    assert before.running[0].keys == ("k1", "k2", "k3") and before.running[0].rows == 8
    tally.end("b1")
    after = tally.pulse()
    assert after.beats != before.beats and [r.task for r in after.running] == ["task b"]
    assert tally.pulse(shown=0).more == 1


def test_a_batch_that_raises_is_no_longer_at_work():
    tally = Tally()
    batch = pa.table({"key": ["a", "b", "c", "d", "e"]})
    with pytest.raises(ValueError), at_work(Remote(tally), "probe", batch, lambda: "task t"):
        assert tally.pulse().running[0].keys == ("a", "b", "c")  # the first keys only: one line
        raise ValueError("bad row")
    assert tally.pulse().running == () and tally.pulse().beats == 1


# -- the watchdog's decision, on a fake clock ----------------------------------------------------


def test_no_beat_for_the_timeout_is_a_stall_naming_stage_task_and_keys():
    clock, beats = FakeClock(), [0]
    dog = Watchdog(600, lambda: Pulse(beats[0], (STUCK,), more=2), clock=clock)
    clock.now += 599
    assert dog.check() is None
    beats[0] += 1  # a batch ended: the wait starts again from this look
    assert dog.check() is None
    clock.now += 599
    assert dog.check() is None
    clock.now += 1
    found = dog.check()
    assert found is not None and found.startswith("no progress for 600 s (ray.stall_timeout: 600 s)")
    assert "stage `sleepy` task 1f2e (pid 42 on node-a) has worked 612 s on 1 row (key k7)" in found
    assert "2 more batches at work" in found and "rerun the same command to resume" in found


def test_the_driver_beats_for_a_global_stage_and_a_stall_there_names_it():
    clock = FakeClock()
    dog = Watchdog(10, lambda: Pulse(0, ()), clock=clock)
    clock.now += 9
    dog.beat()
    clock.now += 9
    assert dog.check() is None
    with dog.waiting("global stage `minhash_dedup`'s tasks"):
        clock.now += 1
        assert "no batch at work, the driver waits on global stage `minhash_dedup`'s tasks" in dog.check()
    assert "may wait for resources the cluster lacks" in dog.check()


def test_a_tally_that_does_not_answer_is_no_progress():
    clock = FakeClock()

    def gone() -> Pulse:
        raise TimeoutError("actor unreachable")

    dog = Watchdog(10, gone, clock=clock)
    assert dog.check() is None
    clock.now += 10
    assert "progress tally does not answer" in dog.check()


# -- interrupting the run ------------------------------------------------------------------------


def test_a_stall_interrupts_the_main_thread_in_a_blocking_call():
    dog = Watchdog(0.3, lambda: Pulse(0, (STUCK,)), interval=0.05)
    started = time.monotonic()
    with pytest.raises(StalledError, match="stage `sleepy`"):
        with dog:
            time.sleep(30)
    assert time.monotonic() - started < 5


def test_a_stall_interrupts_a_run_in_another_thread():
    raised: list[BaseException] = []

    def run() -> None:
        try:
            with Watchdog(0.3, lambda: Pulse(0, (STUCK,)), interval=0.05):
                while True:  # as Ray Data's executor waits for its output: short sleeps
                    time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001 - what the thread ends with is the result
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive() and isinstance(raised[0], StalledError)


def test_progress_keeps_the_run_going_and_a_run_that_ends_stands():
    beats = iter(range(10**6))
    with Watchdog(0.3, lambda: Pulse(next(beats), ()), interval=0.05) as dog:
        time.sleep(1)  # three timeouts long, but every poll sees a new beat
    assert dog.stalled is None


def test_live_executor_beats_each_time_some_calls_end(monkeypatch):
    done_per_wait = [[], ["r1"], [], ["r2", "r3"]]

    def wait(pending, *, num_returns, timeout, fetch_local):
        assert num_returns == len(pending) and not fetch_local
        ready = [r for r in done_per_wait.pop(0) if r in pending]
        return ready, [r for r in pending if r not in ready]

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(wait=wait))
    dog = Watchdog(10, lambda: Pulse(0, ()))
    beats: list[float] = []
    monkeypatch.setattr(dog, "beat", lambda: beats.append(time.monotonic()))
    LiveExecutor(dog, "minhash_dedup", every=0.01).wait(["r1", "r2", "r3", "r1"])
    assert len(beats) == 2 and done_per_wait == []


# -- the option ----------------------------------------------------------------------------------


def test_stall_timeout_option_defaults_on_and_does_not_change_the_job(tmp_path):
    def config(**ray: object):
        return parse_config({"input": str(tmp_path), "output": str(tmp_path / "out"), "stages": ["ingest"],
                             "ray": ray})

    assert config().ray.stall_timeout == 1800
    assert config(stall_timeout=0).ray.stall_timeout == 0
    assert config(stall_timeout=None).ray.stall_timeout is None
    with pytest.raises(ConfigError, match=r"`ray.stall_timeout`: .*greater than or equal to 0, got -5"):
        config(stall_timeout=-5)
    # Raising the timeout after a stall must not make the rerun another job.
    fingerprints = {job_record.fingerprint(build_plan(config(stall_timeout=t)))["sha256"] for t in (60, 1800, 0)}
    assert len(fingerprints) == 1


# -- a whole run through the command -------------------------------------------------------------

CAPTIONS = [f"a caption of row {i}" for i in range(6)]
STUCK_CAPTION = CAPTIONS[3]


def _job(tmp_path: Path, name: str, stall_timeout: float) -> Path:
    """A config of the captions job under `tmp_path`: `ingest`, then `stuck`."""
    manifest = tmp_path / "captions.jsonl"
    # The empty caption is rejected by ingest: the ledger takes part in exactly-once too.
    manifest.write_text("".join(json.dumps({"caption": c}) + "\n" for c in [*CAPTIONS, ""]))
    config = tmp_path / name
    config.write_text(f"input: {manifest}\noutput: {tmp_path / 'out'}\nplugins: [tests.plugin_stages]\n"
                      f"stages: [ingest, stuck]\nsink: {{max_samples: 2}}\nray: {{stall_timeout: {stall_timeout}}}\n")
    return config


@pytest.mark.integration
@pytest.mark.slow
def test_a_stuck_row_fails_the_run_and_the_rerun_resumes_exactly_once(tmp_path):
    config = _job(tmp_path, "job.yaml", STALL_TIMEOUT)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "dataprep", "run", str(config), "-q"], cwd=tmp_path,
                            env={**env, STUCK_ENV: STUCK_CAPTION}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    # Every process the run starts (Ray's raylet, GCS, workers) descends from it: collect them as they appear.
    seen: dict[int, psutil.Process] = {}
    while proc.poll() is None and time.monotonic() - started < STALLED_RUN_BOUND:
        with contextlib.suppress(psutil.Error):
            seen.update((p.pid, p) for p in psutil.Process(proc.pid).children(recursive=True))
        time.sleep(0.2)
    if proc.poll() is None:
        for p in [*seen.values(), psutil.Process(proc.pid)]:
            with contextlib.suppress(psutil.Error):
                p.kill()
    _, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - started < STALLED_RUN_BOUND, f"the stuck run did not end: {stderr[-2000:]}"
    assert proc.returncode not in (0, None) and "Traceback" not in stderr, stderr

    plan = build_plan(load_config(config))
    listed = pa.concat_tables(plan.source.instantiate().read(plan.config.input)).to_pylist()
    stuck_key = next(r["key"] for r in listed if r["caption"] == STUCK_CAPTION)
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert re.search(rf"no progress for \d+ s \(ray.stall_timeout: {STALL_TIMEOUT} s\)", errors[0]), errors[0]
    assert "stage `stuck` task " in errors[0], errors[0]
    assert f"(key {stuck_key})" in errors[0] and "rerun the same command to resume" in errors[0], errors[0]

    deadline = time.monotonic() + 15  # Ray's own shutdown of its processes at exit takes a few seconds
    while alive(seen.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = alive(seen.values())
    for p in left:  # a failure here must leave nothing running either
        with contextlib.suppress(psutil.Error):
            p.kill()
    assert seen and not left, f"processes of the stalled run are still alive: {[p.pid for p in left]}"
    committed = commit.committed_keys(str(out))
    assert stuck_key not in committed and committed, "the stuck row was committed, or nothing before it was"

    # The rerun raises the timeout, as the message suggests for a slow job: on a machine busy with other
    # tests a short one could stop it before its first batch ends. `ray` options are not part of the job.
    rerun = _job(tmp_path, "rerun.yaml", 600)
    done = subprocess.run([sys.executable, "-m", "dataprep", "run", str(rerun), "-q"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    kept = pq.read_table(out / "manifest.parquet").column("key").to_pylist()
    rejected = pq.read_table(out / "rejects.parquet").column("key").to_pylist()
    assert sorted(kept + rejected) == sorted(r["key"] for r in listed), "a key is lost, or committed twice"
    assert stuck_key in kept
