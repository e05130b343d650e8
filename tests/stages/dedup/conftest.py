"""The dedup tests' Ray is the session's embedded one (tests/conftest.py `ray_session`): start it with the
environment the runner gives its own, so that the global stages' hash shuffles keep their workers between
steps (`dataprep.ray_executor.embedded_ray_env`; without it each shuffle waits for new worker processes)."""

from __future__ import annotations

import os

from dataprep.ray_executor import embedded_ray_env

for _name, _value in embedded_ray_env(2).items():  # ray_session starts Ray with 2 CPUs
    os.environ.setdefault(_name, _value)
