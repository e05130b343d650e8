"""S3 input and output against a real S3-protocol server on loopback (moto in server mode)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import moto_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server on 127.0.0.1; yields the environment that points boto3 at it."""
    with moto_server() as env:
        yield dict(env, PYTHONPATH=str(REPO))


def test_job_from_s3_to_s3(s3_server, sample_dir):
    import boto3

    env = s3_server
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket="media")
    for path in sample_dir.iterdir():
        s3.upload_file(str(path), "media", f"raw/{path.name}")
    cli = [sys.executable, "-m", "dataprep.cli"]
    args = ["run", str(REPO / "configs/quickstart.yaml"), "--input", "s3://media/raw/", "--output",
            "s3://media/prepared", "-q"]
    subprocess.run([*cli, *args], env=env, check=True, timeout=300, cwd=REPO)
    summary = json.loads(subprocess.run([*cli, "stats", "s3://media/prepared", "--json"], env=env, check=True,
                                        capture_output=True, text=True).stdout)
    inputs = len((sample_dir / "manifest.jsonl").read_text().splitlines())
    assert summary["totals"]["kept"] + summary["totals"]["rejected"] == inputs
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="media", Prefix="prepared/")["Contents"]}
    assert {"prepared/manifest.parquet", "prepared/rejects.parquet", "prepared/summary.json"} <= keys
    assert not [k for k in keys if k.endswith((".partial",)) or ".tmp-" in k]
    shards = sorted(k for k in keys if k.endswith(".tar"))
    assert len(shards) == summary["totals"]["shards"] and all(k.replace(".tar", ".stats.json") in keys for k in shards)
    listing = subprocess.run([*cli, "inspect", f"s3://media/{shards[0]}"], env=env, check=True, capture_output=True,
                             text=True).stdout
    assert "samples" in listing

    again = subprocess.run([*cli, *args], env=env, check=True, timeout=300, cwd=REPO, capture_output=True, text=True)
    assert "(0 new rows" in again.stdout


def test_global_stage_segment_on_s3_and_resume(s3_server, sample_dir, tmp_path):
    """The Parquet segment before a global stage is written to and read from S3, and a rerun reuses it."""
    import boto3

    env = s3_server
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket="seg")
    config = tmp_path / "job.yaml"
    config.write_text(f"input: {sample_dir}\noutput: s3://seg/out\nplugins: [tests.plugin_stages]\n"
                      "stages:\n  - stage: ingest\n  - stage: probe\n  - stage: same_caption\n  - stage: size_filter\n")
    cli = [sys.executable, "-m", "dataprep.cli"]
    subprocess.run([*cli, "run", str(config), "-q"], env=env, check=True, timeout=300, cwd=REPO)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="seg", Prefix="out/")["Contents"]}
    segment = [k for k in keys if k.startswith("out/_work/segment-002/")]
    assert "out/_work/segment-002/_SUCCESS" in segment and any(k.endswith(".parquet") for k in segment)
    summary = json.loads(s3.get_object(Bucket="seg", Key="out/summary.json")["Body"].read())
    inputs = len((sample_dir / "manifest.jsonl").read_text().splitlines())
    assert summary["totals"]["kept"] + summary["totals"]["rejected"] == inputs
    funnel = {f["stage"]: f for f in summary["funnel"]}
    assert funnel["same_caption"]["reasons"] == {"duplicate": 4}
    again = subprocess.run([*cli, "run", str(config), "-q"], env=env, check=True, timeout=300, cwd=REPO,
                           capture_output=True, text=True)
    assert "(0 new rows" in again.stdout
