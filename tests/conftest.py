"""Shared fixtures: one Ray instance per test session, tiny generated media, paths to shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Every Ray process the tests start listens on loopback only (see dataprep.ray_init.LOOPBACK_ONLY_ENV).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# No test downloads: a model that is not local is missing, at once, without asking the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real media of ../shared/data; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        message = f"real media not found at {SHARED_DATA} (the shared/ folder beside the checkout)"
        if os.environ.get("DATAPREP_REQUIRE_SHARED_DATA"):  # CI has it: a skip there would hide lost coverage
            pytest.fail(f"{message}, and DATAPREP_REQUIRE_SHARED_DATA is set")
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray instance for every test that needs Ray (starting Ray costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                     [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}})
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The offline sample set of `dataprep sample-data`, generated once per session."""
    from dataprep.stages.sample_data import generate

    folder = tmp_path_factory.mktemp("sample")
    generate(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> str:
    """A folder where `--tiny-models` builds its tiny random models, shared by the session's tests."""
    return str(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def config_output(ray_session, sample_dir, tiny_models, tmp_path_factory):
    """`config_output("t2v")`: the output folder of a shipped config run with tiny models on the sample set,
    run once per session and shared by the tests that read it (a whole config's run costs minutes)."""
    from dataprep.config import load_config
    from dataprep.plan import build_plan
    from dataprep.runner import run_plan

    outputs: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in outputs:
            out = tmp_path_factory.mktemp(name) / "out"
            config = load_config(CONFIGS / f"{name}.yaml", input=str(sample_dir), output=str(out))
            run_plan(build_plan(config, tiny_models=tiny_models), progress=False)
            outputs[name] = out
        return outputs[name]

    return run


@pytest.fixture
def table():
    """Build a pyarrow table from rows, for stage unit tests."""
    import pyarrow as pa

    def make(rows: list[dict]) -> "pa.Table":
        return pa.Table.from_pylist(rows)

    return make
