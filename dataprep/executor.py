"""How a global stage runs work across workers without importing Ray itself.

A `GlobalStage.run(ds, executor)` spreads its work through an `Executor`, in two styles:
- tasks: `call` a function on handles (`put`, `get`, `wait`), results moved as handles;
- data: collections of pyarrow tables that `map`, `exchange` (a hash shuffle on one column, then
  a function per partition), `union`, `materialize` and `collect` transform, read from the
  stage's input piece by piece (`pieces`, `map_pieces`), with `route` to hand each piece the
  rows that concern it.
The runner passes one backed by Ray (`dataprep.ray_executor.RayExecutor`: calls are Ray tasks,
data are Ray Datasets, `exchange` is Ray Data's hash shuffle). Tests and small jobs use
`LocalExecutor`, which runs the same in this process on pyarrow tables, so a global stage is
unit-tested with no cluster.

The runner writes the rows entering a global stage as a `Segment` of Parquet files and hands the
stage `executor.read(segment)`: a dataset like any other, whose `pieces` are those files, so a
stage that reads piece by piece never holds the input whole in memory or in the object store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Segment:
    """The Parquet files (URIs) holding the rows that enter a global stage, as the runner wrote them."""

    folder: str
    files: tuple[str, ...]
    nbytes: int  # of the files together


def read_piece(piece: Any) -> Any:
    """The pyarrow table of one piece: a Segment's file is read, a table is itself."""
    if isinstance(piece, str):
        from dataprep import storage

        return storage.read_parquet(piece)
    return piece


def distinct_ints(table: Any, column: str) -> list[int]:
    """The distinct values of an integer column of `table`."""
    return np.unique(table.column(column).to_numpy()).tolist()


class Executor(Protocol):
    """Runs functions on workers and moves their results as handles or as collections of tables."""

    def blocks(self, ds: Any) -> list[Any]:
        """Handles to the materialized blocks (pyarrow tables) of a dataset."""

    def columns(self, ds: Any) -> list[str]:
        """Column names of a dataset."""

    def put(self, value: Any) -> Any:
        """A handle to `value`, shared by the calls that take it."""

    def call(self, fn: Callable[..., Any], *args: Any, num_returns: int = 1) -> Any:
        """Start `fn(*args)` (handles among `args` are resolved); a handle, or a list of `num_returns` handles."""

    def get(self, handles: list[Any]) -> list[Any]:
        """The values behind handles, fetched to the caller."""

    def wait(self, handles: list[Any]) -> None:
        """Block until every handle's value exists, without fetching it."""

    def dataset(self, blocks: list[Any]) -> Any:
        """A dataset of the given block handles."""

    def read(self, segment: Segment) -> Any:
        """The rows of a Segment as a dataset (what the runner hands a global stage)."""

    def pieces(self, ds: Any) -> list[Any]:
        """What `map_pieces` reads, in a fixed order: the files of a dataset `read` made, else the dataset's
        materialized blocks."""

    def map_pieces(self, fn: Callable[..., Any], pieces: Sequence[Any], args: Sequence[tuple]) -> Any:
        """Data whose part i is `fn(table of pieces[i], i, *args[i])` (handles in `args[i]` resolved); lazy
        where the executor can be, so each piece is read when its part is needed."""

    def map(self, data: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(table, *args)` on each table of `data`."""

    def exchange(self, data: Any, key: str, fn: Callable[..., Any], *args: Any, partitions: int) -> Any:
        """Rows of `data` hash-partitioned on column `key` into `partitions` groups, then `fn(group, *args)`:
        rows with equal keys meet in one call (which may hold several keys)."""

    def union(self, *data: Any) -> Any:
        """The rows of all of `data` (same schema)."""

    def materialize(self, data: Any) -> Any:
        """`data` computed once, so that several later steps read it without computing it again."""

    def collect(self, data: Any) -> list[Any]:
        """The tables of (small) `data`, fetched to the caller."""

    def count(self, data: Any) -> int:
        """The rows of materialized `data`."""

    def route(self, data: Any, key: str, *, partitions: int) -> dict[int, Any]:
        """For each value of integer column `key`: a handle to a table holding all of its rows (and maybe
        rows of other values)."""


class LocalExecutor:
    """An `Executor` that runs every call at once in this process; a dataset is a pyarrow table."""

    _read: tuple[Any, Segment] | None = None  # the table `read` made last, and its Segment

    def blocks(self, ds: Any) -> list[Any]:
        """The table itself as the only block (none when it is empty)."""
        return [ds] if ds.num_rows else []

    def columns(self, ds: Any) -> list[str]:
        """The table's column names."""
        return list(ds.column_names)

    def put(self, value: Any) -> Any:
        """The value itself."""
        return value

    def call(self, fn: Callable[..., Any], *args: Any, num_returns: int = 1) -> Any:
        """`fn(*args)`, split into a list when it returns several values."""
        result = fn(*args)
        return result if num_returns == 1 else list(result)

    def get(self, handles: list[Any]) -> list[Any]:
        """The values themselves."""
        return list(handles)

    def wait(self, handles: list[Any]) -> None:
        """Nothing to wait for."""

    def dataset(self, blocks: list[Any]) -> Any:
        """The blocks as one table."""
        import pyarrow as pa

        return pa.concat_tables(blocks)

    def read(self, segment: Segment) -> Any:
        """The Segment's files as one table."""
        table = self.dataset([read_piece(f) for f in segment.files])
        self._read = (table, segment)
        return table

    def pieces(self, ds: Any) -> list[Any]:
        """The files of the table `read` made, else the table (none when it is empty)."""
        if self._read is not None and ds is self._read[0]:
            return list(self._read[1].files)
        return self.blocks(ds)

    def map_pieces(self, fn: Callable[..., Any], pieces: Sequence[Any], args: Sequence[tuple]) -> Any:
        """The parts, each computed at once, as one table."""
        return self.dataset([fn(read_piece(p), i, *a) for i, (p, a) in enumerate(zip(pieces, args, strict=True))])

    def map(self, data: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(data, *args)`: the table is the only part."""
        return fn(data, *args)

    def exchange(self, data: Any, key: str, fn: Callable[..., Any], *args: Any, partitions: int) -> Any:
        """`fn` on each non-empty hash partition (on an empty table when all are), as one table: several
        partitions even in one process, so that a stage's partition logic is tested without a cluster."""
        with np.errstate(over="ignore"):  # Fibonacci hashing: the multiply wraps modulo 2^64 on purpose
            mixed = data.column(key).to_numpy().astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        part = ((mixed >> np.uint64(32)) % np.uint64(partitions)).astype(np.int64)
        groups = [data.filter(part == p) for p in range(partitions) if (part == p).any()]
        return self.dataset([fn(g, *args) for g in groups or [data]])

    def union(self, *data: Any) -> Any:
        """The tables one after the other."""
        return self.dataset(list(data))

    def materialize(self, data: Any) -> Any:
        """The table itself: it is computed already."""
        return data

    def collect(self, data: Any) -> list[Any]:
        """The table as the only part."""
        return [data]

    def count(self, data: Any) -> int:
        """The table's rows."""
        return data.num_rows

    def route(self, data: Any, key: str, *, partitions: int) -> dict[int, Any]:
        """Each value's own rows."""
        import pyarrow.compute as pc

        return {v: data.filter(pc.equal(data.column(key), v)) for v in distinct_ints(data, key)}

