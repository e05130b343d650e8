"""The `fields` entry of `summary.json`, accumulated over manifest batches instead of one table of every row.

Per column: `count` and `nulls`; for numbers `min`, `max` and `mean` of the finite values;
for other columns (except keys, sources, captions and parents, whose values are all distinct)
the `top` ten values. The result equals `dataprep.sink.summarize_fields` on the same rows.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dataprep import columns

_NO_TOP = (columns.KEY, columns.SOURCE, columns.CAPTION, columns.PARENT)
# Distinct values counted per column for `top`; a column with more (a score as text) is not a category.
MAX_DISTINCT = 100_000


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


class _Column:
    def __init__(self) -> None:
        self.count = 0
        self.nulls = 0
        self.numeric = True  # until a present value is not a number
        self.finite = 0
        self.total = 0.0
        self.low: float | None = None
        self.high: float | None = None
        self.top: Counter[str] | None = Counter()

    def add(self, values: pa.Array | None, rows: int) -> None:
        if values is None:  # the column is absent from this batch: its rows are nulls
            self.nulls += rows
            return
        present = values.drop_null()
        self.count += len(present)
        self.nulls += rows - len(present)
        if not len(present):
            return
        if self.numeric and _is_number(present.type):
            self._add_numbers(present)
        else:
            self.numeric = False
        if self.top is not None and not self.numeric:
            self.top.update(str(v) for v in present.to_pylist())
            if len(self.top) > MAX_DISTINCT:
                self.top = None

    def _add_numbers(self, present: pa.Array) -> None:
        values = present.cast(pa.float64())
        values = values.filter(pc.is_finite(values))
        if not len(values):
            return
        self.finite += len(values)
        self.total += pc.sum(values).as_py()
        low, high = pc.min_max(values).values()
        self.low = low.as_py() if self.low is None else min(self.low, low.as_py())
        self.high = high.as_py() if self.high is None else max(self.high, high.as_py())

    def entry(self, name: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"count": self.count, "nulls": self.nulls}
        if self.count and self.numeric:
            if self.finite and math.isfinite(self.total):
                entry.update(min=self.low, max=self.high, mean=self.total / self.finite)
        elif name not in _NO_TOP and self.top is not None:
            entry["top"] = dict(self.top.most_common(10))
        return entry


class FieldSummary:
    """`summary.json`'s `fields`, fed one manifest batch at a time."""

    def __init__(self, *, skip: tuple[str, ...] = ()) -> None:
        self.skip = skip
        self._columns: dict[str, _Column] = {}
        self._rows = 0

    def add(self, batch: pa.Table) -> None:
        """Count the rows of one batch."""
        for name in batch.column_names:
            if name not in self.skip and name not in self._columns:
                column = self._columns[name] = _Column()
                column.add(None, self._rows)  # the rows before this column appeared lacked it
        for name, column in self._columns.items():
            values = batch.column(name).combine_chunks() if name in batch.column_names else None
            column.add(values, batch.num_rows)
        self._rows += batch.num_rows

    def result(self) -> dict[str, Any]:
        """Per column, by name: count, nulls and min/max/mean or top values."""
        return {name: self._columns[name].entry(name) for name in sorted(self._columns)}
