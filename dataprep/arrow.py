"""Arrow helpers every stage and the runner share: set a column, read one, and the `_reject` column."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dataprep import columns


def put(table: pa.Table, name: str, values: Sequence[Any] | pa.Array, type_: pa.DataType) -> pa.Table:
    """`table` with column `name` set to `values` (replaced when present, appended otherwise)."""
    array = values if isinstance(values, pa.Array) and values.type == type_ else pa.array(values, type=type_)
    field = pa.field(name, type_)
    index = table.schema.get_field_index(name)
    return table.set_column(index, field, array) if index >= 0 else table.append_column(field, array)


def column_or_none(table: pa.Table, name: str) -> list[Any]:
    """A column as a list, or None per row where the table lacks it."""
    if name in table.column_names:
        return table.column(name).to_pylist()
    return [None] * table.num_rows


def rejects(table: pa.Table) -> list[str | None]:
    """The `_reject` reason of every row (None where the row goes on, or where the column is absent)."""
    return column_or_none(table, columns.REJECT)


def ensure_reject_column(table: pa.Table) -> pa.Table:
    """`table` with a `_reject` string column (all null when it had none)."""
    if columns.REJECT in table.column_names:
        return table
    return table.append_column(columns.REJECT, pa.nulls(table.num_rows, pa.string()))


def set_rejects(table: pa.Table, reasons: Sequence[str | None]) -> pa.Table:
    """Merge new reasons into `_reject`; an earlier reason on a row wins."""
    merged = pa.array(reasons, pa.string())
    if columns.REJECT in table.column_names:
        if len(merged) != table.num_rows:
            raise ValueError(f"{len(merged)} reasons for {table.num_rows} rows")
        merged = pc.coalesce(table.column(columns.REJECT).combine_chunks().cast(pa.string()), merged)
    return put(table, columns.REJECT, merged, pa.string())


def split_rejects(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(kept rows without the reserved columns, rejected rows)."""
    if columns.REJECT not in table.column_names:
        return table, table.slice(0, 0)
    if table.column(columns.REJECT).null_count == table.num_rows:
        # Nothing rejected (most batches): filtering would copy every column of the batch to keep them all.
        return table.drop_columns([c for c in columns.RESERVED if c in table.column_names]), table.slice(0, 0)
    rejected_mask = pc.is_valid(table.column(columns.REJECT))
    kept = table.filter(pc.invert(rejected_mask))
    kept = kept.drop_columns([c for c in columns.RESERVED if c in kept.column_names])
    return kept, table.filter(rejected_mask)


def concat(tables: Sequence[pa.Table]) -> pa.Table:
    """Tables with possibly different columns as one (missing columns become nulls)."""
    return pa.concat_tables(list(tables), promote_options="permissive")
