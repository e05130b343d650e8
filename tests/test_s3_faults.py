"""S3 that fails: dataprep's storage and whole jobs from s3:// to s3:// through a proxy in front of moto
(tests/s3_fault_proxy.py) that answers a tenth of the requests with 500, 503 SlowDown or a dropped connection.

Each job must end exactly once (every input key in one shard or in the ledger, kept keys equal to a run
without faults, no orphan files), and every object ever made visible must have been whole.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from dataprep import storage
from tests.helpers import moto_server
from tests.s3_fault_proxy import KINDS, Created, FaultProxy
from tests.test_resume_kill_t2v import Output, _check_exactly_once

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
# The fault rate for jobs: one request in ten fails.
JOB_FAULTS = 0.1
# The global stage after the quickstart's stages: tests.plugin_stages' `same_caption` drops repeated captions
# (4 in the sample set). What is tested is the runner's Parquet segment before any global stage, and
# `minhash_dedup` would cost this 49-row job ~55 s more CPU (11 Ray datasets) in each of its two runs.
GLOBAL_STAGE = "same_caption"
# Variables that override dataprep's retry settings: the tests run without them.
_RETRY_ENV = ("AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE")


@pytest.fixture(scope="module")
def s3(sample_dir):
    """A moto server holding the sample set under s3://media/raw/ (uploaded directly, without faults);
    yields the environment that points dataprep at moto itself, with dataprep's own retry settings."""
    import boto3

    with moto_server() as env:
        env = {k: v for k, v in env.items() if k not in _RETRY_ENV}
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket="media")
        for path in sorted(sample_dir.iterdir()):
            client.upload_file(str(path), "media", f"raw/{path.name}")
        yield dict(env, PYTHONPATH=str(REPO))


@pytest.fixture
def through_proxy(s3, monkeypatch):
    """Point this process's storage at a proxy: call with the proxy's URL (and extra environment)."""

    def point(url: str, **extra: str) -> None:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            monkeypatch.setenv(name, s3[name])
        for name in _RETRY_ENV:
            monkeypatch.delenv(name, raising=False)
        for name, value in {"AWS_ENDPOINT_URL": url, **extra}.items():
            monkeypatch.setenv(name, value)
        storage._client.cache_clear()  # the client is made once per process, from the environment

    yield point
    storage._client.cache_clear()


def _whole(created: Created) -> None:
    """Raise unless an object made visible parses to its end (a tar with its end-of-archive blocks, a
    Parquet file with its footer, a JSON document)."""
    name, data = created.path, created.body
    try:
        if name.endswith(".tar"):
            assert len(data) % 512 == 0 and data.endswith(b"\0" * 1024), "no end-of-archive blocks"
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for member in tar:
                    assert len(tar.extractfile(member).read()) == member.size, f"member {member.name} cut short"
        elif name.endswith(".parquet"):
            pq.read_table(io.BytesIO(data))
        elif name.endswith(".json"):
            json.loads(data)
    except (AssertionError, tarfile.TarError, ValueError) as exc:  # pyarrow's and json's errors are ValueErrors
        raise AssertionError(f"{name} was visible with {len(data)} bytes, not whole: {exc}") from exc


def test_storage_retries_every_kind_of_fault(s3, through_proxy, tmp_path):
    """Each storage function gets its answer through every kind of fault, and each object is only ever
    visible with all its bytes; with retries off the same calls fail, so it is the retries that carry them."""
    from botocore.exceptions import ClientError

    written = {f"/media/unit/{i}.bin": os.urandom(5000 * (i + 1)) for i in range(8)}
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 2**20))  # above boto3's 8 MB threshold: a multipart upload
    written["/media/unit/big.bin"] = big.read_bytes()

    def exercise() -> None:
        for path, data in written.items():
            if path.endswith("big.bin"):
                continue
            storage.write_atomic(f"s3:/{path}", data)
            assert storage.read_bytes(f"s3:/{path}") == data
            assert storage.exists(f"s3:/{path}") and not storage.exists(f"s3:/{path}.missing")
        storage.upload_atomic(str(big), "s3://media/unit/big.bin")
        with storage.open_local("s3://media/unit/big.bin") as local:
            assert Path(local).read_bytes() == written["/media/unit/big.bin"]
        assert len(storage.list_files("s3://media/unit")) == len(written)

    with FaultProxy(s3["AWS_ENDPOINT_URL"], fraction=0.25, seed=3) as proxy:
        through_proxy(proxy.url)
        exercise()
        assert set(proxy.injected) == set(KINDS), proxy.injected
        assert {c.path for c in proxy.created} == set(written)
        assert all(c.body == written[c.path] for c in proxy.created), "an object was visible with other bytes"
        proxy.fail_next(1, "lost")  # half the body, then the connection drops: after botocore's retries
        assert storage.read_bytes("s3://media/unit/0.bin") == written["/media/unit/0.bin"]
        through_proxy(proxy.url, AWS_MAX_ATTEMPTS="1")
        proxy.fail_next(1, "500")
        with pytest.raises(ClientError):  # not "no such object": a missing owner file stops a run
            storage.exists("s3://media/unit/0.bin")
        with pytest.raises(Exception):  # noqa: B017 - botocore and s3transfer raise several kinds
            exercise()


def test_pyarrow_filesystem_keeps_its_retry_settings_on_workers(s3, through_proxy):
    """Ray sends the segment's filesystem to its workers by pickle, and there it must retry as configured
    (pyarrow's own pickling brings back its default of 3 attempts): with one attempt, one 503 fails a write."""
    table = pa.table({"i": list(range(100))})
    with FaultProxy(s3["AWS_ENDPOINT_URL"], fraction=0) as proxy:
        through_proxy(proxy.url, AWS_MAX_ATTEMPTS="1")
        fs = pickle.loads(pickle.dumps(storage.pyarrow_filesystem("s3://media/segment")))
        proxy.fail_next(1, "503")
        with pytest.raises(OSError, match="SLOW_DOWN"):
            pq.write_table(table, "media/segment/part.parquet", filesystem=fs)
        through_proxy(proxy.url)
        fs = pickle.loads(pickle.dumps(storage.pyarrow_filesystem("s3://media/segment")))
        proxy.fail_next(1, "503")
        pq.write_table(table, "media/segment/part.parquet", filesystem=fs)
        assert pq.read_table("media/segment/part.parquet", filesystem=fs).equals(table)
        assert proxy.injected == {"503": 2}


def _config(tmp_path: Path, name: str, *, global_stage: bool) -> Path:
    """configs/quickstart.yaml on the sample set on S3, writing to s3://media/NAME; with `global_stage`,
    GLOBAL_STAGE follows its stages (Ray Data writes and reads the Parquet segment before it)."""
    config = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    if global_stage:
        config["plugins"] = ["tests.plugin_stages"]
        config["stages"].append({"stage": GLOBAL_STAGE})
    config["sink"]["max_samples"] = 4  # many shards, so many commits meet faults
    config.update(input="s3://media/raw/", output=f"s3://media/{name}")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(config: Path, env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "dataprep.cli", "run", str(config), "-q"], env=env, cwd=cwd,
                          timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(s3, sample_dir, tmp_path_factory) -> Output:
    """The output of the job with the global stage, run without faults; it accounts for every input."""
    folder = tmp_path_factory.mktemp("reference")
    _run(_config(folder, "reference", global_stage=True), s3, folder)
    output = Output("s3://media/reference", s3)
    totals = json.loads(output.read("summary.json"))["totals"]
    assert totals["kept"] + totals["rejected"] == len((sample_dir / "manifest.jsonl").read_text().splitlines())
    return output


class _Expected:
    """What a job must end with, as the manifest and rejects files `_check_exactly_once` reads from its
    reference: `kept` and `rejected` keys."""

    def __init__(self, kept: list[str], rejected: list[str]) -> None:
        self.files = {"manifest.parquet": kept, "rejects.parquet": rejected}

    def read(self, name: str) -> bytes:
        return storage.parquet_bytes(pa.table({"key": pa.array(self.files[name], pa.string())}))


def _job_under_faults(s3: dict[str, str], tmp_path: Path, name: str, *, global_stage: bool,
                      expected: Output | _Expected) -> FaultProxy:
    """Run the job through faults; check its output exactly once against `expected` (an output or _Expected),
    every object it ever made visible whole, and no multipart upload left open."""
    with FaultProxy(s3["AWS_ENDPOINT_URL"], fraction=JOB_FAULTS, seed=11) as proxy:
        _run(_config(tmp_path, name, global_stage=global_stage), {**s3, "AWS_ENDPOINT_URL": proxy.url}, tmp_path)
    assert set(proxy.injected) == set(KINDS), f"not every kind of fault was made: {proxy.injected}"
    # Every boto3 client of the job, in the driver and in every worker, is storage's, with its retries.
    assert set(proxy.declared_attempts) - {None} == {storage.MAX_ATTEMPTS}, proxy.declared_attempts
    output = Output(f"s3://media/{name}", s3)
    _check_exactly_once(output, expected)
    for created in proxy.created:
        _whole(created)
    kinds = Counter(c.path.rsplit(".", 1)[-1] for c in proxy.created if c.path.startswith(f"/media/{name}/"))
    assert kinds["tar"] and kinds["parquet"] and kinds["json"], kinds
    uploads = output._s3().list_multipart_uploads(Bucket="media", Prefix=f"{name}/").get("Uploads", [])
    assert not uploads, f"multipart uploads left open: {[u['Key'] for u in uploads]}"
    return proxy


def test_quickstart_job_under_s3_faults_commits_exactly_once(s3, reference, tmp_path):
    """The quickstart job keeps what the reference kept plus what its last stage, the global one, removed."""
    ledger = pq.read_table(io.BytesIO(reference.read("rejects.parquet")))
    deduped = ledger.filter(pc.equal(ledger.column("stage"), GLOBAL_STAGE)).column("key").to_pylist()
    assert deduped, f"the sample set's repeated captions must reach {GLOBAL_STAGE}"
    kept = pq.read_table(io.BytesIO(reference.read("manifest.parquet"))).column("key").to_pylist() + deduped
    rejected = sorted(set(ledger.column("key").to_pylist()) - set(deduped))
    _job_under_faults(s3, tmp_path, "quickstart", global_stage=False, expected=_Expected(kept, rejected))


def test_global_stage_segment_under_s3_faults_commits_exactly_once(s3, reference, tmp_path):
    """The Parquet segment before the global stage is written and read back by Ray Data through the faults."""
    proxy = _job_under_faults(s3, tmp_path, "global", global_stage=True, expected=reference)
    segment = [c.path for c in proxy.created if c.path.startswith("/media/global/_work/segment-")
               and c.path.endswith(".parquet")]
    assert segment, "the segment's Parquet files did not go through the proxy"
