"""Plugin stages for benchmarks/bench_models.py: a source of prepared rows, and the model stages with a timing log.

    plugins: [models_bench_data]      # with benchmarks/ on PYTHONPATH (bench_models.py puts it there)
    stages:
      - stage: bench_rows
        columns: [media_type, frames]
      - stage: clip_embed              # this module's timed clip_embed, which replaces the built-in one

`bench_rows` lists a Parquet file of rows already holding what the model stage reads (frames,
embeddings, clips), so the job is the source, the model stage and the sink, and nothing before
the model stage shares the CPUs with it. Each timed stage is the built-in stage, unchanged, with
a log: every event (setup start and end, batch start, batch end) is one JSON line of wall time
(`time.time()`, comparable with the driver's) and this process's CPU time, in the folder named
by $DATAPREP_BENCH_TIMINGS. A batch's row keys are logged, so the bare loop can run the same batches.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from dataprep import columns
from dataprep.stage import Source, StageParams
from dataprep.stages.models.clip import ClipEmbed
from dataprep.stages.models.clip_similarity import ClipSimilarityFilter
from dataprep.stages.models.heads import AestheticFilter
from dataprep.stages.models.text_encoders import TextEmbed
from dataprep.stages.models.vae import VaeLatents
from dataprep.stages.models.vlm import VlmCaption

TIMINGS_ENV = "DATAPREP_BENCH_TIMINGS"
# Shard members of the prepared columns, as the stages that make them in a real job declare them.
_MEMBERS = {"frames": "frames.jpg", "clip_embedding": "clip_embedding.npy"}


class BenchRowsParams(StageParams):
    """Options of `bench_rows`."""

    columns: list[str] = Field(
        default_factory=list, description="Columns the rows of the Parquet file carry besides key and source "
        "(names), declared so the plan lets the model stage read them. Default none.")


class BenchRows(Source):
    """Lists the rows of a Parquet file as they are, every column kept."""

    name = "bench_rows"
    Params = BenchRowsParams

    def __init__(self, params: StageParams | None = None, **options: Any) -> None:
        super().__init__(params, **options)
        self.writes = (columns.KEY, columns.SOURCE, *self.params.columns)
        self.members = {c: m for c, m in _MEMBERS.items() if c in self.writes}

    def read(self, uri: str) -> Iterator[pa.Table]:
        """The whole file as one table: a benchmark input is small."""
        import pyarrow.parquet as pq

        yield pq.read_table(uri)


class _Timed:
    """Logs the wall and CPU time of `setup` and of every batch (`process_batch`, then `reasons` for a filter)."""

    name: ClassVar[str]

    def setup(self) -> None:
        """Open the log, then load the model as the stage does."""
        self._batch = 0
        path = Path(os.environ[TIMINGS_ENV]) / f"{self.name}-{os.getpid()}.jsonl"
        self._log = path.open("a", encoding="utf-8")  # noqa: SIM115 - open from setup() to teardown()
        self._event("setup_start")
        super().setup()  # type: ignore[misc]
        self._event("setup_end")

    def teardown(self) -> None:
        """Release the model, then close the log."""
        super().teardown()  # type: ignore[misc]
        self._log.close()

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """The stage's own `process_batch`, between a start and an end event."""
        self._batch += 1
        keys = batch.column(columns.KEY).to_pylist()
        self._event("start", keys=keys)
        out = super().process_batch(batch)  # type: ignore[misc]
        self._event("end")
        return out

    def reasons(self, batch: pa.Table) -> list[str | None]:
        """A filter's decisions belong to its batch: the batch ends after them."""
        out = super().reasons(batch)  # type: ignore[misc]
        self._event("end")
        return out

    def _event(self, kind: str, **extra: Any) -> None:
        # Times first: writing the line is the only work the log adds inside a batch.
        record = {"t": time.time(), "cpu": time.process_time(), "event": kind, "batch": self._batch,
                  "pid": os.getpid(), **extra}
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()


class TimedClipEmbed(_Timed, ClipEmbed):
    """clip_embed with a timing log."""

    name = "clip_embed"


class TimedAestheticFilter(_Timed, AestheticFilter):
    """aesthetic_filter with a timing log."""

    name = "aesthetic_filter"


class TimedClipSimilarityFilter(_Timed, ClipSimilarityFilter):
    """clip_similarity_filter with a timing log."""

    name = "clip_similarity_filter"


class TimedTextEmbed(_Timed, TextEmbed):
    """text_embed with a timing log."""

    name = "text_embed"


class TimedVaeLatents(_Timed, VaeLatents):
    """vae_latents with a timing log."""

    name = "vae_latents"


class TimedVlmCaption(_Timed, VlmCaption):
    """vlm_caption with a timing log."""

    name = "vlm_caption"


def read_events(folder: Path, stage: str) -> list[dict[str, Any]]:
    """Every event the timed `stage` logged under `folder`, in time order."""
    events = [json.loads(line) for path in sorted(folder.glob(f"{stage}-*.jsonl"))
              for line in path.read_text().splitlines() if line]
    return sorted(events, key=lambda e: e["t"])
