"""Which row of a cluster is kept (keep policy, deterministic tie-break), in process (no Ray)."""

from __future__ import annotations

import pyarrow as pa

from dataprep.columns import DUPLICATE_OF, REJECT
from dataprep.stages.dedup.stage import MinHashDedup
from tests.stages.dedup.local import dedup_in_process

CAPTION = "a man riding a wave on top of a surfboard"


def _table(**cols) -> pa.Table:
    n = len(next(iter(cols.values())))
    return pa.table({"key": [f"k{i}" for i in range(n)][::-1], "caption": [CAPTION] * n, **cols})


def _kept(out: pa.Table) -> set[str]:
    return {k for k, r in zip(out.column("key").to_pylist(), out.column(REJECT).to_pylist(), strict=True)
            if r is None}


def test_longest_duration_is_kept():
    out = dedup_in_process(MinHashDedup(MinHashDedup.Params(mode="text", keep="duration")),
                           _table(duration=[3.0, 9.5, 1.0]))
    assert _kept(out) == {"k1"}  # keys are k2, k1, k0: the 9.5 s row is k1
    assert set(out.column(DUPLICATE_OF).drop_null().to_pylist()) == {"k1"}


def test_largest_resolution_and_missing_values_lose():
    out = dedup_in_process(MinHashDedup(MinHashDedup.Params(mode="text", keep="resolution")),
                           _table(width=[640, 1920, None], height=[480, 1080, 2000]))
    assert _kept(out) == {"k1"}


def test_ties_go_to_the_smallest_key_whatever_the_order():
    for n_parts in (1, 3):
        out = dedup_in_process(MinHashDedup(MinHashDedup.Params(mode="text", keep="score", score_column="s")),
                               _table(s=[0.5, 0.5, 0.5, 0.1]), n_parts=n_parts)
        assert _kept(out) == {"k1"}  # k3, k2, k1 tie at 0.5; k0 scores lower
        assert out.column("dup_cluster").to_pylist() == ["k1"] * 4


def test_null_and_empty_captions_are_never_duplicates():
    t = pa.table({"key": ["a", "b", "c", "d"], "caption": [None, "", "  ...  ", None],
                  "width": [1, 1, 1, 1], "height": [1, 1, 1, 1]})
    out = dedup_in_process(MinHashDedup(MinHashDedup.Params(mode="text")), t)
    assert out.column(REJECT).null_count == 4


def test_keep_key_needs_no_column_and_keeps_the_smallest_key():
    stage = MinHashDedup(MinHashDedup.Params(mode="text", keep="key"))
    assert stage.reads == ("key", "caption")  # a text-only dataset has no frames, sizes or scores
    out = dedup_in_process(stage, pa.table({"key": ["k2", "k1", "k0"], "caption": [CAPTION] * 3}))
    assert _kept(out) == {"k0"}
    assert out.column(DUPLICATE_OF).to_pylist() == ["k0", "k0", None]  # keys are k2, k1, k0
