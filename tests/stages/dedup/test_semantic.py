"""`semantic_dedup`: near-duplicate embeddings found (recall 1, no false merge), pairs split by a
k-means boundary still found, the keep policy of `minhash_dedup`, every row out exactly once,
bad rows rejected with a reason, and its pieces (k-means, tiled components) checked alone."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from dataprep.columns import DUPLICATE_OF, REJECT
from dataprep.executor import LocalExecutor
from dataprep.ray_executor import RayExecutor
from dataprep.stages.dedup import kmeans, pairwise
from dataprep.stages.dedup.components import local_components
from dataprep.stages.dedup.semantic import SemanticDedup

DIM = 64


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _table(vectors, **cols) -> pa.Table:
    """Rows k0000.. with `clip_embedding` as list<float32> (what parquet gives back)."""
    vals = [None if v is None else list(map(float, v)) for v in vectors]
    return pa.table({"key": [f"k{i:04d}" for i in range(len(vals))],
                     "clip_embedding": pa.array(vals, pa.list_(pa.float32())), **cols})


def _run(table: pa.Table, **opts) -> pa.Table:
    return SemanticDedup(**{"keep": "key", **opts}).run(table, LocalExecutor())


def _planted(seed: int = 0):
    """600 distinct rows on 30 topics (cosine ~0.5 within a topic, ~0 across) and 60 groups of 2-4
    copies, at noise 0.1, of a row drawn like them (cosine ~0.99 between copies). Returns the vectors and
    each row's group (-1 for distinct rows)."""
    rng = np.random.default_rng(seed)
    topics = _unit(rng.standard_normal((30, DIM)))
    distinct = _unit(topics[rng.integers(0, 30, 600)] + rng.standard_normal((600, DIM)) / np.sqrt(DIM))
    vecs, group = [distinct], [np.full(600, -1)]
    for g in range(60):
        base = _unit(topics[g % 30] + rng.standard_normal(DIM) / np.sqrt(DIM))   # drawn like a distinct row
        n = 2 + g % 3
        vecs.append(_unit(base + 0.1 * rng.standard_normal((n, DIM)) / np.sqrt(DIM)))
        group.append(np.full(n, g))
    vecs, group = np.concatenate(vecs), np.concatenate(group)
    order = rng.permutation(len(vecs))             # copies scattered over the table
    return vecs[order], group[order]


def _decisions(out: pa.Table) -> dict[str, tuple[str | None, str | None]]:
    return {k: (r, d) for k, r, d in zip(out.column("key").to_pylist(), out.column(REJECT).to_pylist(),
                                         out.column(DUPLICATE_OF).to_pylist(), strict=True)}


def _check_planted(out: pa.Table, table: pa.Table, group: np.ndarray) -> None:
    """Recall 1 and no false merge: one row of each group kept, every other copy removed naming a
    kept row of its own group; no distinct row removed; every input row out exactly once."""
    keys = table.column("key").to_pylist()
    assert sorted(out.column("key").to_pylist()) == sorted(keys)          # once each, none added
    got = _decisions(out)
    group_of = dict(zip(keys, group.tolist(), strict=True))
    for g in range(group.max() + 1):
        members = [k for k in keys if group_of[k] == g]
        kept = [k for k in members if got[k][0] is None]
        assert len(kept) == 1, (g, [got[k] for k in members])
        for k in members:
            if k != kept[0]:
                reason, dup_of = got[k]
                assert reason.startswith("semantic_dup:near_duplicate: cosine ") and reason.endswith(kept[0])
                assert dup_of == kept[0]
    assert all(got[k] == (None, None) for k in keys if group_of[k] < 0)


def test_planted_copies_are_found_with_recall_1_and_no_false_merge():
    vecs, group = _planted()
    table = _table(vecs)
    stage = SemanticDedup(keep="key", n_clusters=8, num_partitions=3)
    out = stage.run(table, LocalExecutor())
    _check_planted(out, table, group)
    assert stage.stats["clusters"] == 8 and stage.stats["removed"] == int((np.bincount(group[group >= 0]) - 1).sum())
    # A removed row records its cosine to the kept row, at or above the threshold.
    sim = out.column("semantic_similarity").to_numpy(zero_copy_only=False)
    removed = np.array([r is not None for r in out.column(REJECT).to_pylist()])
    assert (sim[removed] >= 0.95).all() and np.isnan(sim[~removed]).all()


def test_pairs_are_found_whatever_the_number_of_clusters():
    vecs, group = _planted(seed=1)
    table = _table(vecs)
    for k in (1, 40):
        _check_planted(_run(table, n_clusters=k, num_partitions=2), table, group)


def test_an_oversized_cluster_is_split_and_its_copies_still_found():
    """One topic holds 2,000 of 2,440 rows: its cluster would cost 2,000^2 / 2 pairs, so it is
    split by k-means on a sample of its members; the copies planted in it are still found."""
    rng = np.random.default_rng(6)
    topics = _unit(rng.standard_normal((12, DIM)))
    z = np.r_[np.zeros(2000, np.int64), np.repeat(np.arange(1, 12), 40)]
    vecs = _unit(topics[z] + rng.standard_normal((len(z), DIM)) / np.sqrt(DIM))
    group = np.full(len(z), -1)
    for g in range(30):                                   # copies of rows of the big topic
        i, j = 2 * g, 2 * g + 1
        vecs[j] = _unit(vecs[i] + 0.1 * rng.standard_normal(DIM) / np.sqrt(DIM))
        group[[i, j]] = g
    table = _table(vecs)
    stage = SemanticDedup(keep="key", n_clusters=12)
    out = stage.run(table, LocalExecutor())
    _check_planted(out, table, group)
    assert stage.stats["clusters_split"] >= 1 and stage.stats["largest_cluster"] < 1000


def _boundary_table() -> tuple[pa.Table, str, str]:
    """Two mirror-image clusters around e0 and e1 and a near-identical pair (cosine 0.9998) on
    either side of their bisector x0 = x1: k-means (k=2) puts the two in different clusters."""
    rng = np.random.default_rng(3)
    a = _unit(np.eye(DIM)[0] + rng.standard_normal((100, DIM)) / np.sqrt(DIM))   # cosine ~0.5 between them
    b = a[:, [1, 0, *range(2, DIM)]]                  # the mirror image across x0 = x1
    x = _unit(1.01 * np.eye(DIM)[0] + 0.99 * np.eye(DIM)[1])
    y = x[[1, 0, *range(2, DIM)]]
    table = _table(np.concatenate([a, b, [x, y]]))
    return table, "k0200", "k0201"


def test_a_pair_split_across_clusters_is_found_through_the_second_cluster():
    table, x, y = _boundary_table()
    got = _decisions(_run(table, n_clusters=2))
    assert got[y] == (got[y][0], x) and got[y][0].startswith("semantic_dup:near_duplicate")
    assert sum(r is not None for r, _ in got.values()) == 1
    # Without second-cluster assignment the pair is missed: it really was split by the boundary.
    off = _decisions(_run(table, n_clusters=2, boundary_margin=0))
    assert all(r is None for r, _ in off.values())


def test_assign_meets_every_pair_whose_clusters_are_each_others_second():
    """The argument of `kmeans.assign`: with margin = the duplicate distance, x in A and y in B
    share a cluster whenever B is x's second-nearest centroid."""
    rng = np.random.default_rng(5)
    centroids = _unit(rng.standard_normal((12, 8)))
    x = _unit(rng.standard_normal((4000, 8)))
    y = _unit(x + 0.3 * _unit(rng.standard_normal((4000, 8))) * rng.random((4000, 1)))
    r = float(np.linalg.norm(x - y, axis=1).max())
    f, s = kmeans.assign(np.concatenate([x, y]), centroids, r)
    fx, sx, fy = f[:4000], s[:4000], f[4000:]
    sims = x @ centroids.T
    second_of_x = np.argsort(-sims, axis=1)[:, 1]
    split = (fx != fy) & (second_of_x == fy)
    assert split.sum() > 100                               # the case occurs often here
    assert (sx[split] == fy[split]).all()
    # With no margin no row gets a second cluster.
    assert (kmeans.assign(x, centroids, 0.0)[1] == -1).all()


@pytest.mark.parametrize(("keep", "cols", "winner"), [
    ("score", {"aesthetic": [0.2, 0.9, 0.5]}, "k0001"),
    ("duration", {"duration": [3.0, 1.0, 9.5]}, "k0002"),
    ("resolution", {"width": [640, 1920, None], "height": [480, 1080, 2000]}, "k0001"),
    ("key", {}, "k0000"),
])
def test_keep_policy_of_minhash_dedup(keep, cols, winner):
    base = _unit(np.random.default_rng(0).standard_normal(DIM))
    copies = _unit(base + 0.05 * np.random.default_rng(1).standard_normal((3, DIM)) / np.sqrt(DIM))
    extra = {"score_column": "aesthetic"} if keep == "score" else {}
    out = SemanticDedup(keep=keep, **extra).run(_table(copies, **cols), LocalExecutor())
    got = _decisions(out)
    assert [k for k, (r, _) in got.items() if r is None] == [winner]
    assert {d for _, d in got.values() if d} == {winner}
    assert out.column("semantic_cluster").to_pylist() == [winner] * 3


def test_ties_go_to_the_smallest_key_whatever_the_row_order():
    base = _unit(np.random.default_rng(0).standard_normal(DIM))
    t = _table([base] * 4, s=[0.5, 0.5, 0.1, 0.5])
    t = t.set_column(0, "key", pa.array(["k3", "k1", "k0", "k2"]))
    out = SemanticDedup(keep="score", score_column="s").run(t, LocalExecutor())
    assert [k for k, (r, _) in _decisions(out).items() if r is None] == ["k1"]  # k0 scores lower


def test_chained_rows_name_a_row_they_are_similar_to():
    """A~B and B~C with A unlike C: C is not removed in A's name (connected components chain)."""
    e0, e1 = np.eye(DIM)[0], np.eye(DIM)[1]
    a, b, c = _unit(e0), _unit(e0 + 0.25 * e1), _unit(e0 + 0.5 * e1)     # cos(a,b)=cos(b,c)=0.97, cos(a,c)=0.89
    got = _decisions(_run(_table([a, b, c])))
    assert got["k0000"] == (None, None) and got["k0001"][1] == "k0000"
    assert got["k0002"] == (None, None)


def test_rows_without_a_usable_embedding_are_rejected_not_crashed():
    base = _unit(np.random.default_rng(0).standard_normal(4))
    t = _table([base, None, [], [0.0] * 4, [float("nan"), 1, 2, 3], base * 3])
    got = _decisions(_run(t))
    assert got["k0000"] == (None, None)
    assert got["k0001"][0] == got["k0002"][0] == "semantic_dup:no_embedding: `clip_embedding` is null or empty"
    assert got["k0003"][0] == "semantic_dup:bad_embedding: `clip_embedding` is the zero vector"
    assert got["k0004"][0] == "semantic_dup:bad_embedding: `clip_embedding` holds NaN or infinite values"
    assert got["k0005"][0].startswith("semantic_dup:near_duplicate: cosine 1.0000 >= 0.95 to k0000")
    # With fewer than two usable rows there is nothing to compare: only the bad rows go.
    only = _decisions(_run(_table([base, None])))
    assert only["k0000"] == (None, None) and only["k0001"][0].startswith("semantic_dup:no_embedding")


def test_an_earlier_reason_is_kept():
    base = _unit(np.random.default_rng(0).standard_normal(DIM))
    t = _table([base, base]).append_column(REJECT, pa.array([None, "blur:too_blurry: 3 < 40"]))
    got = _decisions(_run(t))
    assert got == {"k0000": (None, None), "k0001": ("blur:too_blurry: 3 < 40", None)}


def test_vector_lengths_that_disagree_are_a_clear_error():
    with pytest.raises(ValueError, match=r"vectors of different lengths \(length: rows\) \{3: 1, 4: 2\}.*fix: "):
        _run(_table([[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 1]]))
    with pytest.raises(ValueError, match=r"`dim` is 512 but `clip_embedding` holds vectors of length 4; fix: "):
        _run(_table([[1, 0, 0, 0], [0, 1, 0, 0]]), dim=512)
    assert _run(_table([[1, 0, 0, 0], [1, 0, 0, 0]]), dim=4).column(REJECT).null_count == 1


def test_missing_columns_fail_before_any_work():
    t = _table([[1.0, 0.0]])
    with pytest.raises(ValueError, match=r"reads \['width', 'height'\].*fix: add the stage"):
        SemanticDedup().run(t, LocalExecutor())   # keep=resolution by default
    assert SemanticDedup(keep="key", column="emb").reads == ("key", "emb")
    assert SemanticDedup(keep="score", score_column="aesthetic").reads == ("key", "clip_embedding", "aesthetic")


def test_empty_input():
    t = _table([]).slice(0, 0)
    assert _run(t).num_rows == 0


@pytest.mark.parametrize(("opts", "message"), [
    ({"threshold": 1.0}, "`threshold` must be in (0, 1), got 1.0"),
    ({"boundary_margin": 1.5}, "`boundary_margin` must be in [0, 1], got 1.5"),
    ({"n_clusters": 0}, "`n_clusters` must be >= 1, got 0"),
    ({"keep": "score"}, "keep=score needs `score_column`"),
    ({"treshold": 0.9}, "Extra inputs are not permitted"),
])
def test_bad_options_fail_at_construction(opts, message):
    with pytest.raises(ValidationError) as err:
        SemanticDedup.Params(**opts)
    assert message in str(err.value)


def test_every_option_is_documented():
    for name, field in SemanticDedup.Params.model_fields.items():
        assert field.description and len(field.description) > 20, name


# -- pieces ---------------------------------------------------------------------------------
def test_tiled_components_match_all_pairs(monkeypatch):
    monkeypatch.setattr(pairwise, "TILE", 64)             # many tiles, diagonal and off-diagonal
    rng = np.random.default_rng(2)
    v = _unit(rng.standard_normal((300, 16)))
    for i, j in [(5, 290), (290, 100), (7, 8), (200, 201)]:  # chains and pairs across tiles
        v[j] = _unit(v[i] + 0.05 * rng.standard_normal(16))
    v[250] = v[251] = v[3]                                # exact copies collapse to one row
    label, compared = pairwise.components(v, 0.95)
    sims = v @ v.T
    i, j = np.nonzero(np.triu(sims >= 0.95, 1))
    want = local_components(i.astype(np.uint64), j.astype(np.uint64))
    assert {n: int(label[n]) for n in want} == want
    assert (label[np.setdiff1d(np.arange(300), list(want))] == np.setdiff1d(np.arange(300), list(want))).all()
    assert compared == 298 * 297 // 2                      # 300 rows, 2 of them copies


def test_a_mass_of_identical_vectors_costs_one_row():
    base = _unit(np.random.default_rng(0).standard_normal(DIM))
    others = _unit(np.random.default_rng(1).standard_normal((50, DIM)))
    stage = SemanticDedup(keep="key", n_clusters=1)
    out = stage.run(_table(np.concatenate([np.tile(base, (5000, 1)), others])), LocalExecutor())
    assert out.column(REJECT).null_count == 51
    assert stage.stats["pairs_compared"] == 51 * 50 // 2   # not 5050 x 5049 / 2


def test_kmeans_finds_separated_clusters_whatever_the_seed():
    """Greedy k-means++ seeding puts one centroid in each of 8 tight clusters for every seed tried
    (plain k-means++ seeds two in one cluster for some, and Lloyd steps do not undo it)."""
    rng = np.random.default_rng(4)
    centers = _unit(rng.standard_normal((8, DIM)))
    x = _unit(np.repeat(centers, 125, axis=0) + 0.2 * rng.standard_normal((1000, DIM)) / np.sqrt(DIM))
    for seed in range(10):
        c = kmeans.kmeans_pp(x, 8, seed=seed)
        for _ in range(5):
            c, shift = kmeans.update(c, *kmeans.partial_sums(x, c))
        first, _ = kmeans.assign(x, c, 0.0)
        assert sorted(np.bincount(first, minlength=8).tolist()) == [125] * 8 and shift < 1e-4, seed
    assert kmeans.auto_clusters(1_000_000, 10) == 302 and kmeans.auto_clusters(3, 10) == 1


# -- on Ray ---------------------------------------------------------------------------------
def test_run_on_ray_matches_in_process(ray_session):
    ray = ray_session
    vecs, group = _planted(seed=2)
    table = _table(vecs, aesthetic=np.random.default_rng(0).random(len(vecs)))
    stage = SemanticDedup(keep="score", score_column="aesthetic", n_clusters=6, iterations=3, num_partitions=3)
    out = pa.concat_tables(ray.get(stage.run(ray.data.from_arrow(table).repartition(4), RayExecutor())
                                   .to_arrow_refs()))
    assert stage.stats["blocks"] == 4
    _check_planted(out, table, group)
    assert _decisions(out) == _decisions(stage.run(table, LocalExecutor()))
    assert set(out.column_names) == set(table.column_names) | {REJECT, DUPLICATE_OF, "semantic_cluster",
                                                               "semantic_similarity"}
    assert stage.run(ray.data.from_arrow(table.slice(0, 0)), RayExecutor()).count() == 0
