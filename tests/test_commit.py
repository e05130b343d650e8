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


def test_lineage_parts_of_one_parent_add_up(tmp_path):
    # Two batches (or stages) recording children of one parent: neither part may replace the other.
    commit.write_lineage(str(tmp_path), ["v"], [["v_c0000"]])
    commit.write_lineage(str(tmp_path), ["v"], [["v_c0001"]])
    commit.write_lineage(str(tmp_path), ["v"], [["v_c0001"]])
    assert len(list((tmp_path / "_work/lineage").iterdir())) == 2
    assert commit.done_parents(str(tmp_path), {"v_c0001"}) == set()
    assert commit.done_parents(str(tmp_path), {"v_c0000", "v_c0001"}) == {"v"}


def test_superseded_run_cannot_commit(tmp_path):
    old = owner.take_ownership(str(tmp_path))
    owner.take_ownership(str(tmp_path))
    rows = pa.table({"key": ["c"], "source": ["/c"], "_reject": ["x"]})
    with pytest.raises(owner.NotOwnerError):
        ledger.write_part(str(tmp_path), ledger.rejects_table(rows, stage="s", stage_index=1, score_columns=()),
                          token=old)


def _shard_writer(output, token, start):
    counter = itertools.count(start)
    return ShardWriter(str(output), max_samples=100, max_bytes=10**9, next_index=lambda: next(counter), token=token)


def _rows(keys):
    return pa.table({"key": keys, "source": ["/x"] * len(keys), "media": pa.array([b"m"] * len(keys), pa.large_binary()),
                     "media_ext": ["mp4"] * len(keys)})


def _every_key_once(output) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in commit.commit_records(str(output)):
        for key in record.keys:
            counts[key] = counts.get(key, 0) + 1
    return counts


def test_a_commit_racing_a_new_owner_is_undone_at_the_next_start(tmp_path, monkeypatch):
    """The window between a worker's owner check and its write: the write lands after a new run took over."""
    from dataprep import storage

    old = owner.take_ownership(str(tmp_path))
    stale = _shard_writer(tmp_path, old, 0)
    stale.write_table(_rows(["a", "b"]))
    real_write = storage.write_atomic
    newer: list[str] = []

    def write_after_takeover(uri, data):
        if uri.endswith(".stats.json") and not newer:
            # The new run starts here: it takes over and reads what is committed (a and b are not yet).
            newer.append(owner.take_ownership(str(tmp_path)))
            commit.clean_orphans(str(tmp_path))
            assert commit.committed_keys(str(tmp_path)) == set()
        real_write(uri, data)

    monkeypatch.setattr(storage, "write_atomic", write_after_takeover)
    stale.close()  # passed its owner check before the takeover, writes its commit record after it
    monkeypatch.setattr(storage, "write_atomic", real_write)
    fresh = _shard_writer(tmp_path, newer[0], 10)  # the new run processes a and b, which it saw uncommitted
    fresh.write_table(_rows(["a"]))
    fresh.close()
    rejects = pa.table({"key": ["b"], "source": ["/b"], "_reject": ["size:min_side: 1 < 2"]})
    ledger.write_part(str(tmp_path), ledger.rejects_table(rejects, stage="s", stage_index=1, score_columns=()),
                      token=newer[0])
    assert _every_key_once(tmp_path) == {"a": 2, "b": 2}  # the race: both runs committed both keys

    owner.take_ownership(str(tmp_path))  # the next run starts
    removed = commit.clean_orphans(str(tmp_path))
    assert _every_key_once(tmp_path) == {"a": 1, "b": 1}
    assert sorted(p.rsplit("/", 1)[-1] for p in removed) == ["shard-000000.parquet", "shard-000000.stats.json",
                                                              "shard-000000.tar"]
    assert not (tmp_path / "shards/shard-000000.tar").exists() and (tmp_path / "shards/shard-000010.tar").exists()


def test_the_other_keys_of_a_superseded_record_become_uncommitted(tmp_path):
    """Removing a superseded shard also uncommits its other keys, so the run that removed it redoes them."""
    old = owner.take_ownership(str(tmp_path))
    writer = _shard_writer(tmp_path, old, 0)
    writer.write_table(_rows(["a", "z"]))
    writer.close()
    new = owner.take_ownership(str(tmp_path))
    writer = _shard_writer(tmp_path, new, 5)
    writer.write_table(_rows(["a"]))
    writer.close()
    owner.take_ownership(str(tmp_path))
    commit.clean_orphans(str(tmp_path))
    assert commit.committed_keys(str(tmp_path)) == {"a"}  # z is uncommitted again: the next run processes it
