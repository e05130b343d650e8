"""The `Executor` of global stages under the runner: calls are Ray tasks, handles are object refs.

Global stages (dedup) spread their work through an `Executor` (`dataprep.executor`) so they
never import Ray themselves; this is the one the runner gives them.
"""

from __future__ import annotations

from typing import Any


class RayExecutor:
    """The `Executor` of global stages on Ray: calls are Ray tasks, handles are object refs."""

    def __init__(self, *, retries: int | None = None) -> None:
        """`retries`: reruns of a failed call (None: Ray's default). With 0, Ray keeps neither a call's
        arguments nor its description once it ran (it keeps both to rerun it), so memory does not grow
        with the number of calls."""
        self._remote: dict[Any, Any] = {}
        self._options: dict[str, Any] = {} if retries is None else {"max_retries": retries}

    def blocks(self, ds: Any) -> list[Any]:
        """Refs to the dataset's blocks, computed once."""
        return ds.materialize().to_arrow_refs()

    def columns(self, ds: Any) -> list[str]:
        """The dataset's column names."""
        return ds.schema().names

    def put(self, value: Any) -> Any:
        """An object ref to `value`."""
        import ray

        return ray.put(value)

    def call(self, fn: Any, *args: Any, num_returns: int = 1) -> Any:
        """`fn` as a Ray task; one ref, or a list of `num_returns` refs."""
        import ray

        # One remote function per `fn`: registering it anew on every call would re-export it.
        remote = self._remote.get(fn) or self._remote.setdefault(fn, ray.remote(fn))
        return remote.options(num_returns=num_returns, **self._options).remote(*args)

    def get(self, handles: list[Any]) -> list[Any]:
        """The values behind the refs."""
        import ray

        return ray.get(list(handles))

    def wait(self, handles: list[Any]) -> None:
        """Wait for every ref without fetching its value here."""
        import ray

        ray.wait(list(handles), num_returns=len(handles), fetch_local=False)

    def dataset(self, blocks: list[Any]) -> Any:
        """A dataset of block refs."""
        import ray

        return ray.data.from_arrow_refs(blocks)
