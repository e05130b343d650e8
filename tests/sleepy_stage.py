"""A test plugin: a stage that passes rows on slowly, so a run can be killed in the middle."""

from __future__ import annotations

import time

from dataprep.stage import Stage


class Sleepy(Stage):
    """Passes each row on after a tenth of a second."""

    name = "sleepy"
    reads = ("key",)
    batch_size = 1

    def process_batch(self, batch):
        time.sleep(0.1)
        return batch
