"""The stage API: what every built-in and user stage implements.

A stage is plain Python: `process_batch` takes and returns a `pyarrow.Table`, so a
unit test calls it on a tiny table without Ray. The runner does batching,
counting, error isolation and the rejects ledger.

    Stage           adds columns (process_batch)
    ├── Filter      scores rows and returns one reason per row (None keeps it)
    ├── GlobalStage sees every row at once (run(ds, executor)): deduplication
    └── Source      lists the input (read(uri)): the first stage of a job
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from dataprep import columns
from dataprep.errors import Rejected, row_error

if TYPE_CHECKING:
    import pyarrow as pa

    from dataprep.executor import Executor

RowResult = dict[str, Any]


class StageParams(BaseModel):
    """Base of every stage's options: an unknown option is an error, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs: CPU cores, GPUs and memory in bytes."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int | None = None


class Stage:
    """A row-wise step: adds the columns in `writes`, given the columns in `reads`.

    Set a row's reserved `_reject` column (see `dataprep.columns`) to a reason to
    remove it; the runner moves it to the ledger. An exception raised for a batch
    is retried row by row, and the rows that still raise become `error:` rejections,
    unless its type is listed in `fatal`: then the job fails with its message.
    """

    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    # Column -> shard member suffix ("latent" -> "latent.npy"); columns not named take the sink's defaults.
    members: ClassVar[dict[str, str]] = {}
    Params: ClassVar[type[StageParams]] = StageParams
    resources: Resources = Resources()
    batch_size: ClassVar[int] = 16
    # True when one input row may become several output rows (scene split).
    expands: ClassVar[bool] = False
    # Exceptions that fail the job instead of rejecting a row: a lost GPU would reject every row after it.
    # Classes, or dotted names ("torch.cuda.OutOfMemoryError") so a stage need not import torch to name one.
    fatal: ClassVar[tuple[type[BaseException] | str, ...]] = ()
    # Throughputs for summary.json: name -> (amount column, seconds column), summed over kept rows
    # (e.g. {"vlm_output_tokens_per_s": ("vlm_output_tokens", "vlm_seconds")}).
    rates: ClassVar[dict[str, tuple[str, str]]] = {}
    # External programs the stage runs ("ffmpeg"): the runner finds each, and logs which, before any work.
    tools: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: StageParams | None = None, **options: Any) -> None:
        if params is not None and options:
            raise TypeError(f"stage {self.name!r}: pass either a Params instance or options, not both")
        self.params = params if params is not None else self.Params(**options)

    def setup(self) -> None:
        """Load what the stage needs once per worker (models, binaries); runs when the worker starts."""

    def teardown(self) -> None:
        """Release what `setup` loaded; runs when the worker ends."""

    def preflight(self) -> list[str]:
        """Problems that would fail every row (a missing model, a missing file), found before any work.

        Runs on the driver when the plan is built; each problem names what is missing and the fix.
        """
        return []

    def tiny_params(self, cache_dir: str) -> StageParams:
        """These options with every model swapped for a tiny random one built under `cache_dir`.

        For trying a job offline (`dataprep run --tiny-models`); stages without models keep their options.
        """
        return self.params

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Return `batch` with this stage's `writes` columns added or replaced."""
        raise NotImplementedError(f"stage {self.name!r} must implement process_batch")

    def worker_threads(self, override: int | None = None) -> int:
        """Threads one worker may use: `override`, else the CPUs its resources give (at least 1).

        ffmpeg and decoders use every core unless told; several workers per node must not
        each take all of them.
        """
        return override or max(1, int(round(self.resources.cpus)))

    def is_fatal(self, exc: BaseException) -> bool:
        """Whether `exc` must fail the job rather than reject a row."""
        names = {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}
        return any(f in names if isinstance(f, str) else isinstance(exc, f) for f in self.fatal)

    @classmethod
    def needs_actor(cls) -> bool:
        """Whether workers must be long-lived: the stage loads state in setup() or uses GPUs."""
        return cls.setup is not Stage.setup or cls.resources.gpus > 0

    def map_rows(
        self, batch: pa.Table, fn: Callable[[dict[str, Any]], RowResult | list[RowResult]], *, fields: pa.Schema,
    ) -> pa.Table:
        """Apply `fn` to every row (a dict of the batch's columns) and set the `fields` it returns.

        `fn` returns a dict of field values, or, for a stage that `expands`, a list of dicts: one
        output row each, with the input row's other columns. A field `fn` leaves out keeps its value.
        A row whose `fn` raises stays once, rejected: with the message of `Rejected`, else
        `error:<Type>: message`. Exceptions in `fatal` propagate.
        """
        rows = batch.to_pylist()
        return self._assemble(batch, [self._guard(fn, row) for row in rows], fields)

    def map_groups(
        self, batch: pa.Table, fn: Callable[[list[dict[str, Any]]], list[list[RowResult] | BaseException]], *,
        by: str, fields: pa.Schema,
    ) -> pa.Table:
        """Like `map_rows` for a stage that `expands`, but `fn` gets all rows with one value of `by` at once.

        `fn` returns, per row it was given, that row's output rows or the exception that rejects it
        (one ffmpeg run cuts every scene of a source). If `fn` itself raises, every row of the group is rejected.
        """
        rows = batch.to_pylist()
        groups: dict[Any, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            groups[row.get(by)].append(i)
        results: list[Any] = [None] * len(rows)
        for indices in groups.values():
            group = self._guard(fn, [rows[i] for i in indices])
            for n, i in enumerate(indices):
                results[i] = group if isinstance(group, BaseException) else group[n]
        return self._assemble(batch, results, fields)

    def _guard(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        try:
            return fn(arg)
        except Exception as exc:  # one row's failure is that row's, unless the stage calls it fatal
            if self.is_fatal(exc):
                raise
            return exc

    def _assemble(self, batch: pa.Table, results: Sequence[Any], fields: pa.Schema) -> pa.Table:
        import pyarrow as pa

        from dataprep import arrow

        take: list[int] = []
        values: dict[str, list[Any]] = {f.name: [] for f in fields}
        reasons: list[str | None] = []
        existing = {f.name: arrow.column_or_none(batch, f.name) for f in fields}
        for i, result in enumerate(results):
            if isinstance(result, BaseException):
                result = [{columns.REJECT: str(result) if isinstance(result, Rejected) else row_error(result)}]
            elif isinstance(result, dict):
                result = [result]
            for out in result:
                take.append(i)
                reasons.append(out.get(columns.REJECT))
                for f in fields:
                    values[f.name].append(out[f.name] if f.name in out else existing[f.name][i])
        table = batch.take(pa.array(take, type=pa.int64())) if len(take) != batch.num_rows or \
            take != list(range(batch.num_rows)) else batch
        for f in fields:
            table = arrow.put(table, f.name, values[f.name], f.type)
        return arrow.set_rejects(table, reasons)


class Filter(Stage):
    """A stage that scores every row and keeps some.

    `process_batch` adds the score columns named in `writes` (recorded for every row:
    in the manifest when kept, in the ledger when dropped); `reasons` decides, one
    reason per row, None to keep it. The runner derives the mask.
    """

    # Columns recorded with a dropped row; None: `writes`, or `reads` when the filter writes nothing.
    scores: ClassVar[tuple[str, ...] | None] = None

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Filters that only read existing columns need not add any."""
        return batch

    def reasons(self, batch: pa.Table) -> list[str | None]:
        """Per row, why it is dropped (`code:detail`), or None to keep it."""
        raise NotImplementedError(f"filter {self.name!r} must implement reasons")

    @classmethod
    def score_columns(cls) -> tuple[str, ...]:
        """Columns recorded as scores in the ledger for a dropped row."""
        return cls.scores if cls.scores is not None else (cls.writes or cls.reads)


class GlobalStage(Stage):
    """A step that needs all rows at once (deduplication).

    `run` returns the dataset with every row, with `_reject` set on the rows to
    remove (and `_duplicate_of` naming the kept row, for duplicates). It spreads its
    work through the `Executor` it is given, so the stage itself never imports Ray.
    The runner refuses `batch_size`, `concurrency` and `resources` for it: its
    executor decides how its work is spread.
    """

    batch_size: ClassVar[int] = 1024
    # True when `run` reaches its rows only through the executor, so it runs on a table too: the runner then
    # runs a small segment (at most `ray.small_global_mb`) as one task with `LocalExecutor`, without the
    # cluster's shuffles, whose start-up is most of a stage's time on a few thousand rows.
    one_task_when_small: ClassVar[bool] = False

    def run(self, ds: Any, executor: Executor) -> Any:
        """Take and return a dataset (a `ray.data.Dataset` under the runner, a table under `LocalExecutor`,
        also under the runner for a small segment when `one_task_when_small`)."""
        raise NotImplementedError(f"global stage {self.name!r} must implement run")


class Source(Stage):
    """The first stage of a job: lists the input as rows with `key` and `source`.

    Listing happens on the driver and yields only small columns (URIs, captions);
    media is read by later stages on the workers.
    """

    writes: ClassVar[tuple[str, ...]] = (columns.KEY, columns.SOURCE)

    def read(self, uri: str) -> Iterator[pa.Table]:
        """Yield tables of rows for the input at `uri`."""
        raise NotImplementedError(f"source {self.name!r} must implement read")
