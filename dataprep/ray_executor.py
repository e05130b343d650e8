"""The `Executor` of global stages under the runner: calls are Ray tasks, data are Ray Datasets.

Global stages (dedup) spread their work through an `Executor` (`dataprep.executor`) so they
never import Ray themselves; this is the one the runner gives them. `exchange` is Ray Data's
hash shuffle (`Dataset.repartition(keys=...)`, the strategy of `DataContext.shuffle_strategy`,
a hash one by default): map tasks cut their input by key hash and each reduce task joins one
partition into a single block, so the objects made grow with the data, not with
blocks x partitions as a task per block with a return per partition did.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from dataprep.executor import Segment, distinct_ints, read_piece

# Ray Data's hash shuffle runs its map tasks and its reduce tasks in worker pools of their own (each
# has a runtime_env), beside the pool of every other task: three pools. Ray keeps idle workers up to
# a soft limit, by default one per CPU, and ends the others after a second; with that default the
# pools end each other's idle workers between the steps of a global stage, and every shuffle waits
# for new processes (seconds each: on 2 CPUs the 100k-row dedup benchmark took 72 s instead of 32 s).
# Three per CPU keeps them.
WORKERS_PER_CPU = 3


def embedded_ray_env(cpus: int) -> dict[str, str]:
    """Environment variables for a Ray that this process starts (its raylet reads them), so that the
    shuffles of global stages keep their workers between steps; a `ray start` node needs the same."""
    return {"RAY_num_workers_soft_limit": str(WORKERS_PER_CPU * max(cpus, 1))}


class RayExecutor:
    """The `Executor` of global stages on Ray: calls are Ray tasks, handles are object refs, data are
    Ray Datasets."""

    def __init__(self, *, retries: int | None = None) -> None:
        """`retries`: reruns of a failed call (None: Ray's default). With 0, Ray keeps neither a call's
        arguments nor its description once it ran (it keeps both to rerun it), so memory does not grow
        with the number of calls."""
        self._remote: dict[Any, Any] = {}
        self._options: dict[str, Any] = {} if retries is None else {"max_retries": retries}
        self._read: tuple[Any, Segment] | None = None  # the dataset `read` made, and its Segment

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

    def read(self, segment: Segment) -> Any:
        """A lazy Ray Data Parquet read of the Segment's folder (through the filesystem of its URI)."""
        import ray

        from dataprep import storage

        ds = ray.data.read_parquet(segment.folder, file_extensions=["parquet"],
                                   filesystem=storage.pyarrow_filesystem(segment.folder))
        self._read = (ds, segment)
        return ds

    def pieces(self, ds: Any) -> list[Any]:
        """The files of the dataset `read` made (each read by the task that needs it), else refs to the
        dataset's blocks."""
        if self._read is not None and ds is self._read[0]:
            return list(self._read[1].files)
        return self.blocks(ds)

    def map_pieces(self, fn: Callable[..., Any], pieces: Sequence[Any], args: Sequence[tuple]) -> Any:
        """A lazy dataset with one read task per piece: the piece is read (a file) or fetched (a block) in
        the task, so the rows of the input are never all held at once."""
        import ray
        from ray.data.block import BlockMetadata
        from ray.data.datasource import Datasource, ReadTask

        unknown = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
        tasks = [ReadTask(functools.partial(_read_part, fn, piece, i, tuple(a)), unknown)
                 for i, (piece, a) in enumerate(zip(pieces, args, strict=True))]

        class Parts(Datasource):
            def estimate_inmemory_data_size(self) -> None:
                return None

            def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                               data_context: Any = None) -> list[ReadTask]:
                return tasks

        return ray.data.read_datasource(Parts(), override_num_blocks=max(len(tasks), 1))

    def map(self, data: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn` on each block of the dataset, lazily."""
        return data.map_batches(fn, fn_args=args, batch_size=None, batch_format="pyarrow", zero_copy_batch=True)

    def exchange(self, data: Any, key: str, fn: Callable[..., Any], *args: Any, partitions: int) -> Any:
        """Ray Data's hash shuffle on `key`, then `fn` on each partition (lazily)."""
        # The reduce of a keyed repartition emits each partition as one block, and batch_size=None
        # hands a whole block to `fn` (what `GroupedData.map_groups` relies on too).
        return self.map(data.repartition(partitions, keys=[key]), fn, *args)

    def union(self, *data: Any) -> Any:
        """The datasets' rows together, lazily."""
        return data[0].union(*data[1:])

    def materialize(self, data: Any) -> Any:
        """The dataset computed into the object store."""
        return data.materialize()

    def collect(self, data: Any) -> list[Any]:
        """The dataset's blocks, fetched here."""
        return self.get(data.to_arrow_refs())

    def count(self, data: Any) -> int:
        """The rows of a materialized dataset, from its blocks' metadata."""
        return data.count()

    def route(self, data: Any, key: str, *, partitions: int) -> dict[int, Any]:
        """One hash shuffle on `key`; a small task per partition lists the values it holds."""
        refs = data.repartition(partitions, keys=[key]).materialize().to_arrow_refs()
        values = self.get([self.call(distinct_ints, ref, key) for ref in refs])
        return {v: ref for ref, held in zip(refs, values, strict=True) for v in held}


def _read_part(fn: Callable[..., Any], piece: Any, index: int, args: tuple) -> list[Any]:
    """The one block of a `map_pieces` read task: `fn` on the piece, refs among the arguments fetched."""
    import ray

    def fetch(value: Any) -> Any:
        return ray.get(value) if isinstance(value, ray.ObjectRef) else value

    return [fn(read_piece(fetch(piece)), index, *[fetch(a) for a in args])]
