"""Arrow helpers: the `_reject` column."""

from __future__ import annotations

import pyarrow as pa

from dataprep import columns
from dataprep.arrow import set_rejects, split_rejects


def test_set_rejects_keeps_an_earlier_reason_over_a_later_one():
    first = pa.table({columns.KEY: ["a", "b", "c"], columns.REJECT: pa.array(["old", None, None], pa.string())})
    chunked = pa.concat_tables([first.slice(0, 1), first.slice(1, 2)])  # a batch of two blocks
    out = set_rejects(chunked, ["new", "new", None])
    assert out.column(columns.REJECT).to_pylist() == ["old", "new", None]
    fresh = set_rejects(pa.table({columns.KEY: ["a", "b"]}), [None, "why"])
    assert fresh.column(columns.REJECT).to_pylist() == [None, "why"]


def test_split_rejects_without_a_reason_keeps_every_row_and_drops_the_reserved_columns():
    table = pa.table({columns.KEY: ["a", "b"], "x": [1, 2], columns.REJECT: pa.nulls(2, pa.string())})
    kept, rejected = split_rejects(table)
    assert kept.column_names == [columns.KEY, "x"] and kept.column("x").to_pylist() == [1, 2]
    assert rejected.num_rows == 0
    kept, rejected = split_rejects(set_rejects(table, [None, "why"]))
    assert kept.column(columns.KEY).to_pylist() == ["a"] and rejected.column(columns.KEY).to_pylist() == ["b"]
