"""Actor pools and batch sizes: what the runner hands Ray Data for each stage."""

from __future__ import annotations

import dataclasses

from dataprep.actor_pools import actor_pool, batch_rows
from dataprep.stage import Resources, Stage
from tests.helpers import planned


class Cheap(Stage):
    """A task stage: no setup, no GPU."""

    name = "cheap"
    batch_size = 256


class Head(Stage):
    """An actor stage (it loads state in setup) batching far above a block."""

    name = "head"
    batch_size = 4096

    def setup(self) -> None:
        self.ready = True


def test_a_task_stage_batch_stays_within_a_block():
    assert batch_rows(planned(Cheap), block_rows=100) == 100
    assert batch_rows(planned(Cheap), block_rows=1000) == 256


def test_an_actor_stage_batches_whole_blocks_above_a_block():
    assert batch_rows(planned(Head), block_rows=1000) == 4000  # four blocks per task, no short batch after them
    assert batch_rows(planned(Head), block_rows=512) == 4096
    assert batch_rows(planned(Head), block_rows=5000) == 4096  # below a block it keeps its own size
    gpu = dataclasses.replace(planned(Cheap), resources=Resources(gpus=1))
    assert batch_rows(gpu, block_rows=100) == 200


def test_actor_pool_runs_batches_on_the_actor_thread_with_two_queued():
    pool = actor_pool(dataclasses.replace(planned(Head), concurrency=1), cpus=2)
    assert pool.enable_true_multi_threading and pool.max_tasks_in_flight_per_actor == 2
    assert (pool.min_size, pool.max_size) == (1, 1)
    assert actor_pool(planned(Head), cpus=2).max_size == 2
