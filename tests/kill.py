"""Killing real `dataprep run` processes for the exactly-once tests: by session, at a moment a condition names."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable

import psutil


def kill_session(proc: subprocess.Popen, *, whole_session: bool = True) -> None:
    """SIGKILL the driver, and with `whole_session` every Ray process it started (the machine is lost)."""
    victims = [psutil.Process(proc.pid)]
    if whole_session:
        victims += [p for p in psutil.process_iter() if _sid(p) == proc.pid and p.pid != proc.pid]
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)


def _sid(p: psutil.Process) -> int | None:
    try:
        return os.getsid(p.pid)
    except (ProcessLookupError, PermissionError):
        return None


def wait_until(proc: subprocess.Popen, condition: Callable[[], bool], timeout: float = 120) -> bool:
    """Wait until `condition()` holds; False if the run ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise TimeoutError("run neither reached the kill point nor ended")


def alive(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    """The processes of `processes` still running (zombies count as gone)."""
    found = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            continue
    return found
