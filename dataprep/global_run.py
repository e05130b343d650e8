"""A global stage over its segment: over the cluster, or as one task when the segment is small.

Spread over the cluster, a dedup stage runs a dozen hash shuffles, and each costs its start-up (actors,
tasks, object transfers) whatever the rows: 7 s for a 10-row segment on a 2-core machine. A segment of at
most `ray.small_global_mb` MB runs instead as one Ray task that reads it and calls the stage with
`LocalExecutor`: the same kernels on a table, the same result. Only stages that declare
`one_task_when_small` (their `run` reaches rows only through the executor) take that path.
"""

from __future__ import annotations

import logging
from typing import Any

from dataprep.executor import LocalExecutor, Segment
from dataprep.plan import PlannedStage

log = logging.getLogger(__name__)


def run_global(planned: PlannedStage, segment: Segment, executor: Any, *, small_mb: float) -> Any:
    """The stage's output dataset over `segment`, computed by `executor` (a RayExecutor) or, when the stage
    allows it and the segment is small, by one task whose errors `executor` raises like its own."""
    if not planned.cls.one_task_when_small or small_mb <= 0 or segment.nbytes > small_mb * 1e6:
        return planned.instantiate().run(executor.read(segment), executor)
    import ray

    log.debug("%s: a %.1f MB segment (at most ray.small_global_mb %g), run as one task", planned.name,
              segment.nbytes / 1e6, small_mb)
    rows, table = ray.remote(_in_one_task).options(num_returns=2).remote(planned, segment)
    executor.get([rows])  # the stage's error, if any, raised here as the cluster path raises it
    return ray.data.from_arrow_refs([table])


def _in_one_task(planned: PlannedStage, segment: Segment) -> tuple[int, Any]:
    local = LocalExecutor()
    table = planned.instantiate().run(local.read(segment), local)
    return table.num_rows, table
