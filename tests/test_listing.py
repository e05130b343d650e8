"""A Parquet manifest listed by the workers, row group by row group: the rows the driver would list."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataprep import ledger, listing
from dataprep.config import load_config
from dataprep.plan import build_plan
from dataprep.stages.ingest import Ingest

pytestmark = pytest.mark.integration


def _todo_keys(todo) -> list[str]:
    tables = todo.executor.get(todo.handles) if not isinstance(todo.handles[0], pa.Table) else todo.handles
    return sorted(k for t in tables for k in t.column("key").to_pylist())


def test_workers_list_a_parquet_manifest_as_the_driver_does(ray_session, tmp_path, monkeypatch):
    uris = [f"/media/{i:03d}.jpg" for i in range(40)]
    uris[5], uris[9] = uris[2], None  # a repeat, and a row that names no file (keyed by its row number)
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"uri": uris, "caption": [f"c{i}" for i in range(40)]}), manifest, row_group_size=6)
    config = tmp_path / "job.yaml"
    config.write_text(f"input: {manifest}\noutput: {tmp_path / 'out'}\nstages:\n  - stage: ingest\n")
    plan = build_plan(load_config(config))
    listed = Ingest().rows(next(iter(Ingest().pages(str(manifest)))))
    committed = listed.slice(10, 3).to_pylist()  # three rows in the ledger already
    ledger.write_part(str(tmp_path / "out"), pa.Table.from_pylist(
        [{"key": r["key"], "source": r["source"], "stage": "x", "stage_index": 1, "reason": "x:y"} for r in committed],
        schema=ledger.SCHEMA))
    by_driver = listing.list_todo(plan, address=None, progress=False, verbose=False)  # 40 rows: listed here

    monkeypatch.setattr(listing, "LOCAL_ROWS", 10)
    monkeypatch.setattr(listing, "READ_ROWS", 8)
    monkeypatch.setattr(Ingest, "pages", lambda self, uri: pytest.fail("the driver read the manifest"))
    by_workers = listing.list_todo(plan, address=None, progress=False, verbose=False)
    assert by_workers.buckets > 1
    assert _todo_keys(by_workers) == _todo_keys(by_driver)
    assert len(_todo_keys(by_workers)) == 40 - 1 - 3
    assert (by_workers.outcome.rows, by_workers.outcome.rejected, by_workers.outcome.duplicates) == \
        (by_driver.outcome.rows, by_driver.outcome.rejected, by_driver.outcome.duplicates) == (35, 1, 1)
