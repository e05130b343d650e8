"""Running `minhash_dedup` on one table in this process, through the same `run` the runner uses."""

from __future__ import annotations

from dataprep.executor import LocalExecutor


def dedup_in_process(stage, table, *, n_parts: int = 4):
    """`stage.run` on a pyarrow table with `n_parts` partitions and no Ray; returns the annotated table."""
    local = type(stage)(stage.params.model_copy(update={"num_partitions": n_parts}))
    return local.run(table, LocalExecutor())
