"""Commit records: what counts as done, what a killed run leaves, who may commit."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pytest

from dataprep import commit, ledger, owner
from dataprep.sink import ShardWriter


def _write_shard(output, keys, start=0):
    counter = itertools.count(start)
    writer = ShardWriter(str(output), max_samples=100, max_bytes=10**9, next_index=lambda: next(counter))
    writer.write_table(pa.table({"key": keys, "source": ["/x"] * len(keys),
                                 "media": pa.array([b"m"] * len(keys), pa.large_binary()),
                                 "media_ext": ["mp4"] * len(keys)}))
    writer.close()


def test_committed_keys_from_shards_and_ledger(tmp_path):
    _write_shard(tmp_path, ["a", "b"])
    rows = pa.table({"key": ["c"], "source": ["/c"], "_reject": ["size:min_side"]})
    ledger.write_part(str(tmp_path), ledger.rejects_table(rows, stage="s", stage_index=1, score_columns=()))
    assert commit.committed_keys(str(tmp_path)) == {"a", "b", "c"}
    assert commit.next_shard_index(str(tmp_path)) == 1


def test_orphans_of_a_killed_run_are_removed(tmp_path):
    _write_shard(tmp_path, ["a"])
    shards = tmp_path / "shards"
    (shards / "shard-000007.tar").write_bytes(b"half")  # renamed but never committed
    (shards / "shard-000008-abc.tar.partial").write_bytes(b"half")
    (tmp_path / "_work/manifest/shard-000007.parquet").write_bytes(b"x")
    assert commit.has_orphans(str(tmp_path))
    removed = commit.clean_orphans(str(tmp_path))
    assert len(removed) == 3
    assert sorted(p.name for p in shards.iterdir()) == ["shard-000000.stats.json", "shard-000000.tar"]
    assert not commit.has_orphans(str(tmp_path))


def test_parent_done_only_when_every_child_is(tmp_path):
    commit.write_lineage(str(tmp_path), ["v"], [["v_c0000", "v_c0001"]])
    commit.write_lineage(str(tmp_path), ["v_c0001"], [["v_c0001_c0000"]])
    assert commit.done_parents(str(tmp_path), {"v_c0000"}) == set()
    assert commit.done_parents(str(tmp_path), {"v_c0000", "v_c0001_c0000"}) == {"v", "v_c0001"}


def test_superseded_run_cannot_commit(tmp_path):
    old = owner.take_ownership(str(tmp_path))
    owner.take_ownership(str(tmp_path))
    rows = pa.table({"key": ["c"], "source": ["/c"], "_reject": ["x"]})
    with pytest.raises(owner.NotOwnerError):
        ledger.write_part(str(tmp_path), ledger.rejects_table(rows, stage="s", stage_index=1, score_columns=()),
                          token=old)
