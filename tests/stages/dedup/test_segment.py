"""`minhash_dedup` on the runner's Parquet segment (`executor.read(segment)`, as the runner hands it): read file
by file, never materialized, and shuffled by hash exchanges of the executor (Ray Data's hash shuffle on Ray), not
by tasks returning a value per partition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dataprep.columns import DUPLICATE_OF, REJECT
from dataprep.executor import LocalExecutor, Segment
from dataprep.ray_executor import RayExecutor
from dataprep.stages.dedup.stage import MinHashDedup
from tests.stages.dedup.local import dedup_in_process

WORDS = [f"w{i}" for i in range(5000)]


def _captions(n_groups: int, copies: int, singles: int, seed: int = 0) -> pa.Table:
    """Groups of `copies` captions of 12 words that differ in their last word only (bigram Jaccard
    0.83), shuffled among `singles` unrelated captions; `group` is -1 for a single."""
    rng = np.random.default_rng(seed)
    caps, group = [], []
    for g in range(n_groups):
        base = list(rng.choice(WORDS, 11))
        for _ in range(copies):
            caps.append(" ".join([*base, str(rng.integers(1 << 30))]))
            group.append(g)
    for _ in range(singles):
        caps.append(" ".join(rng.choice(WORDS, 12)))
        group.append(-1)
    order = rng.permutation(len(caps))
    return pa.table({"key": [f"k{i:05d}" for i in range(len(caps))],
                     "caption": [caps[i] for i in order], "group": [group[i] for i in order],
                     "width": np.full(len(caps), 640), "height": np.full(len(caps), 360)})


def _segment(tmp_path, table: pa.Table, files: int) -> Segment:
    """`table` written as `files` Parquet files, as the runner writes a segment."""
    bounds = np.linspace(0, table.num_rows, files + 1).astype(int)
    paths = []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        paths.append(str(tmp_path / f"part-{i}.parquet"))
        pq.write_table(table.slice(a, b - a), paths[-1])
    return Segment(str(tmp_path), tuple(paths), sum(Path(p).stat().st_size for p in paths))


def _decisions(out: pa.Table) -> dict[str, tuple]:
    return {k: (r, d) for k, r, d in zip(out.column("key").to_pylist(), out.column(REJECT).to_pylist(),
                                         out.column(DUPLICATE_OF).to_pylist(), strict=True)}


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return _captions(n_groups=60, copies=3, singles=300)


def test_segment_gives_the_decisions_of_the_whole_table(tmp_path, table):
    stage = MinHashDedup(MinHashDedup.Params(mode="text", num_partitions=3))
    ex = LocalExecutor()
    out = stage.run(ex.read(_segment(tmp_path, table, files=4)), ex)
    assert out.num_rows == table.num_rows
    assert set(out.column_names) == set(table.column_names) | {REJECT, DUPLICATE_OF, "dup_cluster"}
    assert _decisions(out) == _decisions(dedup_in_process(stage, table, n_parts=1))
    # Each group of 3 keeps one row: 2 removed per group, no single removed.
    removed = [g for g, r in zip(out.column("group").to_pylist(), out.column(REJECT).to_pylist(), strict=True)
               if r == "duplicate"]
    assert sorted(removed) == sorted(g for g in range(60) for _ in range(2))


def test_local_exchange_meets_equal_keys_in_one_call_over_several_partitions():
    seen = []

    def record(t: pa.Table) -> pa.Table:
        seen.append(set(t.column("k").to_pylist()))
        return t

    keys = np.arange(200, dtype=np.uint64) % 37
    out = LocalExecutor().exchange(pa.table({"k": keys}), "k", record, partitions=4)
    assert out.num_rows == 200
    assert len(seen) == 4                                   # one call per partition
    assert all(a.isdisjoint(b) for i, a in enumerate(seen) for b in seen[i + 1:])


class Watched(RayExecutor):
    """A RayExecutor that fails on materializing the stage's input, and counts its task calls."""

    def __init__(self) -> None:
        super().__init__()
        self.returns: list[int] = []

    def blocks(self, ds):
        raise AssertionError("the segment was materialized")

    def call(self, fn, *args, num_returns: int = 1):
        self.returns.append(num_returns)
        return super().call(fn, *args, num_returns=num_returns)


def test_ray_reads_the_segment_by_file_and_shuffles_with_ray_data(ray_session, tmp_path, table):
    ray = ray_session
    stage = MinHashDedup(MinHashDedup.Params(mode="text", num_partitions=3))
    segment = _segment(tmp_path, table, files=4)
    executor = Watched()
    local = LocalExecutor()
    want = _decisions(stage.run(local.read(segment), local))
    out = stage.run(executor.read(segment), executor)
    # Lazy: each file is read again when the output is consumed, not held since the start.
    first = pq.read_table(segment.files[0])
    pq.write_table(first.set_column(first.schema.get_field_index("width"), "width",
                                    pa.array(np.ones(first.num_rows, np.int64))), segment.files[0])
    got = pa.concat_tables(ray.get(out.to_arrow_refs()))
    assert _decisions(got) == want
    assert sorted(got.filter(pc.equal(got.column("width"), 1)).column("key").to_pylist()) == \
        sorted(first.column("key").to_pylist())
    # No task returned one value per partition: the exchanges were Ray Data's shuffles.
    assert set(executor.returns) <= {1}


def test_route_hands_each_key_all_of_its_rows(ray_session):
    ray = ray_session
    t = pa.table({"p": np.arange(300) % 11, "x": np.arange(300)})
    for executor in (LocalExecutor(), RayExecutor()):
        data = t if isinstance(executor, LocalExecutor) else ray.data.from_arrow(t).repartition(5)
        routed = executor.route(data, "p", partitions=3)
        assert set(routed) == set(range(11))
        for p, handle in routed.items():
            part = handle if isinstance(executor, LocalExecutor) else ray.get(handle)
            mine = sorted(x for q, x in zip(part.column("p").to_pylist(), part.column("x").to_pylist(), strict=True)
                          if q == p)
            assert mine == list(range(p, 300, 11))
