"""User mistakes through the real command: one `error:` line naming the thing, the value and the fix; no traceback."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import free_port, write_config
from tests.kill import alive

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _dataprep(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataprep", *args], capture_output=True, text=True, cwd=cwd,
                          env=_env(), timeout=120)


def _error_line(result: subprocess.CompletedProcess) -> str:
    """The one error line of a failed command, after checking there is nothing else worse."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def _setup(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a shard")
    (tmp_path / "folder").mkdir()
    (tmp_path / "broken.yaml").write_text("input: [unclosed\n")
    (tmp_path / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    (tmp_path / "typo.yaml").write_text(QUICKSTART.read_text().replace("output:", "outptu:"))


MISTAKES = {
    "inspect a missing shard": (["inspect", "nope.tar"], ["'nope.tar' does not exist", "fix: pass a shard's .tar"]),
    "inspect a folder": (["inspect", "folder"], ["'folder' is a folder, not a .tar", "fix:"]),
    "inspect a file that is not a tar": (["inspect", "notes.txt"], ["'notes.txt' is not a tar file", "fix:"]),
    "a plugin that cannot be imported": (["stages", "--plugin", "no_such_module"],
                                         ["--plugin", "'no_such_module' cannot be imported", "fix:"]),
    "a missing config": (["validate", "missing.yaml"], ["config file 'missing.yaml' does not exist", "fix:"]),
    "a folder as config": (["run", "folder"], ["config 'folder' is a folder", "fix:"]),
    "a config that is not YAML": (["validate", "broken.yaml"], ["'broken.yaml' is not valid YAML at line 2"]),
    "a binary file as config": (["validate", "binary.yaml"], ["'binary.yaml' is not a text file", "fix:"]),
    "a top-level typo": (["validate", "typo.yaml"], ["`outptu`: unknown option; did you mean `output`?"]),
    "run with a missing --input": (["run", str(QUICKSTART), "--input", "nothing_here"],
                                   ["`input`", "nothing_here' does not exist", "fix: pass --input"]),
    "a dashboard that does not answer": (["status", "raysubmit_1", "--address", f"http://127.0.0.1:{free_port()}"],
                                         ["cannot reach the Ray cluster at --address 'http://127.0.0.1:",
                                          "fix: give the Ray cluster's dashboard URL"]),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_user_mistake_is_one_error_line_with_status_2(case, tmp_path):
    args, expected = MISTAKES[case]
    _setup(tmp_path)
    result = _dataprep(*args, cwd=tmp_path)
    line = _error_line(result)
    assert result.returncode == 2
    for text in expected:
        assert text in line


@pytest.mark.parametrize("args", [["stages", "--markdown"], ["stages"]])
def test_output_piped_into_a_reader_that_stops_early(args, tmp_path):
    # As `dataprep stages --markdown | head -1` does once it has its line: the pipe is closed before the write.
    proc = subprocess.Popen([sys.executable, "-m", "dataprep", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=_env())
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def _record(config: Path, *, input: Path, output: Path) -> None:
    """Record `config`'s fingerprint in `output` as a run does first, without running it."""
    from dataprep import job_record
    from dataprep.config import load_config
    from dataprep.plan import build_plan

    job_record.check_output(build_plan(load_config(config, input=str(input), output=str(output))))


def test_output_of_another_config_names_the_field_that_differs(tmp_path):
    (tmp_path / "sample").mkdir()
    _record(QUICKSTART, input=tmp_path / "sample", output=tmp_path / "out")
    record = (tmp_path / "out" / "_work" / "job.json").read_bytes()
    changed = tmp_path / "changed.yaml"
    changed.write_text(QUICKSTART.read_text().replace("min_side: 64", "min_side: 128"))
    result = _dataprep("validate", str(changed), "--input", "sample", "--output", "out", cwd=tmp_path)
    line = _error_line(result)
    assert result.returncode == 2
    assert "`output` 'out' holds the output of a job with a different config" in line
    assert "stages[2].options.min_side: 64 -> 128" in line and "fix: choose a new --output" in line
    assert (tmp_path / "out" / "_work" / "job.json").read_bytes() == record

    for spelling in ("sample/", str(tmp_path / "sample"), "./sample"):
        same = _dataprep("validate", str(QUICKSTART), "--input", spelling, "--output", "out", cwd=tmp_path)
        assert same.returncode == 0, (spelling, same.stderr)
    assert (tmp_path / "out" / "_work" / "job.json").read_bytes() == record
    assert _dataprep("validate", str(QUICKSTART), "--input", "sample", "--output", "new", cwd=tmp_path).returncode == 0
    assert not (tmp_path / "new").exists(), "validate wrote into the output"


def test_output_recorded_with_a_relative_input_keeps_its_spelling(tmp_path):
    # Outputs written before inputs were normalized recorded (and keyed their rows by) the input as typed.
    (tmp_path / "sample").mkdir()
    _record(QUICKSTART, input=tmp_path / "sample", output=tmp_path / "out")
    job_file = tmp_path / "out" / "_work" / "job.json"
    record = json.loads(job_file.read_text())
    record["config"]["input"] = "sample/"
    record["sha256"] = hashlib.sha256(json.dumps(record["config"], sort_keys=True).encode("utf-8")).hexdigest()
    job_file.write_text(json.dumps(record))
    result = _dataprep("validate", str(QUICKSTART), "--input", str(tmp_path / "sample"), "--output", "out",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "input sample/," in result.stdout


def _ray_processes_of(session: int) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == session and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


@pytest.mark.integration
@pytest.mark.slow
def test_ctrl_c_stops_the_run_and_its_ray_and_the_rerun_resumes(sample_dir, tmp_path):
    out = tmp_path / "out"
    config = write_config(tmp_path / "job.yaml", input=sample_dir, output=out, plugins=["tests.plugin_stages"],
                          stages=["ingest", "probe", "sleepy", "size_filter"], sink="{max_samples: 2}")
    command = [sys.executable, "-m", "dataprep", "run", str(config), "-q"]
    # A child of a non-interactive shell ignores SIGINT; Ctrl-C at a terminal reaches a process that does not.
    proc = subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ledger = out / "_work" / "rejects"
    deadline = time.monotonic() + 180
    while not (ledger.is_dir() and any(ledger.glob("*.parquet"))):
        assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.communicate()}"
        assert time.monotonic() < deadline, "the run never started working"
        time.sleep(0.05)
    ray_processes = psutil.Process(proc.pid).children(recursive=True)
    assert any(p.name() == "raylet" for p in ray_processes)

    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted; rerun the same command to resume" in stderr and "Traceback" not in stderr, stderr
    time.sleep(3)
    left = alive(ray_processes) + _ray_processes_of(proc.pid)
    for p in left:  # so that a failure here leaves nothing running either
        p.kill()
    assert not left, f"Ray processes of the interrupted run are still alive: {[p.name() for p in left]}"

    # The rerun ends normally, where Ray is stopped once the summary is out (dataprep.ray_stop): again nothing stays.
    rerun = subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    left = _ray_processes_of(rerun.pid)
    for p in left:
        p.kill()
    assert not left, f"Ray processes of the finished run are still alive: {[p.name() for p in left]}"
    import pyarrow.parquet as pq

    from dataprep.config import load_config
    from dataprep.plan import build_plan

    plan = build_plan(load_config(config))
    listed = [k for table in plan.source.instantiate().read(plan.config.input) for k in table.column("key").to_pylist()]
    kept = pq.read_table(out / "manifest.parquet").column("key").to_pylist()
    rejected = pq.read_table(out / "rejects.parquet").column("key").to_pylist()
    assert sorted(kept + rejected) == sorted(listed), "a key is lost, or in a shard and the ledger, or twice"


def test_run_with_an_address_where_no_cluster_answers_fails_at_once(tmp_path):
    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.new("RGB", (96, 96), (10, 200, 30)).save(tmp_path / "in" / "green.png")  # one row: work to do
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "dataprep", "run", str(REPO / "configs" / "quickstart.yaml"),
                             "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                             "--address", f"127.0.0.1:{free_port()}", "-q"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert time.monotonic() - started < 60
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot reach the Ray cluster at --address" in result.stderr and "nothing answers" in result.stderr
