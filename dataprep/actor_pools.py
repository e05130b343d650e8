"""How many Ray workers each stage gets and what each reserves: actor pools and their CPU shares."""

from __future__ import annotations

from typing import Any

from dataprep.plan import Plan, PlannedStage


def remote_args(planned: PlannedStage) -> dict[str, Any]:
    """Ray resources of one task or actor of a stage, from its (configured) resources."""
    args: dict[str, Any] = {"num_cpus": planned.resources.cpus}
    if planned.resources.gpus:
        args["num_gpus"] = planned.resources.gpus
    if planned.resources.memory:
        args["memory"] = planned.resources.memory
    return args


def actor_pool(planned: PlannedStage, cpus: int) -> Any:
    """The actor pool of a stage: N actors, or an autoscaling [min, max] pool.

    By default a CPU stage's pool starts with one actor and grows to one per CPU share: a job of
    many model and filter stages must be able to start an actor of each on a small machine.
    """
    import ray.data

    workers = _pool_size(planned, cpus)
    # A batch queued behind a long one on a busy CPU actor waits while another actor idles (the
    # first actor up would take four): stages that run programs on media (ffmpeg) take one at a time.
    # Other CPU actors take two, since Ray Data notices a finished batch up to 100 ms late while
    # another operator runs, and a model stage's short batches would idle that long between them.
    # A GPU actor keeps Ray's default queue, which hides transfers.
    in_flight = None if planned.resources.gpus else (1 if planned.cls.tools else 2)
    # An actor runs one batch at a time either way; by default Ray Data still hands each batch to a
    # thread of its own and waits for it, a thread switch per batch that a busy node makes slow.
    options = {"max_tasks_in_flight_per_actor": in_flight, "enable_true_multi_threading": True}
    if isinstance(workers, tuple):
        return ray.data.ActorPoolStrategy(min_size=workers[0], max_size=workers[1], **options)
    return ray.data.ActorPoolStrategy(size=workers, **options)


def batch_rows(planned: PlannedStage, block_rows: int) -> int:
    """Rows per batch of a stage, given the rows per block of the job's listing.

    Ray fuses consecutive task stages into one operator whose input bundles hold as many rows as
    the largest batch_size among them: the 256 rows of a cheap filter would make the video stages
    after it one task on one CPU, so a task stage's batch stays within a block. An actor stage
    batches above a block when its batch size says so (heads on embeddings: a block's worth is a
    few milliseconds, mostly the runner's cost per task): Ray Data then hands it several blocks per
    task. It takes whole blocks, so that a task is not one full batch and one short one.
    """
    if not (planned.cls.needs_actor() or planned.resources.gpus) or planned.batch_size <= block_rows:
        return min(planned.batch_size, block_rows)
    return planned.batch_size // block_rows * block_rows


def _pool_size(planned: PlannedStage, cpus: int) -> int | tuple[int, int]:
    if planned.concurrency is not None:
        return planned.concurrency
    if planned.resources.gpus:
        return 1  # GPUs are counted, not shared: one actor per GPU stage unless the config says more
    most = max(1, int(cpus // max(planned.resources.cpus, 1)))
    return (1, most) if most > 1 else 1


def actor_cpu_share(plan: Plan, cpus: int) -> float:
    """The fraction of its CPUs each actor stage's actors reserve, so every actor stage can start.

    Ray Data starts the smallest pool of every actor stage at once; a job of a dozen such stages
    on two CPUs would wait forever for CPUs no stage gives back. When their minimum pools ask for
    more than half the cluster's CPUs (the other half runs the task stages), each actor reserves a
    proportional share. The stage still sizes its threads from its configured CPUs.
    """
    demand = 0.0
    for p in plan.stages:
        if not p.is_global and (p.cls.needs_actor() or p.resources.gpus):
            size = _pool_size(p, cpus)
            demand += p.resources.cpus * (size[0] if isinstance(size, tuple) else size)
    return min(1.0, 0.5 * cpus / demand) if demand else 1.0
