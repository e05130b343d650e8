"""Small Arrow helpers shared by the video stages: add or replace a column, read rejections."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from dataprep import columns


def put(table: pa.Table, name: str, values: Sequence[Any] | pa.Array, type_: pa.DataType) -> pa.Table:
    """`table` with column `name` set to `values` (replaced when present, appended otherwise)."""
    array = values if isinstance(values, pa.Array) and values.type == type_ else pa.array(values, type=type_)
    field = pa.field(name, type_)
    index = table.schema.get_field_index(name)
    return table.set_column(index, field, array) if index >= 0 else table.append_column(field, array)


def rejects(table: pa.Table) -> list[str | None]:
    """The `_reject` reason of every row (None where the row goes on, or where the column is absent)."""
    if columns.REJECT in table.column_names:
        return table.column(columns.REJECT).to_pylist()
    return [None] * table.num_rows


def column_or_none(table: pa.Table, name: str) -> list[Any]:
    """A column as a list, or None per row where the table lacks it."""
    if name in table.column_names:
        return table.column(name).to_pylist()
    return [None] * table.num_rows
