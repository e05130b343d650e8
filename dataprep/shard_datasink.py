"""The Ray Data sink of a run: rows into WebDataset shards, numbered by one actor beside the driver."""

from __future__ import annotations

from typing import Any

from dataprep import columns, commit
from dataprep.liveness import task_label
from dataprep.members import declared_members
from dataprep.plan import Plan
from dataprep.progress import at_work
from dataprep.sink import ShardWriter


def on_driver_node() -> Any:
    """Scheduling on the driver's node: the run's own actors (shard numbers, progress) must not die with a worker
    node, which would fail the whole run."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def make_datasink(plan: Plan, token: str, tally: Any = None) -> Any:
    """The Ray Data sink that writes the run's rows into shards, numbering them from one counter actor."""
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

    counter = ShardCounter.options(scheduling_strategy=on_driver_node()).remote(
        commit.next_shard_index(plan.config.output))
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
                table = BlockAccessor.for_block(block).to_arrow()
                with at_work(tally, "sink", table, task_label):
                    writer.write_table(table)
            return writer.close()

    return ShardDatasink()
