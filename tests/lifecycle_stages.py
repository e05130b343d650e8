"""Plugin stages for the worker-lifecycle tests: setup and teardown timing, fatal errors, rejection."""

from __future__ import annotations

import os
import time

import pyarrow as pa

from dataprep.stage import Filter, Stage, StageParams


class DeviceLost(RuntimeError):
    """Stands in for a CUDA device error: nothing after it on this worker can succeed."""


class FlakyParams(StageParams):
    fatal_key_suffix: str = "3"
    fatal: bool = True
    healed_when_exists: str = ""  # once this file exists the device is back: nothing raises


class Flaky(Stage):
    """Raises on rows whose key ends in `fatal_key_suffix`: fatal when `fatal`, an ordinary row error otherwise."""

    name = "flaky"
    reads = ("key",)
    writes = ("checked",)
    Params = FlakyParams
    batch_size = 4
    fatal = (DeviceLost,)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        keys = batch.column("key").to_pylist()
        healed = self.params.healed_when_exists and os.path.exists(self.params.healed_when_exists)
        for key in keys if not healed else ():
            if key.endswith(self.params.fatal_key_suffix):
                raise (DeviceLost if self.params.fatal else ValueError)(f"device lost at {key}")
        return batch.append_column("checked", pa.array([True] * len(keys)))


class Timed(Stage):
    """Records when its worker's setup ran and when each batch ran; setup takes `setup_seconds`."""

    name = "timed"
    reads = ("key",)
    writes = ("worker_pid", "setup_started", "setup_ended", "batch_started")
    batch_size = 2

    class Params(StageParams):
        setup_seconds: float = 1.0
        log_dir: str = ""

    def setup(self) -> None:
        self.started = time.time()
        time.sleep(self.params.setup_seconds)
        self.ended = time.time()

    def teardown(self) -> None:
        if self.params.log_dir:
            with open(os.path.join(self.params.log_dir, f"teardown-{os.getpid()}"), "w") as f:
                f.write(str(time.time()))

    def process_batch(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        return (batch.append_column("worker_pid", pa.array([os.getpid()] * n, pa.int64()))
                .append_column("setup_started", pa.array([self.started] * n))
                .append_column("setup_ended", pa.array([self.ended] * n))
                .append_column("batch_started", pa.array([time.time()] * n)))


class RejectAll(Filter):
    """Rejects every row."""

    name = "reject_all"
    reads = ("key",)

    def reasons(self, batch: pa.Table) -> list[str | None]:
        return ["all:rejected"] * batch.num_rows
