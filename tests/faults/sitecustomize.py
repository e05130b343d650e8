"""Fault injection for the kill tests, loaded by every Python process of a test run (driver and Ray workers)
when this folder is on PYTHONPATH.

With `DATAPREP_TEST_HOLD_BEFORE_STATS=FLAG`, the first process that is about to write a shard's commit record
(its `*.stats.json`, after the tar was renamed into place) creates FLAG and sleeps, so the test can SIGKILL the
run exactly between a shard's rename and its commit record.
"""

import os

_FLAG = os.environ.get("DATAPREP_TEST_HOLD_BEFORE_STATS")

if _FLAG:
    import time

    from dataprep import storage

    _write_atomic = storage.write_atomic

    def _holding_write(uri: str, data: bytes) -> None:
        if uri.endswith(".stats.json"):
            try:
                fd = os.open(_FLAG, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                time.sleep(600)  # until the test kills this process
        _write_atomic(uri, data)

    storage.write_atomic = _holding_write
