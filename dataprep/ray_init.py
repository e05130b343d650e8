"""Starting embedded Ray for a run, or joining a cluster at an address, quietly and checked."""

from __future__ import annotations

import logging
import os
from typing import Any

from dataprep.errors import ConfigError
from dataprep.plan import Plan
from dataprep.ray_executor import embedded_ray_env

# Ray binds to 127.0.0.1 instead of the machine's address when this is "0" (a single-node cluster).
LOOPBACK_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _worker_env() -> dict[str, str]:
    """Environment variables every worker needs: the import path of plugins, the ffmpeg the driver chose."""
    paths_ = [os.getcwd(), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(p for p in paths_ if p))}
    # Workers must run the ffmpeg the driver chose and logged.
    env.update({k: os.environ[k] for k in ("DATAPREP_FFMPEG",) if k in os.environ})
    return env


def _quiet_ray_data(verbose: bool) -> None:
    """Show Ray Data's INFO and WARNING lines on the console only when verbose; its log file keeps them."""
    import ray.data  # noqa: F401 - importing it installs Ray Data's handlers

    level = logging.INFO if verbose else logging.ERROR
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(level)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Raise ConnectionError when nothing listens at a `HOST:PORT` or `ray://HOST:PORT` address.

    ray.init retries an address that does not answer for minutes; a wrong address should fail at once.
    `auto` (found from this machine's Ray) is left to ray.init.
    """
    import socket

    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port} ({exc})") from None


def _check_shared_paths(plan: Plan) -> None:
    """On a cluster, every node must see a local input and output as this driver does (before any work)."""
    from dataprep.shared_paths import unseen_problems

    problems = unseen_problems(plan.config.input, plan.config.output)
    if problems:
        import ray

        ray.shutdown()
        raise ConfigError(problems)


def init_ray(plan: Plan, *, address: str | None = None, progress: bool = True, verbose: bool = False) -> int:
    """Connect to `address` or start embedded Ray; returns the CPUs Ray has.

    Unless `verbose`, Ray's own INFO and WARNING lines are hidden (its errors still show),
    and so are Ray Data's progress bars: the run draws its own per stage.
    """
    address = address or plan.config.ray.address
    if not address:
        # Embedded Ray is one node: keep its ports on loopback instead of the machine's network address.
        os.environ.setdefault(LOOPBACK_ONLY_ENV, "0")
    else:
        _check_reachable(address)
    import ray

    _quiet_ray_data(verbose)
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"logging_level": logging.INFO if verbose else logging.ERROR}
        if address:
            kwargs.update(address=address, runtime_env={"env_vars": _worker_env()})
        else:
            # Embedded Ray's workers inherit the driver's environment. A runtime_env would make each
            # worker wait for the runtime-env agent instead of taking a prestarted one (3-6 s per run).
            os.environ.update(_worker_env())
            for name, value in embedded_ray_env(plan.config.ray.num_cpus or os.cpu_count() or 1).items():
                os.environ.setdefault(name, value)  # the global stages' shuffles keep their workers
            # "local" always starts a new instance: a `ray start` cluster on this machine is not ours to join.
            kwargs.update(address="local", num_cpus=plan.config.ray.num_cpus, include_dashboard=False)
        ray.init(**kwargs)
        if address:
            _check_shared_paths(plan)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress and verbose
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
