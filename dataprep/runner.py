"""Running a validated plan on Ray Data, streaming from the source to the WebDataset sink.

With the config's stages A, B, [G], C: rows are listed page by page, anti-joined against
what is committed by hash bucket (`dataprep.listing`, `dataprep.resume`), then flow
through A and B as Ray Data map operators (tasks, or actor pools for stages that
load models or need GPUs), are written as Parquet before the global stage G (so
a rerun resumes from there), and reach the sink, which commits whole shards.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dataprep import columns, commit, job_record, noop, owner, paths, resume, storage
from dataprep.actor_pools import actor_cpu_share, actor_pool, batch_rows, remote_args
from dataprep.arrow import concat, split_rejects
from dataprep.errors import ConfigError, FatalStageError
from dataprep.executor import LocalExecutor, Segment
from dataprep.finalize import StageInfo, finalize
from dataprep.global_run import run_global
from dataprep.listing import Todo, list_todo
from dataprep.liveness import LiveExecutor, Watchdog, task_label
from dataprep.plan import Plan, PlannedStage
from dataprep.progress import CountedStageTask, ProgressView, Tally, report
from dataprep.ray_executor import RayExecutor
from dataprep.ray_init import init_ray
from dataprep.shard_datasink import make_datasink, on_driver_node
from dataprep.stage_task import record_rejects

log = logging.getLogger(__name__)


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


# Seconds the watchdog waits for the progress tally's answer: it answers in milliseconds unless its node is gone.
PULSE_TIMEOUT = 10.0


def _record_source_rejects(table: pa.Table, source: PlannedStage, output: str, token: str) -> pa.Table:
    """The rows to process; the source's own rejections go to the ledger."""
    todo, rejected = split_rejects(table)
    record_rejects(rejected, source, output, token=token)
    return todo


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
    found = storage.sizes(folder)
    files = tuple(sorted(uri for uri in found if uri.endswith(".parquet")))
    return Segment(folder, files, sum(found[uri] for uri in files)) if files else None


def check_tools(plan: Plan) -> list[str]:
    """Find every external program the plan's stages run; a missing one is a ConfigError before any work."""
    from dataprep import ffmpeg

    finders = {"ffmpeg": ffmpeg.ffmpeg_description}
    needed = sorted({tool for p in plan.stages for tool in p.cls.tools})
    unknown = [t for t in needed if t not in finders]
    if unknown:
        raise ConfigError([f"stages need the programs {unknown}, which dataprep cannot locate; known: {sorted(finders)}"])
    return [finders[tool]() for tool in needed]


def _pipeline(ds: Any, plan: Plan, output: str, token: str, todo: Todo | None, cpus: int, *,
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
            ds = run_global(planned, segment, executor, small_mb=plan.config.ray.small_global_mb)
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


def _not_done(ds: Any, todo: Todo) -> Any:
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
        todo = Todo(LocalExecutor(), []) if skipped else list_todo(plan, address=address, progress=progress,
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


def _execute(plan: Plan, todo: Todo, token: str, *, address: str | None, progress: bool, verbose: bool) -> None:
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
