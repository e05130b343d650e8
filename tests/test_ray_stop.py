"""Stopping Ray at the end of a command (dataprep.ray_stop): which helper processes get which signal, and whose Ray is stopped."""

from __future__ import annotations

import signal
import sys
import types

import pytest

from dataprep import ray_stop


class FakeProcess:
    """A Popen stand-in that records the signals it gets."""

    def __init__(self, running: bool = True, error: OSError | None = None) -> None:
        self.running, self.error, self.signals = running, error, []

    def poll(self) -> int | None:
        return None if self.running else 0

    def send_signal(self, sig: int) -> None:
        if self.error is not None:
            raise self.error
        self.signals.append(sig)


def _node(**processes: FakeProcess) -> types.SimpleNamespace:
    """A node as Ray keeps it: process type -> [ProcessInfo with `.process`]."""
    return types.SimpleNamespace(all_processes={kind: [types.SimpleNamespace(process=p)] for kind, p in processes.items()})


def test_helpers_are_signalled_and_the_core_processes_left_to_ray_shutdown():
    node = _node(monitor=FakeProcess(), dashboard=FakeProcess(), log_monitor=FakeProcess(), raylet=FakeProcess(),
                 gcs_server=FakeProcess(), reaper=FakeProcess())
    ray_stop._signal_helpers(node)
    got = {kind: infos[0].process.signals for kind, infos in node.all_processes.items()}
    # The monitor's SIGTERM handler would report an "autoscaler failed" error to the driver: it is killed.
    assert got == {"monitor": [signal.SIGKILL], "dashboard": [signal.SIGTERM], "log_monitor": [signal.SIGTERM],
                   "raylet": [], "gcs_server": [], "reaper": []}


def test_ended_or_vanishing_helpers_and_a_joined_cluster_are_no_error():
    ended, vanished = FakeProcess(running=False), FakeProcess(error=ProcessLookupError(3, "No such process"))
    ray_stop._signal_helpers(_node(monitor=ended, dashboard=vanished))
    assert ended.signals == [] and vanished.signals == []
    ray_stop._signal_helpers(None)  # joined a cluster: no node of ours


@pytest.fixture
def fake_ray(monkeypatch):
    """A `ray` module whose state the test sets, and a record of the stops."""
    ray = types.SimpleNamespace(initialized=False, shutdowns=0)
    ray.is_initialized = lambda: ray.initialized

    def shutdown() -> None:
        ray.shutdowns += 1
        ray.initialized = False

    ray.shutdown = shutdown
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setattr(ray_stop, "_embedded_node", lambda: None)
    return ray


def test_the_ray_a_command_started_is_stopped_when_it_ends_even_by_an_error(fake_ray):
    with ray_stop.stopped_at_end():
        fake_ray.initialized = True
    assert fake_ray.shutdowns == 1 and not fake_ray.initialized
    with pytest.raises(KeyboardInterrupt), ray_stop.stopped_at_end():
        fake_ray.initialized = True
        raise KeyboardInterrupt
    assert fake_ray.shutdowns == 2


def test_a_ray_running_before_the_command_is_left_running(fake_ray):
    fake_ray.initialized = True  # a test session's Ray
    with ray_stop.stopped_at_end():
        pass
    assert fake_ray.shutdowns == 0 and fake_ray.initialized


def test_stop_ignores_ctrl_c_while_it_runs_and_restores_the_handler(fake_ray):
    seen = []
    fake_ray.initialized = True
    fake_ray.shutdown = lambda: seen.append(signal.getsignal(signal.SIGINT))
    before = signal.getsignal(signal.SIGINT)
    ray_stop.stop_ray()
    assert seen == [signal.SIG_IGN] and signal.getsignal(signal.SIGINT) is before
