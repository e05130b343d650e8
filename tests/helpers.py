"""Small builders shared by tests: planned stages without a config file."""

from __future__ import annotations

from typing import Any

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


def moto_server():
    """A context manager: a moto S3 server on 127.0.0.1 (skips the test when moto is missing); yields the
    environment that points boto3 and dataprep at it."""
    import contextlib
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import time

    import pytest

    @contextlib.contextmanager
    def serve():
        server = shutil.which("moto_server", path=os.path.dirname(sys.executable))
        if server is None:
            pytest.skip("moto_server is not installed (pip install 'moto[server]')")
        port = free_port()
        proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        try:
            yield dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="testing",
                       AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    return serve()


# Stages of the shipped configs that load models or read what they write: tests about cutting, sharding,
# reading and resuming leave them out, so they do not spend minutes on tiny VAEs and VLMs.
MODEL_STAGES = frozenset({"clip_embed", "aesthetic_filter", "watermark_filter", "clip_similarity_filter",
                          "semantic_dedup", "vlm_caption", "text_embed", "vae_latents"})


def without_models(config: Any) -> Any:
    """A loaded JobConfig, or a config dict, without its model stages; shards bucketed by `bucket` alone."""
    if isinstance(config, dict):
        config["stages"] = [s for s in config["stages"] if s["stage"] not in MODEL_STAGES]
        if config.get("sink", {}).get("bucket_path"):
            config["sink"]["bucket_path"] = "{bucket}"
        return config
    config.stages = [s for s in config.stages if s.stage not in MODEL_STAGES]
    if config.sink.bucket_path:
        config.sink.bucket_path = "{bucket}"
    return config
