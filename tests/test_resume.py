"""Resume by hash-bucketed anti-join: what is new, with no task holding every committed key."""

from __future__ import annotations

import json

import pyarrow as pa

from dataprep import commit, ledger, paths, resume
from dataprep.executor import LocalExecutor


def _commit_shard(out, index: int, keys: list[str]) -> None:
    uri = out / paths.stats_path(paths.shard_path("", index))
    uri.parent.mkdir(parents=True, exist_ok=True)
    uri.write_text(json.dumps({"shard": paths.shard_path("", index), "count": len(keys), "bytes": 1, "keys": keys}))


def _commit_ledger(out, keys: list[str]) -> None:
    rows = [{"key": k, "source": k, "stage": "s", "stage_index": 1, "reason": "x:y"} for k in keys]
    ledger.write_part(str(out), pa.Table.from_pylist(rows, schema=ledger.SCHEMA))


def _listing(keys: list[str]) -> pa.Table:
    return pa.table({"key": keys, "source": [f"/in/{k}" for k in keys], "_reject": pa.nulls(len(keys), pa.string())})


class Recording(LocalExecutor):
    """A local executor that remembers the committed keys each anti-join call received."""

    def __init__(self) -> None:
        self.done_sizes: list[int] = []

    def call(self, fn, *args, num_returns=1):
        if fn is resume.new_in_bucket:
            self.done_sizes.append(args[0].num_rows)
        return super().call(fn, *args, num_returns=num_returns)


def _todo(out, keys: list[str], buckets: int, executor=None):
    executor = executor or LocalExecutor()
    done, conflicts = resume.committed_buckets(executor, str(out), buckets)
    parts = resume.split_pages(executor, [[_listing(keys[:5])], [_listing(keys[5:])]], buckets)
    handles, outcome = resume.anti_join(executor, parts, done, dedupe=True)
    rows = sorted(k for h in handles for k in h.column("key").to_pylist())
    return rows, outcome, conflicts


def test_new_rows_are_the_listing_less_shards_ledger_and_done_parents(tmp_path):
    _commit_shard(tmp_path, 0, ["a", "b", "v_c0000"])
    _commit_ledger(tmp_path, ["c", "v_c0001", "w_c0000"])
    commit.write_lineage(str(tmp_path), ["v", "w"], [["v_c0000", "v_c0001"], ["w_c0000", "w_c0001"]])
    listed = ["a", "b", "c", "d", "e", "v", "w", "d", "f", "g"]
    for buckets in (1, 4):
        rows, outcome, conflicts = _todo(tmp_path, listed, buckets)
        # v: every clip committed, skipped whole; w: one clip left, so w is redone and its done clip dropped later.
        assert rows == ["d", "e", "f", "g", "w"]
        assert outcome.rows == 5 and outcome.duplicates == 1
        assert outcome.partial == {"w_c0000"} and conflicts == []


def test_no_anti_join_task_receives_every_committed_key(tmp_path):
    keys = [f"k{i:03d}" for i in range(200)]
    _commit_shard(tmp_path, 0, keys[:100])
    _commit_ledger(tmp_path, keys[100:150])
    executor = Recording()
    rows, outcome, _ = _todo(tmp_path, keys, 8, executor)
    assert rows == keys[150:]
    assert len(executor.done_sizes) == 8 and sum(executor.done_sizes) == 150
    assert max(executor.done_sizes) < 150 / 2


def test_a_key_in_two_records_is_reported_as_a_conflict(tmp_path):
    _commit_shard(tmp_path, 0, ["a", "b"])
    _commit_ledger(tmp_path, ["b"])
    _, _, conflicts = _todo(tmp_path, ["a", "b", "c"], 2)
    assert len(conflicts) == 1 and any(c.endswith("shard-000000.stats.json") for c in conflicts[0])


def test_buckets_follow_the_root_so_clips_meet_their_video():
    keys = pa.array(["vid-1", "vid-1_c0000", "vid-1_c0003_c0001", "other"])
    ids = resume.bucket_ids(keys, 16)
    assert ids[0] == ids[1] == ids[2]
    assert list(resume.bucket_ids(keys, 16)) == list(ids)  # the same in every call (and process: no salted hash)
