"""A Parquet manifest cut by row group into reads that workers do, so its rows never pass through the driver.

    names, sizes = layout(uri)                  # from the file's footer only
    reads = row_group_reads(uri, sizes, rows=250_000)
    table = read_rows(reads[0], ["uri", "caption"])   # anywhere: those row groups' columns

A read is a few numbers (the URI, its row groups, the number of its first row), so a task
that gets one gets a few hundred bytes. Row numbers come from the footer, so each row has
the number it has when the manifest is read from its start, and so has any key made from it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dataprep import storage

# A row group above this many times the rows of a read is not cut: one task would hold it whole.
MAX_GROUP_READS = 4


@dataclass(frozen=True)
class RowGroupRead:
    """Consecutive row groups of a Parquet manifest, read together."""

    uri: str
    row_groups: tuple[int, ...]
    first_row: int  # the 1-based number of the first row in the manifest
    rows: int


@contextlib.contextmanager
def _opened(uri: str) -> Iterator[Any]:
    """The Parquet file at `uri` for pyarrow: a local path, or an S3 object read by ranges (never downloaded whole)."""
    filesystem = storage.pyarrow_filesystem(uri)
    if filesystem is None:
        yield storage.local_path(uri)
        return
    with filesystem.open_input_file(uri[len("s3://"):]) as file:
        yield file


def layout(uri: str) -> tuple[list[str], list[int]]:
    """The manifest's column names and the rows of each of its row groups, from its footer."""
    with _opened(uri) as source:
        parquet = pq.ParquetFile(source)
        meta = parquet.metadata
        return parquet.schema_arrow.names, [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def row_group_reads(uri: str, sizes: list[int], rows: int) -> list[RowGroupRead] | None:
    """Reads of at least `rows` rows each (but the last), of whole row groups in order; None when a row group
    is too large to be one task's (over `MAX_GROUP_READS` x `rows`)."""
    if any(n > MAX_GROUP_READS * rows for n in sizes):
        return None
    reads: list[RowGroupRead] = []
    group: list[int] = []
    first = count = 0
    for index, n in enumerate(sizes):
        group.append(index)
        count += n
        if count >= rows or index == len(sizes) - 1:
            reads.append(RowGroupRead(uri, tuple(group), first + 1, count))
            first, group, count = first + count, [], 0
    return reads


def read_rows(read: RowGroupRead, wanted: list[str]) -> pa.Table:
    """The columns of `wanted` that the manifest has, for the rows of `read`."""
    with _opened(read.uri) as source:
        parquet = pq.ParquetFile(source)
        names = [c for c in wanted if c in parquet.schema_arrow.names]
        return parquet.read_row_groups(list(read.row_groups), columns=names)
