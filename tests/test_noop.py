"""A rerun that has nothing to do: known from versions, without listing, and only while nothing changed."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from dataprep import noop, paths
from dataprep.config import load_config
from dataprep.plan import build_plan
from dataprep.runner import run_plan
from dataprep.stages.ingest import Ingest

pytestmark = pytest.mark.integration


def _job(tmp_path, captions: list[str]):
    manifest = tmp_path / "texts.jsonl"
    manifest.write_text("".join(json.dumps({"caption": c}) + "\n" for c in captions))
    config = tmp_path / "job.yaml"
    config.write_text(f"input: {manifest}\noutput: {tmp_path / 'out'}\nstages:\n  - stage: ingest\n")
    return manifest, build_plan(load_config(config))


def _kept_and_rejected(out) -> list[str]:
    kept = pq.read_table(out / paths.MANIFEST).column("key").to_pylist()
    return sorted(kept + pq.read_table(out / paths.REJECTS).column("key").to_pylist())


def _unlistable(monkeypatch) -> None:
    def refuse(self, uri):
        raise AssertionError("the input was listed")

    monkeypatch.setattr(Ingest, "pages", refuse)


def test_a_rerun_after_one_that_had_nothing_to_do_lists_nothing_until_a_record_changes(ray_session, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.setattr(noop, "RACY_SECONDS", 0.0)  # these files are milliseconds old
    _, plan = _job(tmp_path, ["a cat", "", "a dog"])
    out = tmp_path / "out"
    assert run_plan(plan, progress=False).new_rows == 2
    assert not (out / paths.NOOP_STATE).exists()  # a run that did work claims nothing
    assert run_plan(plan, progress=False).new_rows == 0
    with monkeypatch.context() as listing:
        _unlistable(listing)
        assert run_plan(plan, progress=False).new_rows == 0

    # A commit record gone (its keys to do again): listed, and each key ends committed once.
    ledger_part = next((out / paths.LEDGER_PARTS_DIR).glob("*.parquet"))
    ledger_part.unlink()
    assert run_plan(plan, progress=False).new_rows == 0  # the empty caption, rejected again at the source
    assert ledger_part.exists() and len(_kept_and_rejected(out)) == 3 == len(set(_kept_and_rejected(out)))


def test_nothing_is_recorded_while_a_file_it_depends_on_is_too_new_to_tell_by_its_version(tmp_path):
    manifest, plan = _job(tmp_path, ["a cat"])
    (tmp_path / "out").mkdir()
    state = noop.current(plan)
    assert not noop.remember(plan, state)  # the manifest was written just now
    old = os.stat(manifest).st_mtime - 10
    os.utime(manifest, (old, old))
    state = noop.current(plan)
    assert noop.remember(plan, state) and noop.known(plan, noop.current(plan))
    manifest.write_text(json.dumps({"caption": "a dog"}) + "\n")  # same size, in place
    assert not noop.known(plan, noop.current(plan))


def test_a_folder_input_has_no_version_and_is_always_listed(tmp_path):
    (tmp_path / "in").mkdir()
    config = tmp_path / "job.yaml"
    config.write_text(f"input: {tmp_path / 'in'}\noutput: {tmp_path / 'out'}\nstages:\n  - stage: ingest\n")
    assert noop.current(build_plan(load_config(config))) is None
