"""Stages for runner tests: a slow pass-through (to kill runs mid-way) and a minimal global stage."""

from __future__ import annotations

import time

from dataprep.stage import GlobalStage, Stage


class Sleepy(Stage):
    """Passes each row on after a tenth of a second."""

    name = "sleepy"
    reads = ("key",)
    batch_size = 1

    def process_batch(self, batch):
        time.sleep(0.1)
        return batch


class SameCaption(GlobalStage):
    """Keeps one row per exact caption (the smallest key); a minimal global stage for runner tests."""

    name = "same_caption"
    reads = ("caption",)

    def run(self, ds, executor):
        import pyarrow as pa

        first: dict[str, str] = {}
        for row in ds.select_columns(["key", "caption"]).iter_rows():
            caption = row["caption"] or row["key"]
            first[caption] = min(first.get(caption, row["key"]), row["key"])

        def mark(batch: pa.Table) -> pa.Table:
            keys, captions = batch.column("key").to_pylist(), batch.column("caption").to_pylist()
            kept = [first[c or k] for k, c in zip(keys, captions, strict=True)]
            reject = [None if f == k else "duplicate" for f, k in zip(kept, keys, strict=True)]
            dup_of = [None if f == k else f for f, k in zip(kept, keys, strict=True)]
            return batch.append_column("_reject", pa.array(reject, pa.string())).append_column(
                "_duplicate_of", pa.array(dup_of, pa.string()))

        return ds.map_batches(mark, batch_format="pyarrow")


class SetupOnce(Stage):
    """Records the worker process of each row, its setup() calls and how many batches it has seen."""

    name = "setup_once"
    reads = ("key",)
    writes = ("worker_pid", "setup_calls", "batches_seen")
    batch_size = 4

    def setup(self) -> None:
        self.calls = getattr(self, "calls", 0) + 1
        self.batches = 0

    def process_batch(self, batch):
        import os

        import pyarrow as pa

        n = batch.num_rows
        self.batches += 1
        return (batch.append_column("worker_pid", pa.array([os.getpid()] * n, pa.int64()))
                .append_column("setup_calls", pa.array([self.calls] * n, pa.int32()))
                .append_column("batches_seen", pa.array([self.batches] * n, pa.int32())))


# The caption of the row `Stuck` never returns from; unset, it passes every row on.
STUCK_ENV = "DATAPREP_TEST_STUCK_CAPTION"


class Stuck(Stage):
    """Passes rows on, but hangs forever on the row whose caption is $DATAPREP_TEST_STUCK_CAPTION (a hung call)."""

    name = "stuck"
    reads = ("key", "caption")
    batch_size = 1

    def process_batch(self, batch):
        import os

        caption = os.environ.get(STUCK_ENV)
        if caption is not None and caption in batch.column("caption").to_pylist():
            while True:  # short sleeps: a cancelled task's KeyboardInterrupt ends it
                time.sleep(0.5)
        return batch


class BrokenGlobal(GlobalStage):
    """A global stage that fails on any input, in one task when its segment is small."""

    name = "broken_global"
    reads = ("key",)
    one_task_when_small = True

    def run(self, ds, executor):
        raise ValueError("broken_global fails on purpose; fix: leave it out")
