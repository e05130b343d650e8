"""The per-batch wrapper: error isolation, filter decisions, ledger rows, split bookkeeping."""

from __future__ import annotations

import json

import pyarrow as pa

from dataprep import commit
from dataprep.stage import Filter, Stage
from dataprep.stage_task import StageTask
from tests.helpers import planned, read_ledger


class Doubler(Stage):
    name = "doubler"
    reads = ("x",)
    writes = ("y",)

    def process_batch(self, batch):
        xs = batch.column("x").to_pylist()
        if any(x == 13 for x in xs):
            raise ValueError("unlucky number 13")
        return batch.append_column("y", pa.array([x * 2 for x in xs]))


class Even(Filter):
    name = "even"
    reads = ("x",)
    writes = ("parity",)

    def process_batch(self, batch):
        return batch.append_column("parity", pa.array([x % 2 for x in batch.column("x").to_pylist()]))

    def reasons(self, batch):
        return [None if p == 0 else f"even:odd parity {p}" for p in batch.column("parity").to_pylist()]


class Splitter(Stage):
    name = "splitter"
    reads = ("x",)
    writes = ("key", "parent_key")
    expands = True

    def process_batch(self, batch):
        return pa.Table.from_pylist([clip for row in batch.to_pylist() for clip in _clips(row, row["x"])])


def _clips(row, count):
    return [{**row, "key": f"{row['key']}_c{i:04d}", "parent_key": row["key"]} for i in range(count)]


def _batch(xs):
    return pa.table({"key": [f"k{x}" for x in xs], "source": [f"/s/{x}" for x in xs], "x": xs})


def test_failing_row_is_isolated_and_recorded(tmp_path):
    out = StageTask(planned(Doubler), str(tmp_path))(_batch([1, 13, 3]))
    assert out.column("key").to_pylist() == ["k1", "k3"]
    assert out.column("y").to_pylist() == [2, 6]
    assert "_reject" not in out.column_names
    (row,) = read_ledger(tmp_path)
    assert row["key"] == "k13" and row["stage"] == "doubler" and row["stage_index"] == 1
    assert row["reason"] == "error:ValueError: unlucky number 13"


def test_filter_records_scores_and_reasons(tmp_path):
    out = StageTask(planned(Even, index=2), str(tmp_path))(_batch([1, 2, 3, 4]))
    assert out.column("key").to_pylist() == ["k2", "k4"]
    rows = sorted(read_ledger(tmp_path), key=lambda r: r["key"])
    assert [r["key"] for r in rows] == ["k1", "k3"]
    assert rows[0]["reason"] == "even:odd parity 1"
    assert json.loads(rows[0]["scores"]) == {"parity": 1}


def test_retried_batch_writes_the_same_ledger_part(tmp_path):
    task = StageTask(planned(Even), str(tmp_path))
    task(_batch([1, 2, 3]))
    task(_batch([1, 2, 3]))
    assert len(read_ledger(tmp_path)) == 2


def test_expansion_records_lineage_and_rejects_empty_parents(tmp_path):
    out = StageTask(planned(Splitter), str(tmp_path))(_batch([2, 0, 1]))
    assert out.column("key").to_pylist() == ["k2_c0000", "k2_c0001", "k1_c0000"]
    (row,) = read_ledger(tmp_path)
    assert row["key"] == "k0" and row["reason"] == "splitter:produced no rows"
    done = commit.done_parents(str(tmp_path), {"k2_c0000", "k2_c0001"})
    assert done == {"k2"}


class ClipCutter(Splitter):
    """Expands like standardize: a long row becomes two rows, any other passes through with its parent."""

    name = "cutter"

    def process_batch(self, batch):
        return pa.Table.from_pylist([c for row in batch.to_pylist() for c in (_clips(row, 2) if row["x"] > 9 else [row])])


def test_a_later_expanding_stage_keeps_the_splits_lineage(tmp_path):
    # A video split into three clips, the clips then seen in separate batches by a stage that also expands.
    split = StageTask(planned(Splitter), str(tmp_path))(_batch([3]))
    cutter = StageTask(planned(ClipCutter, index=2), str(tmp_path))
    for i in range(split.num_rows):
        cutter(split.slice(i, 1))
    assert len(list((tmp_path / "_work/lineage").iterdir())) == 1, "rows passed through are not the cutter's children"
    # One clip committed (say rejected by a filter) must not make the video done: its other clips are not.
    assert commit.done_parents(str(tmp_path), {"k3_c0002"}) == set()
    assert commit.done_parents(str(tmp_path), {"k3_c0000", "k3_c0001", "k3_c0002"}) == {"k3"}
    # Rows it cuts itself are its own children.
    StageTask(planned(ClipCutter, index=2), str(tmp_path / "long"))(_batch([10]))
    assert commit.done_parents(str(tmp_path / "long"), {"k10_c0000"}) == set()
    assert commit.done_parents(str(tmp_path / "long"), {"k10_c0000", "k10_c0001"}) == {"k10"}


def test_unsafe_keys_written_by_a_stage_are_sanitized(tmp_path):
    class Renamer(Stage):
        name = "renamer"
        writes = ("key",)

        def process_batch(self, batch):
            return batch.set_column(0, "key", pa.array(["../../etc/passwd", "a.b c"]))

    out = StageTask(planned(Renamer), str(tmp_path))(_batch([1, 2]))
    for key in out.column("key").to_pylist():
        assert "/" not in key and "." not in key and " " not in key
