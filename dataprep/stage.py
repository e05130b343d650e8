"""The stage API: what every built-in and user stage implements.

A stage is plain Python: `process_batch` takes and returns a `pyarrow.Table`, so a
unit test calls it on a tiny table without Ray. The runner does batching,
counting, error isolation and the rejects ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from dataprep.executor import Executor


class NoParams(BaseModel):
    """Options of a stage that takes none."""

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
    is retried row by row, and the rows that still raise become `error:` rejections.
    """

    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type[BaseModel]] = NoParams
    resources: ClassVar[Resources] = Resources()
    batch_size: ClassVar[int] = 16
    # True when one input row may become several output rows (scene split).
    expands: ClassVar[bool] = False

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def setup(self) -> None:
        """Load what the stage needs once per worker (models, binaries)."""

    def worker_threads(self, override: int | None = None) -> int:
        """Threads one worker may use: `override`, else the CPUs its resources give (at least 1).

        ffmpeg and decoders use every core unless told; several workers per node must not
        each take all of them.
        """
        return override or max(1, int(round(self.resources.cpus)))

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Return `batch` with this stage's `writes` columns added or replaced."""
        raise NotImplementedError(f"stage {self.name!r} must implement process_batch")

    @classmethod
    def needs_actor(cls) -> bool:
        """Whether workers must be long-lived: the stage loads state in setup() or uses GPUs."""
        return cls.setup is not Stage.setup or cls.resources.gpus > 0


class Filter(Stage):
    """A stage that scores every row (scores are always recorded) and keeps some.

    `process_batch` adds the score columns named in `writes`; `keep` decides.
    """

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Filters that only read existing columns need not add any."""
        return batch

    def keep(self, batch: pa.Table) -> tuple[np.ndarray, list[str | None]]:
        """Return a boolean keep mask and, per row, the reason it is dropped (None if kept)."""
        raise NotImplementedError(f"filter {self.name!r} must implement keep")

    @classmethod
    def score_columns(cls) -> tuple[str, ...]:
        """Columns recorded as scores in the ledger for a dropped row."""
        return cls.writes or cls.reads


class GlobalStage:
    """A step that needs all rows at once (deduplication).

    `run` returns the dataset with every row, with `_reject` set on the rows to
    remove (and `_duplicate_of` naming the kept row, for duplicates). It spreads its
    work through the `Executor` it is given, so the stage itself never imports Ray.
    """

    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type[BaseModel]] = NoParams
    resources: ClassVar[Resources] = Resources()
    batch_size: ClassVar[int] = 1024
    expands: ClassVar[bool] = False

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def run(self, ds: Any, executor: Executor) -> Any:
        """Take and return a dataset (a `ray.data.Dataset` under the runner, a table under `LocalExecutor`)."""
        raise NotImplementedError(f"global stage {self.name!r} must implement run")


class Source:
    """The first stage of a job: lists the input as rows with `key` and `source`.

    Listing happens on the driver and yields only small columns (URIs, captions);
    media is read by later stages on the workers.
    """

    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ("key", "source")
    Params: ClassVar[type[BaseModel]] = NoParams
    expands: ClassVar[bool] = False

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def read(self, uri: str) -> Iterator[pa.Table]:
        """Yield tables of rows for the input at `uri`."""
        raise NotImplementedError(f"source {self.name!r} must implement read")
