"""Stopping the Ray a command started or joined, quickly and without leaving a process behind.

`ray.shutdown()` ends the processes an embedded Ray started one after another, giving each up to
a second: the raylet, the GCS, then the autoscaler monitor, the dashboard and the log monitor.
The monitor's SIGTERM handler reports its own death through the GCS, which is gone by then, so
it always takes the whole second and is then killed. Measured on 2 busy cores (load 22): raylet
0.17 s, GCS 0.22 s, monitor 1.02 s, dashboard 0.40 s, log monitor 0.28 s. Run at interpreter
exit, `ray.shutdown()` also sleeps 0.5 s first. `stop_ray` runs at the end of the command instead,
and signals the helpers the driver does not need to disconnect all at once before
`ray.shutdown()`, so they exit while it disconnects and stops the raylet and the GCS.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

# Processes of an embedded Ray that nothing needs once the run's work is done, with the signal that
# ends each: SIGKILL for the monitor, whose SIGTERM handler would publish an "autoscaler failed"
# error to this driver (and, once the GCS is gone, wait on it); SIGTERM, Ray's own, for the others.
_HELPERS = {"monitor": signal.SIGKILL, "dashboard": signal.SIGTERM, "log_monitor": signal.SIGTERM}


def stop_ray() -> None:
    """Shut down the Ray this process started or joined (nothing when it has none), so none of its
    processes outlive the command; a Ctrl-C meanwhile is ignored rather than cut it short."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _signal_helpers(_embedded_node())
        ray.shutdown()
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def stopped_at_end() -> Iterator[None]:
    """Stop, when the block ends however it ends, the Ray it started or joined; a Ray that was
    already running when it began (a test session's) is left running."""
    ray = sys.modules.get("ray")
    running = ray is not None and ray.is_initialized()
    try:
        yield
    finally:
        if not running:
            stop_ray()


def _embedded_node() -> Any | None:
    """The node `ray.init` made in this process: the processes it started are ours to end (one that
    joined a cluster started none). None where Ray no longer keeps it here; then `ray.shutdown()`
    alone stops everything, at its own pace."""
    from ray._private import worker  # the node ray.shutdown() itself stops; no public handle exists

    return getattr(worker, "_global_node", None)


def _signal_helpers(node: Any | None) -> None:
    """Send each helper process of `node` its signal now; `ray.shutdown()` then finds them gone."""
    processes = getattr(node, "all_processes", None) or {}
    for kind, sig in _HELPERS.items():
        for info in processes.get(kind, ()):
            process = getattr(info, "process", None)
            if process is not None and process.poll() is None:
                try:
                    process.send_signal(sig)
                except OSError as exc:  # it ended meanwhile: nothing left to stop
                    log.debug("ray %s already gone: %s", kind, exc)
