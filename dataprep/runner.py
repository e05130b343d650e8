"""Running a validated plan on Ray Data, streaming from the source to the WebDataset sink.

With the config's stages A, B, [G], C: rows are listed on the driver, then flow
through A and B as Ray Data map operators (tasks, or actor pools for stages that
load models or need GPUs), are written as Parquet before the global stage G (so
a rerun resumes from there), and reach the sink, which commits whole shards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dataprep import columns, commit, job_record, owner, paths, storage
from dataprep.arrow import concat, ensure_reject_column, split_rejects
from dataprep.errors import ConfigError, FatalStageError
from dataprep.finalize import StageInfo, finalize
from dataprep.members import declared_members
from dataprep.plan import Plan, PlannedStage
from dataprep.progress import CountedStageTask, ProgressView, Tally, report
from dataprep.ray_executor import RayExecutor
from dataprep.sink import ShardWriter
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


def _list_source(plan: Plan) -> pa.Table:
    """Every row the source lists, with safe keys, except files inside the output folder."""
    inside_output = _under(plan.config.output)
    tables = []
    for table in plan.source.instantiate().read(plan.config.input):
        # An output folder inside the input folder must not be read back as input.
        table = table.filter(pa.array([not inside_output(s) for s in table.column(columns.SOURCE).to_pylist()]))
        tables.append(sanitize_keys(ensure_reject_column(table)))
    return concat(tables) if tables else pa.table({columns.KEY: pa.array([], pa.string())})


def _new_rows(listed: pa.Table, committed: set[str]) -> tuple[pa.Table, pa.Table]:
    """(rows still to process, the source's own new rejections): what `committed` does not hold yet."""
    if committed and listed.num_rows:
        listed = listed.filter(pa.array([k not in committed for k in listed.column(columns.KEY).to_pylist()]))
    return split_rejects(listed)


def _under(folder: str) -> Any:
    """A predicate: is a URI inside `folder`?"""
    if storage.is_s3(folder):
        prefix = folder.rstrip("/") + "/"
        return lambda uri: uri.startswith(prefix)
    root = os.path.realpath(storage.local_path(folder)) + os.sep
    return lambda uri: not storage.is_s3(uri) and os.path.realpath(storage.local_path(uri)).startswith(root)


def _block_rows(rows: int, cpus: int) -> int:
    """Rows per block of the listing: about four blocks per CPU, so every CPU gets work from the start."""
    return max(1, min(1000, rows // max(1, cpus * 4)))


def _blocks(table: pa.Table, rows: int) -> list[pa.Table]:
    """Cut the listing into blocks of `rows` rows."""
    return [table.slice(i, rows) for i in range(0, table.num_rows, rows)]


def _drop_keys(batch: pa.Table, keys: frozenset[str]) -> pa.Table:
    present = batch.column(columns.KEY).to_pylist()
    return batch.filter(pa.array([k not in keys for k in present]))


def _task_fn(planned: PlannedStage) -> Any:
    """A map function named after the stage, so Ray's progress shows stage names."""

    def run(batch: pa.Table, planned: PlannedStage, output: str, token: str, tally: Any) -> pa.Table:
        task = CountedStageTask(planned, output, token, tally)
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


def _remote_args(planned: PlannedStage) -> dict[str, Any]:
    args: dict[str, Any] = {"num_cpus": planned.resources.cpus}
    if planned.resources.gpus:
        args["num_gpus"] = planned.resources.gpus
    if planned.resources.memory:
        args["memory"] = planned.resources.memory
    return args


def _actor_pool(planned: PlannedStage, cpus: int) -> Any:
    """The actor pool of a stage: N actors, or an autoscaling [min, max] pool."""
    import ray.data

    workers = planned.concurrency
    if workers is None:
        # One actor per CPU share on CPU; one per GPU stage by default, since GPUs are counted, not shared.
        workers = 1 if planned.resources.gpus else max(1, int(cpus // max(planned.resources.cpus, 1)))
    # A batch queued behind a long one on a busy CPU actor waits while another actor idles (the
    # first actor up would take four); a GPU actor keeps Ray's default queue, which hides transfers.
    in_flight = None if planned.resources.gpus else 1
    if isinstance(workers, tuple):
        return ray.data.ActorPoolStrategy(min_size=workers[0], max_size=workers[1],
                                          max_tasks_in_flight_per_actor=in_flight)
    return ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=in_flight)


def _apply_stage(ds: Any, planned: PlannedStage, output: str, token: str, cpus: int, *,
                 max_batch: int, tally: Any) -> Any:
    import ray.data

    # Ray fuses consecutive stages into one operator whose input bundles hold as many rows as the
    # largest batch_size among them: the 256 rows of a cheap filter would make the video stages
    # after it one task on one CPU. No batch above the listing's block size keeps every block a task.
    batch_size = min(planned.batch_size, max_batch)
    common = {"batch_size": batch_size, "batch_format": "pyarrow", **_remote_args(planned)}
    if planned.cls.needs_actor() or planned.resources.gpus:
        return ds.map_batches(CountedStageTask, fn_constructor_args=(planned, output, token, tally),
                              compute=_actor_pool(planned, cpus), **common)
    if planned.concurrency:
        common["compute"] = ray.data.TaskPoolStrategy(size=planned.concurrency)
    return ds.map_batches(_task_fn(planned), fn_args=(planned, output, token, tally), **common)


def _segment(ds: Any, output: str, index: int) -> Any | None:
    """Materialize the rows entering a global stage, or reuse them if a previous run finished that.

    None when no row reached it (every row was rejected before): nothing is left to run.
    """
    import ray

    folder = paths.under(output, paths.segment_dir(index))
    marker = storage.join(folder, paths.SEGMENT_DONE)
    if not storage.exists(marker):
        for uri in storage.list_files(folder):
            storage.remove(uri)
        ds.write_parquet(folder)
        storage.write_atomic(marker, b"")
    if not any(uri.endswith(".parquet") for uri in storage.list_files(folder)):
        return None
    return ray.data.read_parquet(folder, file_extensions=["parquet"])


def _make_datasink(plan: Plan, token: str) -> Any:
    import ray
    from ray.data.block import BlockAccessor
    from ray.data.datasource.datasink import Datasink

    @ray.remote(num_cpus=0)
    class ShardCounter:
        def __init__(self, start: int) -> None:
            self.value = start

        def next(self) -> int:
            self.value += 1
            return self.value - 1

    counter = ShardCounter.remote(commit.next_shard_index(plan.config.output))
    sink_config = plan.config.sink
    output = plan.config.output
    members = declared_members(plan.all_stages)

    # Ray bundles blocks for each write task up to one target. Rows that carry media bytes
    # are bundled by bytes (1000 clips of 5 MB must not wait in memory for one task); rows
    # that only point at their media are bundled by count, so shards still fill up.
    carries_media = columns.MEDIA in plan.columns

    class ShardDatasink(Datasink[list[str]]):
        @property
        def min_rows_per_write(self) -> int | None:
            return None if carries_media else sink_config.max_samples

        @property
        def min_bytes_per_write(self) -> int | None:
            return sink_config.max_bytes if carries_media else None

        def write(self, blocks: Any, ctx: Any) -> list[str]:
            writer = ShardWriter(
                output,
                max_samples=sink_config.max_samples,
                max_bytes=sink_config.max_bytes,
                bucket_path=sink_config.bucket_template,
                members=members,
                token=token,
                next_index=lambda: ray.get(counter.next.remote()),
            )
            for block in blocks:
                writer.write_table(BlockAccessor.for_block(block).to_arrow())
            return writer.close()

    return ShardDatasink()


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
            # "local" always starts a new instance: a `ray start` cluster on this machine is not ours to join.
            kwargs.update(address="local", num_cpus=plan.config.ray.num_cpus, include_dashboard=False)
        ray.init(**kwargs)
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


def _pipeline(ds: Any, plan: Plan, output: str, token: str, committed: set[str], cpus: int, *,
              max_batch: int, tally: Any) -> Any | None:
    """The lazy dataset of every stage after the source; None when no row is left to reach the sink."""
    keys_ref = frozenset(committed)
    for planned in plan.stages:
        if planned.is_global:
            ds = _segment(ds, output, planned.index)
            if ds is None:
                return None
            ds = planned.instantiate().run(ds, RayExecutor())
            ds = ds.map_batches(_record_global_rejects, fn_args=(planned, output, token, tally),
                                batch_format="pyarrow", batch_size=None)
        else:
            ds = _apply_stage(ds, planned, output, token, cpus, max_batch=max_batch, tally=tally)
        if committed and (planned.is_global or planned.cls.expands):
            ds = ds.map_batches(_drop_keys, fn_args=(keys_ref,), batch_format="pyarrow", batch_size=None)
    return ds


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
        listed = _list_source(plan)
    except (ValueError, OSError) as exc:  # the input cannot be listed as configured: the user's to fix
        raise ConfigError([f"`input` {plan.config.input!r}: {exc}"]) from None
    committed = commit.committed_keys(output)
    todo, source_rejects = _new_rows(listed, committed)
    if todo.num_rows:
        check_tools(plan)
    token = None
    if todo.num_rows or source_rejects.num_rows or commit.has_orphans(output):
        token = owner.take_ownership(output)
        commit.clean_orphans(output)
        # Read again once this run owns the output: a worker of a killed run may have committed meanwhile.
        committed = commit.committed_keys(output)
        todo, source_rejects = _new_rows(listed, committed)
        record_rejects(source_rejects, plan.source, output, token=token)
    new_rows = todo.num_rows
    log.debug("listed %d rows, %d to do, in %.2f s", listed.num_rows, new_rows, time.monotonic() - start)
    if new_rows:
        _execute(plan, todo, committed, token, address=address, progress=progress, verbose=verbose)
    mark = time.monotonic()
    summary = finalize(output, stage_infos(plan))
    log.debug("final files written in %.2f s", time.monotonic() - mark)
    return RunResult(output=output, new_rows=new_rows, wall_seconds=time.monotonic() - start, summary=summary)


def _execute(plan: Plan, todo: pa.Table, committed: set[str], token: str, *, address: str | None,
             progress: bool, verbose: bool) -> None:
    """Run the rows `todo` through every stage into the sink on Ray."""
    import ray

    mark = time.monotonic()
    cpus = init_ray(plan, address=address, progress=progress, verbose=verbose)
    log.debug("ray ready with %d CPUs in %.2f s", cpus, time.monotonic() - mark)
    mark = time.monotonic()
    rows = _block_rows(todo.num_rows, cpus)
    tally = ray.remote(num_cpus=0)(Tally).remote() if progress else None
    view = (ProgressView([p.name for p in plan.stages], todo.num_rows, lambda: ray.get(tally.snapshot.remote()))
            if progress else contextlib.nullcontext())
    try:
        with view:
            ds = _pipeline(ray.data.from_arrow(_blocks(todo, rows)), plan, plan.config.output, token, committed,
                           cpus, max_batch=rows, tally=tally)
            if ds is not None:
                ds.write_datasink(_make_datasink(plan, token), ray_remote_args={"max_retries": 0})
    except Exception as exc:
        fatal = FatalStageError.find(exc)
        if fatal is None:
            raise
        raise fatal from None
    finally:
        if tally is not None:
            ray.kill(tally)
    log.debug("stages and sink done in %.2f s", time.monotonic() - mark)
