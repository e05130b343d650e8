"""Running a validated plan on Ray Data, streaming from the source to the WebDataset sink.

With the config's stages A, B, [G], C: rows are listed page by page, anti-joined against
what is committed by hash bucket (`dataprep.resume`), then flow
through A and B as Ray Data map operators (tasks, or actor pools for stages that
load models or need GPUs), are written as Parquet before the global stage G (so
a rerun resumes from there), and reach the sink, which commits whole shards.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dataprep import columns, commit, job_record, noop, owner, paths, resume, storage
from dataprep.actor_pools import actor_cpu_share, actor_pool, batch_rows, remote_args
from dataprep.arrow import concat, ensure_reject_column, split_rejects
from dataprep.errors import ConfigError, FatalStageError
from dataprep.executor import LocalExecutor, Segment
from dataprep.finalize import StageInfo, finalize
from dataprep.liveness import LiveExecutor, Watchdog, task_label
from dataprep.plan import Plan, PlannedStage
from dataprep.progress import CountedStageTask, ProgressView, Tally, report
from dataprep.ray_executor import RayExecutor, embedded_ray_env
from dataprep.shard_datasink import make_datasink, on_driver_node
from dataprep.stage_task import record_rejects, sanitize_keys

log = logging.getLogger(__name__)
# Ray binds to 127.0.0.1 instead of the machine's address when this is "0" (a single-node cluster).
LOOPBACK_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass
class RunResult:
    """What a run did."""

    output: str
    new_rows: int
    wall_seconds: float
    summary: dict[str, Any]


def stage_infos(plan: Plan) -> list[StageInfo]:
    """Name, position and splitting of each stage, for the funnel."""
    return [StageInfo(p.index, p.name, p.cls.expands, dict(p.cls.rates)) for p in plan.all_stages]


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
# Seconds the watchdog waits for the progress tally's answer: it answers in milliseconds unless its node is gone.
PULSE_TIMEOUT = 10.0


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


def _record_source_rejects(table: pa.Table, source: PlannedStage, output: str, token: str) -> pa.Table:
    """The rows to process; the source's own rejections go to the ledger."""
    todo, rejected = split_rejects(table)
    record_rejects(rejected, source, output, token=token)
    return todo


@dataclass
class _Todo:
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


def _list_todo(plan: Plan, *, address: str | None, progress: bool, verbose: bool) -> _Todo:
    """List the source (in this process when small, on Ray page by page when large) and anti-join it.

    A source that can cut its input into reads (`page_reads`: a Parquet manifest, by row group)
    has the workers read it: the driver sends each task a few hundred bytes, never rows.
    """
    source_stage = plan.source.instantiate()
    reads = source_stage.page_reads(plan.config.input, READ_ROWS) if hasattr(source_stage, "page_reads") else None
    if reads is not None and sum(r.rows for r in reads) > LOCAL_ROWS:
        cpus = init_ray(plan, address=address, progress=progress, verbose=verbose)
        executor = RayExecutor(retries=0)
        source = executor.put(plan.source)
        buckets = _buckets(sum(r.rows for r in reads), cpus)
        listed: list[list[Any]] = [[] for _ in range(buckets)]
        for read in reads:
            for b, handle in enumerate(executor.call(_read_split, read, source, plan.config.output, buckets,
                                                     num_returns=buckets)):
                listed[b].append(handle)
        todo = _Todo(executor, listed)
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
        todo = _Todo(LocalExecutor(), [listed])
    else:
        cpus = init_ray(plan, address=address, progress=progress, verbose=verbose)
        mark = time.monotonic()
        # Thousands of listing and anti-join calls: without retries Ray frees each one's pages once it ran.
        executor = RayExecutor(retries=0)
        source = executor.put(plan.source)
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
        todo = _Todo(executor, resume.split_pages(executor, groups, _buckets(rows, cpus)))
    todo.refresh(output)
    return todo


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


def _block_rows(rows: int, cpus: int) -> int:
    """Rows per block of the listing: about four blocks per CPU, so every CPU gets work from the start."""
    return max(1, min(1000, rows // max(1, cpus * 4)))


def _blocks(table: pa.Table, rows: int) -> list[pa.Table]:
    """Cut the listing into blocks of `rows` rows."""
    return [table.slice(i, rows) for i in range(0, table.num_rows, rows)]


def _drop_keys(batch: pa.Table, keys: frozenset[str]) -> pa.Table:
    """The rows of `batch` whose keys are not in `keys`."""
    present = batch.column(columns.KEY).to_pylist()
    return batch.filter(pa.array([k not in keys for k in present]))


def _task_fn(planned: PlannedStage) -> Any:
    """A map function named after the stage, so Ray's progress shows stage names."""

    def run(batch: pa.Table, planned: PlannedStage, output: str, token: str, tally: Any) -> pa.Table:
        task = CountedStageTask(planned, output, token, tally, task_label)
        try:
            return task(batch)
        finally:
            task.close()

    run.__name__ = run.__qualname__ = planned.name
    return run


def _record_global_rejects(batch: pa.Table, planned: PlannedStage, output: str, token: str, tally: Any) -> pa.Table:
    kept, rejected = split_rejects(batch)
    record_rejects(rejected, planned, output, token=token)
    report(tally, planned.name, batch.num_rows, kept.num_rows, rejected.num_rows)
    return kept


def _apply_stage(ds: Any, planned: PlannedStage, output: str, token: str, cpus: int, *,
                 max_batch: int, tally: Any, actor_share: float = 1.0) -> Any:
    import ray.data

    # Arrow tables are immutable, so Ray Data's copy of every batch (made so a numpy batch is writable) buys nothing.
    common = {"batch_size": batch_rows(planned, max_batch), "batch_format": "pyarrow", "zero_copy_batch": True,
              **remote_args(planned)}
    if planned.cls.needs_actor() or planned.resources.gpus:
        common["num_cpus"] = planned.resources.cpus * actor_share
        return ds.map_batches(CountedStageTask, fn_constructor_args=(planned, output, token, tally, task_label),
                              compute=actor_pool(planned, cpus), **common)
    if planned.concurrency:
        common["compute"] = ray.data.TaskPoolStrategy(size=planned.concurrency)
    return ds.map_batches(_task_fn(planned), fn_args=(planned, output, token, tally), **common)


def _segment(ds: Any, output: str, index: int) -> Segment | None:
    """Write the rows entering a global stage as Parquet files, or reuse them if a previous run finished that.

    The stage gets them as `executor.read(segment)`: a dataset whose pieces are these files. None when
    no row reached it (every row was rejected before): nothing is left to run.
    """
    folder = paths.under(output, paths.segment_dir(index))
    marker = storage.join(folder, paths.SEGMENT_DONE)
    if not storage.exists(marker):
        for uri in storage.list_files(folder):
            storage.remove(uri)
        ds.write_parquet(folder, filesystem=storage.pyarrow_filesystem(folder))
        storage.write_atomic(marker, b"")
    files = tuple(uri for uri in storage.list_files(folder) if uri.endswith(".parquet"))
    return Segment(folder, files) if files else None


def _worker_env() -> dict[str, str]:
    """Environment variables every worker needs: the import path of plugins, the ffmpeg the driver chose."""
    paths_ = [os.getcwd(), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(p for p in paths_ if p))}
    # Workers must run the ffmpeg the driver chose and logged.
    env.update({k: os.environ[k] for k in ("DATAPREP_FFMPEG",) if k in os.environ})
    return env


def _quiet_ray_data(verbose: bool) -> None:
    """Show Ray Data's INFO and WARNING lines on the console only when verbose; its log file keeps them."""
    import ray.data  # noqa: F401 - importing it installs Ray Data's handlers

    level = logging.INFO if verbose else logging.ERROR
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(level)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Raise ConnectionError when nothing listens at a `HOST:PORT` or `ray://HOST:PORT` address.

    ray.init retries an address that does not answer for minutes; a wrong address should fail at once.
    `auto` (found from this machine's Ray) is left to ray.init.
    """
    import socket

    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port} ({exc})") from None


def _check_shared_paths(plan: Plan) -> None:
    """On a cluster, every node must see a local input and output as this driver does (before any work)."""
    from dataprep.shared_paths import unseen_problems

    problems = unseen_problems(plan.config.input, plan.config.output)
    if problems:
        import ray

        ray.shutdown()
        raise ConfigError(problems)


def init_ray(plan: Plan, *, address: str | None = None, progress: bool = True, verbose: bool = False) -> int:
    """Connect to `address` or start embedded Ray; returns the CPUs Ray has.

    Unless `verbose`, Ray's own INFO and WARNING lines are hidden (its errors still show),
    and so are Ray Data's progress bars: the run draws its own per stage.
    """
    address = address or plan.config.ray.address
    if not address:
        # Embedded Ray is one node: keep its ports on loopback instead of the machine's network address.
        os.environ.setdefault(LOOPBACK_ONLY_ENV, "0")
    else:
        _check_reachable(address)
    import ray

    _quiet_ray_data(verbose)
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"logging_level": logging.INFO if verbose else logging.ERROR}
        if address:
            kwargs.update(address=address, runtime_env={"env_vars": _worker_env()})
        else:
            # Embedded Ray's workers inherit the driver's environment. A runtime_env would make each
            # worker wait for the runtime-env agent instead of taking a prestarted one (3-6 s per run).
            os.environ.update(_worker_env())
            for name, value in embedded_ray_env(plan.config.ray.num_cpus or os.cpu_count() or 1).items():
                os.environ.setdefault(name, value)  # the global stages' shuffles keep their workers
            # "local" always starts a new instance: a `ray start` cluster on this machine is not ours to join.
            kwargs.update(address="local", num_cpus=plan.config.ray.num_cpus, include_dashboard=False)
        ray.init(**kwargs)
        if address:
            _check_shared_paths(plan)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress and verbose
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def check_tools(plan: Plan) -> list[str]:
    """Find every external program the plan's stages run; a missing one is a ConfigError before any work."""
    from dataprep import ffmpeg

    finders = {"ffmpeg": ffmpeg.ffmpeg_description}
    needed = sorted({tool for p in plan.stages for tool in p.cls.tools})
    unknown = [t for t in needed if t not in finders]
    if unknown:
        raise ConfigError([f"stages need the programs {unknown}, which dataprep cannot locate; known: {sorted(finders)}"])
    return [finders[tool]() for tool in needed]


def _pipeline(ds: Any, plan: Plan, output: str, token: str, todo: _Todo | None, cpus: int, *,
              max_batch: int, tally: Any, watchdog: Watchdog | None = None) -> Any | None:
    """The lazy dataset of every stage after the source; None when no row is left to reach the sink.

    `todo` tells what is committed: the rows a global stage reads back from a segment of a
    previous run are anti-joined against it again, and the clips of a partly committed
    video, made again by its split, are dropped. Under a `watchdog`, each call of a global
    stage that ends is progress.
    """
    partial = frozenset(todo.outcome.partial) if todo is not None else frozenset()
    share = actor_cpu_share(plan, cpus)
    for planned in plan.stages:
        if planned.is_global:
            segment = _segment(ds, output, planned.index)
            if segment is None:
                return None
            executor = RayExecutor() if watchdog is None else LiveExecutor(watchdog, planned.name)
            ds = planned.instantiate().run(executor.read(segment), executor)
            ds = ds.map_batches(_record_global_rejects, fn_args=(planned, output, token, tally),
                                batch_format="pyarrow", batch_size=None)
            if todo is not None and todo.done:
                ds = _not_done(ds, todo)
        else:
            ds = _apply_stage(ds, planned, output, token, cpus, max_batch=max_batch, tally=tally,
                              actor_share=share)
        if partial and planned.cls.expands:
            ds = ds.map_batches(_drop_keys, fn_args=(partial,), batch_format="pyarrow", batch_size=None)
    return ds


def _not_done(ds: Any, todo: _Todo) -> Any:
    """The rows of `ds` that are not committed, by the same hash buckets as the listing's anti-join."""
    executor = RayExecutor()
    parts = resume.split_pages(executor, [[block] for block in executor.blocks(ds)], todo.buckets)
    handles, _ = resume.anti_join(executor, parts, todo.done, dedupe=False)
    return executor.dataset(handles)


def run_plan(plan: Plan, *, address: str | None = None, progress: bool = True, verbose: bool = False) -> RunResult:
    """Run a validated plan into its output; resumes whatever a previous run committed.

    `progress` draws rows in, out and rejected per stage on stderr while it runs;
    `verbose` also shows Ray's own INFO and WARNING lines.
    """
    start = time.monotonic()
    output = plan.config.output
    try:
        job_record.check_output(plan)
    except OSError as exc:
        raise ConfigError([f"`output` {output!r} cannot be written ({exc}); fix: choose a folder you can write to"]) \
            from None
    try:
        state = noop.current(plan)  # before listing: what the listing and the anti-join below depend on
        skipped = noop.known(plan, state)
        todo = _Todo(LocalExecutor(), []) if skipped else _list_todo(plan, address=address, progress=progress,
                                                                     verbose=verbose)
    except (ValueError, OSError) as exc:  # the input cannot be listed as configured: the user's to fix
        raise ConfigError([f"`input` {plan.config.input!r}: {exc}"]) from None
    if todo.outcome.rows:
        check_tools(plan)
    token = None
    if todo.outcome.rows or todo.outcome.rejected or todo.conflicts or commit.has_orphans(output, superseded=False):
        token = owner.take_ownership(output)
        commit.clean_orphans(output, superseded=False)
        # Read again once this run owns the output: a worker of a killed run may have committed meanwhile.
        todo.refresh(output)
        if todo.conflicts:  # two records hold one key (a rare race of two runs): keep the latest run's
            commit.clean_orphans(output)
            todo.refresh(output)
        if todo.outcome.rejected:
            todo.handles = [todo.executor.call(_record_source_rejects, h, plan.source, output, token)
                            for h in todo.handles]
            todo.executor.wait(todo.handles)
    new_rows = todo.outcome.rows
    log.debug("listed, %d rows to do, in %.2f s%s", new_rows, time.monotonic() - start,
              " (nothing changed since a run that had nothing to do)" if skipped else "")
    if token is None and not skipped:  # nothing to do, nothing to clean: found with every row listed
        noop.remember(plan, state)
    if new_rows:
        _execute(plan, todo, token, address=address, progress=progress, verbose=verbose)
    mark = time.monotonic()
    summary = finalize(output, stage_infos(plan))
    log.debug("final files written in %.2f s", time.monotonic() - mark)
    return RunResult(output=output, new_rows=new_rows, wall_seconds=time.monotonic() - start, summary=summary)


def _execute(plan: Plan, todo: _Todo, token: str, *, address: str | None, progress: bool, verbose: bool) -> None:
    """Run the rows to do through every stage into the sink on Ray."""
    import ray

    mark = time.monotonic()
    cpus = init_ray(plan, address=address, progress=progress, verbose=verbose)
    log.debug("ray ready with %d CPUs in %.2f s", cpus, time.monotonic() - mark)
    mark = time.monotonic()
    total = todo.outcome.rows
    rows = _block_rows(total, cpus)
    if isinstance(todo.executor, LocalExecutor):
        ds = ray.data.from_arrow(_blocks(concat(todo.handles), rows))
    else:
        ds = ray.data.from_arrow_refs(todo.handles)
    stall = plan.config.ray.stall_timeout
    tally = ray.remote(num_cpus=0)(Tally).options(scheduling_strategy=on_driver_node()).remote() \
        if progress or stall else None
    view = (ProgressView([p.name for p in plan.stages], total, lambda: ray.get(tally.snapshot.remote()))
            if progress else contextlib.nullcontext())
    # A poll the tally does not answer in time counts as no progress; the next one asks again.
    watchdog = Watchdog(stall, lambda: ray.get(tally.pulse.remote(), timeout=PULSE_TIMEOUT)) if stall else None
    try:
        with view, watchdog or contextlib.nullcontext():
            ds = _pipeline(ds, plan, plan.config.output, token, todo, cpus, max_batch=rows, tally=tally,
                           watchdog=watchdog)
            if ds is not None:
                ds.write_datasink(make_datasink(plan, token, tally), ray_remote_args={"max_retries": 0})
    except Exception as exc:
        fatal = FatalStageError.find(exc)
        if fatal is None:
            raise
        raise fatal from None
    finally:
        if tally is not None:
            ray.kill(tally)
    log.debug("stages and sink done in %.2f s", time.monotonic() - mark)
