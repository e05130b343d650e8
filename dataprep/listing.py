"""Listing a run's input and finding the rows it still has to do.

Small inputs are listed and anti-joined in the driver without starting Ray. Large ones are
listed page by page (or read by the workers, for a source with `page_reads`), cut into hash
buckets, and anti-joined on Ray against the committed keys of the same buckets (`dataprep.resume`);
the driver holds handles, never the rows.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dataprep import columns, resume, storage
from dataprep.arrow import ensure_reject_column
from dataprep.executor import LocalExecutor
from dataprep.plan import Plan, PlannedStage
from dataprep.ray_executor import RayExecutor
from dataprep.ray_init import init_ray
from dataprep.stage_task import sanitize_keys

log = logging.getLogger(__name__)

# A listing up to this many rows is anti-joined in this process, without starting Ray: a rerun of a
# small job stays instant. A larger one goes to Ray tasks as it is listed, in hash buckets.
LOCAL_ROWS = 50_000
# Rows per bucket of a large listing: ~50 MB of listed rows and committed keys per anti-join task.
BUCKET_ROWS = 300_000
# Listing pages handed to workers and not yet turned into rows, at most.
LISTING_IN_FLIGHT = 16
# Listing pages cut into buckets by one task: fewer tasks and handles, each still a few MB.
PAGES_PER_SPLIT = 16
# Rows per listing task when the workers read the input themselves (a source's `page_reads`): ~40 MB of rows.
READ_ROWS = 250_000


def _listed_rows(page: pa.Table, source: PlannedStage, output: str) -> pa.Table:
    """One page of the source's listing as rows with safe keys, outside the output folder."""
    listed = source.instantiate()
    table = listed.rows(page) if hasattr(listed, "rows") else page
    # An output folder inside the input folder must not be read back as input.
    table = table.filter(pc.invert(_under(output)(table.column(columns.SOURCE))))
    return sanitize_keys(ensure_reject_column(table))


def _source_pages(plan: Plan) -> Any:
    """The source's listing, page by page, as the source lists it (`pages` when it has them, else `read`)."""
    source = plan.source.instantiate()
    pages = source.pages if hasattr(source, "pages") else source.read
    return pages(plan.config.input)


def _read_split(read: Any, source: PlannedStage, output: str, buckets: int) -> list[pa.Table]:
    """The listed rows of one of the source's `page_reads`, read on this worker and cut into hash buckets."""
    return resume.split(_listed_rows(source.instantiate().read_page(read), source, output), buckets)


@dataclass
class Todo:
    """The rows a run still has to process, as handles of its executor, and what resume found."""

    executor: Any
    listed: list[list[Any]]  # per bucket, handles to its listed rows
    done: list[Any] = field(default_factory=list)  # per bucket, a handle to its done keys
    handles: list[Any] = field(default_factory=list)  # per bucket, a handle to its rows to do
    outcome: resume.Outcome = field(default_factory=resume.Outcome)
    conflicts: list[list[str]] = field(default_factory=list)
    records: list[str] | None = None  # the commit records `done` was read from

    @property
    def buckets(self) -> int:
        return len(self.listed)

    def refresh(self, output: str) -> None:
        """Read what is committed and anti-join the listing against it (again only if the records changed)."""
        records = resume.record_files(output)
        if records == self.records:
            return
        self.records = records
        mark = time.monotonic()
        if records:
            self.done, self.conflicts = resume.committed_buckets(self.executor, output, self.buckets)
        else:  # nothing committed: every listed row is new, no task needed to find out
            self.done, self.conflicts = [], []
        self.handles, self.outcome = resume.anti_join(self.executor, self.listed, self.done, dedupe=True)
        log.debug("%d commit records read and anti-joined in %d buckets in %.2f s", len(records), self.buckets,
                  time.monotonic() - mark)
        if self.outcome.duplicates:
            log.warning("ingest: %d listed URIs appeared more than once; each is processed once",
                        self.outcome.duplicates)


def list_todo(plan: Plan, *, address: str | None, progress: bool, verbose: bool) -> Todo:
    """List the source (in this process when small, on Ray page by page when large) and anti-join it.

    A source that can cut its input into reads (`page_reads`: a Parquet manifest, by row group)
    has the workers read it: the driver sends each task a few hundred bytes, never rows.
    """
    source_stage = plan.source.instantiate()
    reads = source_stage.page_reads(plan.config.input, READ_ROWS) if hasattr(source_stage, "page_reads") else None
    if reads is not None and sum(r.rows for r in reads) > LOCAL_ROWS:
        executor, source, cpus = _on_ray(plan, address=address, progress=progress, verbose=verbose)
        buckets = _buckets(sum(r.rows for r in reads), cpus)
        listed: list[list[Any]] = [[] for _ in range(buckets)]
        for read in reads:
            for b, handle in enumerate(executor.call(_read_split, read, source, plan.config.output, buckets,
                                                     num_returns=buckets)):
                listed[b].append(handle)
        todo = Todo(executor, listed)
        todo.refresh(plan.config.output)
        return todo
    pages = iter(_source_pages(plan))
    first: list[pa.Table] = []
    rows = 0
    for page in pages:
        first.append(page)
        rows += page.num_rows
        if rows > LOCAL_ROWS:
            break
    output = plan.config.output
    if rows <= LOCAL_ROWS:
        listed = [_listed_rows(page, plan.source, output) for page in first]
        todo = Todo(LocalExecutor(), [listed])
    else:
        executor, source, cpus = _on_ray(plan, address=address, progress=progress, verbose=verbose)
        mark = time.monotonic()
        # Rows are made on the workers while the driver reads the next page.
        handles, rows = [], 0
        for page in itertools.chain(first, pages):
            if len(handles) >= LISTING_IN_FLIGHT:
                # Backpressure: a page waits in the object store until its task runs, so the driver
                # reads ahead at most this many pages instead of the whole input.
                executor.wait(handles[-LISTING_IN_FLIGHT:-LISTING_IN_FLIGHT + 1])
            handles.append(executor.call(_listed_rows, page, source, output))
            rows += page.num_rows
        log.debug("listed %d rows in %d pages in %.2f s", rows, len(handles), time.monotonic() - mark)
        groups = [handles[i:i + PAGES_PER_SPLIT] for i in range(0, len(handles), PAGES_PER_SPLIT)]
        todo = Todo(executor, resume.split_pages(executor, groups, _buckets(rows, cpus)))
    todo.refresh(output)
    return todo


def _on_ray(plan: Plan, *, address: str | None, progress: bool, verbose: bool) -> tuple[RayExecutor, Any, int]:
    """Ray started or joined for a large listing: its executor, the source stage in its object store, its CPUs."""
    cpus = init_ray(plan, address=address, progress=progress, verbose=verbose)
    # Thousands of listing and anti-join calls: without retries Ray frees each one's pages once it ran.
    executor = RayExecutor(retries=0)
    return executor, executor.put(plan.source), cpus


def _buckets(rows: int, cpus: int) -> int:
    """Hash buckets of a large listing: at least four per CPU (each is a block of the pipeline, and every CPU
    needs work), else about `BUCKET_ROWS` rows each."""
    return min(256, max(4 * cpus, -(-rows // BUCKET_ROWS)))


def _under(folder: str) -> Any:
    """A predicate on an array of URIs: is each inside `folder`? (Links are resolved once per directory.)"""
    if storage.is_s3(folder):
        prefix = folder.rstrip("/") + "/"
        return lambda uris: pc.fill_null(pc.starts_with(uris, prefix), False)
    root = os.path.realpath(storage.local_path(folder)) + os.sep

    def inside(uris: Any) -> pa.Array:
        local = pc.replace_substring_regex(uris, "^file://", "")
        folders = pc.if_else(pc.match_substring(local, "/"), pc.replace_substring_regex(local, "/[^/]*$", ""), ".")
        distinct = pc.unique(folders)
        real = pa.array([not storage.is_s3(d) and (os.path.realpath(d or "/") + os.sep).startswith(root)
                         for d in distinct.to_pylist()], pa.bool_())
        return pc.fill_null(pc.take(real, pc.index_in(folders, value_set=distinct)), False)

    return inside
