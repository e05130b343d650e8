"""The run's watchdog: a job that makes no progress for `ray.stall_timeout` seconds fails instead of hanging.

Progress is a batch of any stage ending or a block reaching the shards (both reported by
the workers to the run's `Tally`), or a call of a global stage finishing while the driver
waits on it (`LiveExecutor`). When nothing moves for the timeout, the watchdog logs the
batches at work the longest (stage, Ray task, keys) and interrupts the run, which then
raises `StalledError`. A stuck batch commits nothing, so a rerun processes its rows again.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any

from dataprep.errors import FatalStageError
from dataprep.progress import Pulse, Running
from dataprep.ray_executor import RayExecutor

log = logging.getLogger(__name__)
# The signal that interrupts the run's main thread: one that neither Ray nor Ctrl-C uses.
INTERRUPT_SIGNAL = signal.SIGUSR1
# How often the watchdog looks, at most: a stall is caught within this much of the timeout.
MAX_INTERVAL = 5.0


class StalledError(FatalStageError):
    """The job made no progress for `ray.stall_timeout` seconds and was stopped; a rerun resumes it."""


class _Interrupt(KeyboardInterrupt):
    """Raised in the run's thread on a stall: Ray's blocking calls and Ray Data's executor give up on a
    KeyboardInterrupt (Ray Data cancels its tasks), and no `except Exception` of a stage swallows it."""


def task_label() -> str:
    """The Ray task or actor this worker runs, and its process, as a stall's diagnosis names them."""
    import ray

    context = ray.get_runtime_context()
    actor = context.get_actor_id()
    who = f"actor {actor}" if actor else f"task {context.get_task_id()}"
    return f"{who} (pid {os.getpid()} on {socket.gethostname()})"


def _batch(running: Running) -> str:
    """`stage `x` task ... has worked 612 s on 1 row (key k1)`."""
    keys = ", ".join(running.keys) + (", ..." if running.rows > len(running.keys) else "")
    rows = "1 row (key" if running.rows == 1 else f"{running.rows} rows (keys"
    return f"stage `{running.stage}` {running.task} has worked {running.seconds:.0f} s on {rows} {keys})"


def diagnosis(idle: float, timeout: float, pulse: Pulse | None, waiting: str | None) -> str:
    """One line: for how long nothing moved, what is at work the longest, and what to do."""
    head = f"no progress for {idle:.0f} s (ray.stall_timeout: {timeout:g} s)"
    fix = "rerun the same command to resume, or raise `ray.stall_timeout` if the job is only slow"
    if pulse is None:
        return f"{head}, and the run's progress tally does not answer; {fix}"
    if pulse.running:
        others = len(pulse.running) - 1 + pulse.more
        more = f"; {others} more batch{'es' if others != 1 else ''} at work" if others else ""
        return f"{head}: {_batch(pulse.running[0])}{more}; {fix}"
    if waiting:
        return f"{head}: no batch at work, the driver waits on {waiting}; {fix}"
    return f"{head}: no batch at work, the stages may wait for resources the cluster lacks (GPUs, memory); {fix}"


class Watchdog:
    """Interrupts the thread that entered it when `pulse().beats` and `beat()` show no progress for `timeout` s.

    `pulse` asks the run's tally (it may raise: an unanswered poll is no progress); `clock` is
    injectable so the logic is tested without waiting. After a stall, leaving the `with` block on
    the interruption raises `StalledError` with the diagnosis; a run that ended anyway stands.
    """

    def __init__(self, timeout: float, pulse: Callable[[], Pulse], *, clock: Callable[[], float] = time.monotonic,
                 interval: float | None = None) -> None:
        self.timeout = timeout
        self.pulse = pulse
        self.clock = clock
        self.interval = interval if interval is not None else min(MAX_INTERVAL, timeout / 10)
        self.stalled: str | None = None
        self._beats = 0
        self._since = clock()
        self._waiting: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._target = 0  # ident of the thread to interrupt
        self._armed = False
        self._previous: Any = None

    def beat(self) -> None:
        """The driver saw progress."""
        self._since = self.clock()

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        """The driver waits on `what` (a global stage's tasks): a stall meanwhile names it."""
        self._waiting = what
        try:
            yield
        finally:
            self._waiting = None

    def check(self) -> str | None:
        """Look once: the diagnosis when nothing moved for `timeout` s, else None."""
        try:
            pulse: Pulse | None = self.pulse()
        except Exception as exc:  # noqa: BLE001 - a poll that fails is no progress; the timeout decides
            log.debug("progress poll failed: %s", exc)
            pulse = None
        now = self.clock()
        if pulse is not None and pulse.beats != self._beats:
            self._beats = pulse.beats
            self._since = now
        idle = now - self._since
        return diagnosis(idle, self.timeout, pulse, self._waiting) if idle >= self.timeout else None

    def __enter__(self) -> Watchdog:
        self._target = threading.get_ident()
        if self._target == threading.main_thread().ident:
            self._previous = signal.signal(INTERRUPT_SIGNAL, self._on_signal)
        self._since = self.clock()
        self._armed = True
        self._thread = threading.Thread(target=self._watch, name="dataprep-watchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._armed = False  # first: an interruption still on its way must not land after the run
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._target == threading.main_thread().ident:
            signal.signal(INTERRUPT_SIGNAL, self._previous if self._previous is not None else signal.SIG_DFL)
        if self.stalled is not None and exc is not None:
            # Whatever the interruption became on its way out (Ray turns it into a plain KeyboardInterrupt).
            raise StalledError(self.stalled) from None

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            found = self.check()
            if found is not None:
                self.stalled = found
                log.error("%s", found)
                self._interrupt()
                return

    def _interrupt(self) -> None:
        if not self._armed:
            return
        if self._target == threading.main_thread().ident:
            # A signal also wakes the main thread from a blocking call (ray.get in a global stage).
            signal.pthread_kill(self._target, INTERRUPT_SIGNAL)
        else:  # signals reach only the main thread: raise at the run's next Python step (Ray Data polls)
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target), ctypes.py_object(_Interrupt))

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._armed and self.stalled is not None:
            self._armed = False
            raise _Interrupt(self.stalled)
        if callable(self._previous):  # not ours: whoever handled it before still does
            self._previous(signum, frame)


class LiveExecutor(RayExecutor):
    """The executor of a global stage under a watchdog: each of its calls that ends while the driver waits
    is progress, so a long global stage that keeps finishing tasks is not taken for a stalled one."""

    def __init__(self, watchdog: Watchdog, stage: str, *, every: float = 1.0) -> None:
        super().__init__()
        self.watchdog = watchdog
        self.stage = stage
        self.every = every

    def wait(self, handles: list[Any]) -> None:
        """Wait for every ref, telling the watchdog each time some of them are done."""
        import ray

        pending = list(dict.fromkeys(handles))  # ray.wait refuses a ref listed twice
        with self.watchdog.waiting(f"global stage `{self.stage}`'s tasks"):
            while pending:
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=self.every, fetch_local=False)
                if ready:
                    self.watchdog.beat()

    def get(self, handles: list[Any]) -> list[Any]:
        """The values behind the refs, once `wait` saw them done."""
        self.wait(handles)
        return super().get(handles)
