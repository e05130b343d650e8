"""How a global stage runs work across workers without importing Ray itself.

A `GlobalStage.run(ds, executor)` submits plain functions through an `Executor`.
The runner passes one backed by Ray (`dataprep.ray_executor.RayExecutor`); tests and
small jobs use `LocalExecutor`, which runs the same calls in this process, so a
global stage is unit-tested on a pyarrow table with no cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Executor(Protocol):
    """Runs functions on workers and moves their results as handles."""

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


class LocalExecutor:
    """An `Executor` that runs every call at once in this process; a dataset is a pyarrow table."""

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
