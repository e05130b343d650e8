"""Progress of a run: per-batch counts from the workers, their display, and a quiet console."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from dataprep import runner
from dataprep.config import load_config
from dataprep.plan import build_plan
from dataprep.progress import CountedStageTask, ProgressView, Tally
from dataprep.stage import Filter
from tests.helpers import planned

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
# A line Ray itself logs: Python ("2026-... INFO worker.py:123 -- ...") or C++ ("[... I 123 456] core_worker.cc:12: ...").
RAY_LOG_LINE = re.compile(r"\b(INFO|WARNING) \S+\.py:\d+ --|\] \S+\.cc:\d+:")


class OddKeys(Filter):
    """Rejects rows whose key ends in an odd digit."""

    name = "odd_keys"
    reads = ("key",)
    writes = ()

    def reasons(self, batch: pa.Table) -> list[str | None]:
        return ["odd:key" if int(k[-1]) % 2 else None for k in batch.column("key").to_pylist()]


class _Remote:
    """Stands in for a Ray actor handle: `.add.remote(...)` calls the tally at once."""

    def __init__(self, tally: Tally) -> None:
        self.add = type("Method", (), {"remote": staticmethod(tally.add)})()


def test_counted_task_reports_rows_in_out_and_rejected_per_batch(tmp_path):
    tally = Tally()
    task = CountedStageTask(planned(OddKeys), str(tmp_path), None, _Remote(tally))
    for keys in (["k0", "k1", "k2"], ["k3", "k4"]):
        task(pa.table({"key": keys, "source": keys}))
    assert tally.snapshot() == {"odd_keys": [5, 3, 2]}


def test_view_logs_the_stages_that_moved_when_not_a_terminal(capsys):
    counts = {"probe": [3, 2, 1]}
    with ProgressView(["probe", "size_filter"], 3, lambda: counts, interval=0.01, log_every=0.0):
        import time

        time.sleep(0.2)
    err = capsys.readouterr().err
    assert "probe: in 3, out 2, rejected 1" in err
    assert err.count("probe: in 3") == 1  # unchanged counts are not repeated
    assert "size_filter" not in err  # no batch reached it


@pytest.mark.integration
def test_progress_counts_match_the_funnel(ray_session, sample_dir, tmp_path, monkeypatch):
    seen: dict = {}

    class Recorder(ProgressView):
        def __exit__(self, *exc):
            super().__exit__(*exc)
            seen.update(self.poll())

    monkeypatch.setattr(runner, "ProgressView", Recorder)
    plan = build_plan(load_config(QUICKSTART, input=str(sample_dir), output=str(tmp_path / "out")))
    result = runner.run_plan(plan, progress=True)
    funnel = {row["stage"]: [row["in"], row["out"], row["rejected"]] for row in result.summary["funnel"]}
    assert seen == {name: funnel[name] for name in ("probe", "size_filter")}


@pytest.mark.integration
def test_a_run_prints_no_ray_info_or_warning(sample_dir, tmp_path):
    done = subprocess.run([sys.executable, "-m", "dataprep.cli", "run", str(QUICKSTART), "--input", str(sample_dir),
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    noise = [line for line in (done.stdout + done.stderr).splitlines() if RAY_LOG_LINE.search(line)]
    assert noise == []
    assert "funnel" in done.stdout
