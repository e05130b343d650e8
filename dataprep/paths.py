"""Every path inside an output folder (local or s3://), defined once.

    OUTPUT/
      shards/[BUCKET/]shard-NNNNNN.tar         samples
      shards/[BUCKET/]shard-NNNNNN.stats.json  the shard's commit record
      manifest.parquet  rejects.parquet  summary.json
      _work/final.json                         which committed parts the final files were made of
      _work/noop.json                          the versions of what a run that had nothing to do depended on
      _work/job.json                           the config fingerprint of the job that owns the folder
      _work/owner                              the token of the run allowed to commit
      _work/owners/NANOS-TOKEN                 every run that took ownership, in order
      _work/manifest/shard-NNNNNN.parquet      manifest rows of one committed shard
      _work/rejects/SSS-HASH.parquet           ledger parts
      _work/lineage/HASH.parquet               parent key -> child keys of split stages
      _work/segment-SSS/                       rows entering global stage SSS (Parquet), `_SUCCESS` when whole
"""

from __future__ import annotations

import re

from dataprep import storage

SHARDS_DIR = "shards"
MANIFEST_PARTS_DIR = "_work/manifest"
LEDGER_PARTS_DIR = "_work/rejects"
LINEAGE_DIR = "_work/lineage"
OWNER_FILE = "_work/owner"
# One empty file per run that took ownership, named so that they sort in the order they took it.
OWNERS_DIR = "_work/owners"
JOB_FILE = "_work/job.json"
FINAL_STATE = "_work/final.json"
NOOP_STATE = "_work/noop.json"
MANIFEST = "manifest.parquet"
REJECTS = "rejects.parquet"
SUMMARY = "summary.json"
SEGMENT_DONE = "_SUCCESS"
_SHARD_FILE = re.compile(r"shard-(\d+)\.(?:tar|stats\.json)$")


def shard_name(index: int) -> str:
    """File stem of the index-th shard."""
    return f"shard-{index:06d}"


def shard_index(uri: str) -> int | None:
    """The number of the shard a tar or stats file belongs to; None for any other file."""
    match = _SHARD_FILE.search(uri)
    return int(match.group(1)) if match else None


def shard_path(subdir: str, index: int) -> str:
    """The tar of shard `index`, relative to the output (`shards/[BUCKET/]shard-NNNNNN.tar`)."""
    return "/".join(p for p in (SHARDS_DIR, subdir, f"{shard_name(index)}.tar") if p)


def stats_path(shard: str) -> str:
    """The commit record of a shard, given the shard's tar path."""
    return shard[: -len(".tar")] + ".stats.json"


def manifest_part(index: int) -> str:
    """The manifest rows of shard `index`, relative to the output."""
    return f"{MANIFEST_PARTS_DIR}/{shard_name(index)}.parquet"


def ledger_part(stage_index: int, digest: str) -> str:
    """A ledger part of the stage at `stage_index`, named by a hash of its keys."""
    return f"{LEDGER_PARTS_DIR}/{stage_index:03d}-{digest}.parquet"


def lineage_part(digest: str) -> str:
    """A lineage part, named by a hash of its parents."""
    return f"{LINEAGE_DIR}/{digest}.parquet"


def segment_dir(stage_index: int) -> str:
    """The Parquet rows entering the global stage at `stage_index`."""
    return f"_work/segment-{stage_index:03d}"


def under(output: str, relative: str) -> str:
    """`relative` inside `output`."""
    return storage.join(output, relative)
