"""Exactly once where it is hardest: a t2v-shaped job (a split stage with lineage, a global stage with its
Parquet segment, bucketed shards) killed with SIGKILL at the moments that matter, locally and on S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.helpers import without_models
from tests.kill import kill_session, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
FAULTS = Path(__file__).resolve().parent / "faults"
# Videos of the sample set with cuts (split into several clips), a near-duplicate pair (the global stage
# removes one), a portrait and a too-short one, and a corrupt file: every path through the job.
VIDEOS = ["cuts_three_scenes.mp4", "cuts_colour_blocks.mp4", "cuts_portrait.mp4", "testsrc_landscape.mp4",
          "dup_testsrc_reencoded.mp4", "mandelbrot_zoom.mp4", "dup_mandelbrot_resized.mp4", "too_short.mp4",
          "broken_truncated.mp4"]


# The stages that give a t2v job its shape: a source, a split, per-row stages, a global stage, buckets.
SHAPE = frozenset({"ingest", "probe", "size_filter", "scene_split", "standardize", "frame_sample", "minhash_dedup"})
# With the t2v config's filters that need no model: they reject some clips of a video before the global stage
# while its other clips go on, so a resumed run meets videos that are partly committed.
STAGES = SHAPE | {"caption_safety", "letterbox", "exposure_filter", "blur_filter", "motion_filter"}


def _config(folder: Path, inputs: str, out: str, stages: frozenset[str] = STAGES) -> Path:
    # The t2v job without its model stages (text, face and nsfw detection run small models too): resume is
    # what is tested, and these filters decide the same way in every run.
    config = without_models(yaml.safe_load((REPO / "configs" / "t2v.yaml").read_text()))
    config["stages"] = [s for s in config["stages"] if s["stage"] in stages]
    config.update(input=inputs, output=out)
    for stage in config["stages"]:
        if stage["stage"] == "standardize":
            stage["preset"] = "ultrafast"  # the encoder's quality is not what is tested
    config["sink"]["max_samples"] = 2  # many commits, so kills land between them
    path = folder / f"{Path(out).name or 'job'}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _manifest(sample_dir: Path, folder: Path) -> Path:
    captions = {json.loads(line)["uri"]: json.loads(line)["caption"]
                for line in (sample_dir / "manifest.jsonl").read_text().splitlines()}
    path = folder / "videos.jsonl"
    path.write_text("".join(json.dumps({"uri": str(sample_dir / v), "caption": captions.get(v)}) + "\n"
                            for v in VIDEOS))
    return path


def _start(config: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dataprep.cli", "run", str(config), "-q"], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


class Output:
    """What a local or S3 output holds, as file names relative to it and their bytes."""

    def __init__(self, root: str, env: dict[str, str]) -> None:
        self.root, self.env = root, env

    def names(self) -> list[str]:
        if self.root.startswith("s3://"):
            bucket, prefix = self.root[5:].split("/", 1)
            pages = self._s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
            return [o["Key"][len(prefix) + 1:] for page in pages for o in page.get("Contents", [])]
        root = Path(self.root)
        return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()] if root.exists() else []

    def read(self, name: str) -> bytes:
        if self.root.startswith("s3://"):
            bucket, prefix = self.root[5:].split("/", 1)
            return self._s3().get_object(Bucket=bucket, Key=f"{prefix}/{name}")["Body"].read()
        return (Path(self.root) / name).read_bytes()

    def _s3(self):  # noqa: ANN202
        import boto3

        return boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")


def _moments(output: Output, flag: Path) -> list[tuple[str, object, dict[str, str]]]:
    def has(pred) -> bool:
        return any(pred(n) for n in output.names())

    return [
        ("during scene split", lambda: has(lambda n: n.startswith("_work/lineage/")), {}),
        ("during the segment write of the global stage",
         lambda: has(lambda n: "/segment-" in f"/{n}" and n.endswith(".parquet"))
         and not has(lambda n: n.endswith("_SUCCESS")), {}),
        ("between a shard's rename and its stats file", lambda: flag.exists(),
         {"DATAPREP_TEST_HOLD_BEFORE_STATS": str(flag)}),
        ("after a bucketed shard", lambda: has(lambda n: n.startswith("shards/") and "/" in n[7:]
                                                and n.endswith(".stats.json")), {}),
    ]


def _check_exactly_once(output: Output, reference: Output) -> None:
    manifest = pq.read_table(_parquet(output, "manifest.parquet")).column("key").to_pylist()
    rejects = pq.read_table(_parquet(output, "rejects.parquet")).column("key").to_pylist()
    expected = pq.read_table(_parquet(reference, "manifest.parquet")).column("key").to_pylist()
    expected_rejects = pq.read_table(_parquet(reference, "rejects.parquet")).column("key").to_pylist()
    assert sorted(manifest) == sorted(expected)
    assert sorted(rejects) == sorted(expected_rejects)
    names = output.names()
    # Where a duplicate could appear before finalize deduplicates: shard members, ledger parts, manifest parts.
    in_shards: list[str] = []
    for stats_name in [n for n in names if n.endswith(".stats.json")]:
        stats = json.loads(output.read(stats_name))
        members = [m.name for m in tarfile.open(fileobj=_bytes(output.read(stats_name.replace(".stats.json", ".tar"))))]
        keys_in_tar = list(dict.fromkeys(m.split(".", 1)[0] for m in members))
        assert keys_in_tar == stats["keys"] and len(members) == len(set(members))
        in_shards += stats["keys"]
    assert not [k for k, n in Counter(in_shards).items() if n > 1]
    assert sorted(in_shards) == sorted(manifest)
    ledger_keys = [k for n in names if n.startswith("_work/rejects/")
                   for k in pq.read_table(_parquet(output, n)).column("key").to_pylist()]
    assert not [k for k, n in Counter(ledger_keys).items() if n > 1] and sorted(ledger_keys) == sorted(rejects)
    part_keys = [k for n in names if n.startswith("_work/manifest/")
                 for k in pq.read_table(_parquet(output, n)).column("key").to_pylist()]
    assert sorted(part_keys) == sorted(manifest)
    assert not set(manifest) & set(rejects)
    assert not [n for n in names if n.endswith(".partial") or ".tmp-" in n]
    tars = {n[:-4] for n in names if n.endswith(".tar")}
    assert tars == {n[: -len(".stats.json")] for n in names if n.endswith(".stats.json")}


def _bytes(data: bytes):  # noqa: ANN202
    import io

    return io.BytesIO(data)


def _parquet(output: Output, name: str):  # noqa: ANN202
    return _bytes(output.read(name))


@pytest.fixture(scope="module")
def reference(sample_dir, tmp_path_factory) -> tuple[Path, Path]:
    """The job's input manifest and the output of one uninterrupted local run, which the killed runs (local and
    on S3: the storage does not change which rows are kept) must end up equal to."""
    folder = tmp_path_factory.mktemp("reference")
    inputs = _manifest(sample_dir, folder)
    out = folder / "reference"
    subprocess.run([sys.executable, "-m", "dataprep.cli", "run", str(_config(folder, str(inputs), str(out))), "-q"],
                   env=_env(), cwd=folder, check=True, timeout=600, capture_output=True)
    kept = pq.read_table(out / "manifest.parquet").column("key").to_pylist()
    dropped = pq.read_table(out / "rejects.parquet").column("key").to_pylist()
    assert {k.rsplit("_c", 1)[0] for k in kept if "_c" in k} & {k.rsplit("_c", 1)[0] for k in dropped if "_c" in k}, \
        "no video has clips both kept and rejected: the partly committed case is not exercised"
    return inputs, out


def _run_killed(tmp_path: Path, reference: tuple[Path, Path], out: str, env: dict[str, str],
                moments: frozenset[str] | None = None) -> tuple[Output, list[str]]:
    """Kill a run at each moment (all of `_moments`, or those named), then finish it; compare with `reference`."""
    inputs, reference_out = reference
    output = Output(out, env)
    config = _config(tmp_path, str(inputs), out)
    killed = []
    for label, condition, extra in _moments(output, tmp_path / "holding"):
        if moments is not None and label not in moments:
            continue
        proc = _start(config, {**env, **extra}, tmp_path)
        if wait_until(proc, condition, timeout=240):
            kill_session(proc)
            killed.append(label)
        else:
            assert proc.returncode == 0, label
    final = subprocess.run([sys.executable, "-m", "dataprep.cli", "run", str(config), "-q"], env=env, cwd=tmp_path,
                           timeout=600, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-2000:]
    _check_exactly_once(output, Output(str(reference_out), env))
    return output, killed


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(FAULTS), str(REPO)])
    return env


def test_t2v_job_killed_at_each_moment_resumes_exactly_once(tmp_path, reference):
    _, killed = _run_killed(tmp_path, reference, str(tmp_path / "killed"), _env())
    assert len(killed) >= 3, f"only killed {killed}"
    assert "between a shard's rename and its stats file" in killed


def test_t2v_job_on_s3_killed_resumes_exactly_once(tmp_path, reference):
    from tests.helpers import moto_server

    with moto_server() as s3_env:
        env = {**s3_env, "PYTHONPATH": _env()["PYTHONPATH"]}
        Output("s3://prepared/t2v", env)._s3().create_bucket(Bucket="prepared")
        # The storage is what differs here: the same job killed where S3 has no rename: in the middle of the
        # global stage's segment (Ray's Parquet writer puts its files one by one), and between a shard's copy
        # into place and its stats file. The other moments test what does not depend on the storage; the local
        # test kills there.
        moments = frozenset({"during the segment write of the global stage",
                             "between a shard's rename and its stats file"})
        _, killed = _run_killed(tmp_path, reference, "s3://prepared/t2v", env, moments)
        assert sorted(killed) == sorted(moments), f"only killed {killed}"
