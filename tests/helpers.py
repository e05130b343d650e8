"""Small builders shared by tests: planned stages without a config file."""

from __future__ import annotations

from dataprep.plan import PlannedStage
from dataprep.stage import Resources


def planned(cls, index: int = 1, **params) -> PlannedStage:
    """A PlannedStage for `cls` with options `params`."""
    return PlannedStage(
        index=index,
        name=cls.name,
        cls=cls,
        params=cls.Params.model_validate(params),
        batch_size=cls.batch_size,
        resources=Resources(),
        concurrency=None,
    )


def read_ledger(output) -> list[dict]:
    """Every ledger row committed under `output`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataprep import paths, storage

    parts = [u for u in storage.list_files(storage.join(str(output), paths.LEDGER_PARTS_DIR)) if u.endswith(".parquet")]
    if not parts:
        return []
    return pa.concat_tables([pq.read_table(p) for p in parts]).to_pylist()


def write_config(path, *, input, output, stages: list[str], plugins=(), sink: str = "{}"):
    """Write a job config naming `stages` (plain names, default options) and return its path."""
    lines = [f"input: {input}", f"output: {output}", f"plugins: [{', '.join(plugins)}]", "stages:"]
    lines += [f"  - stage: {name}" for name in stages]
    lines.append(f"sink: {sink}")
    path.write_text("\n".join(lines) + "\n")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
