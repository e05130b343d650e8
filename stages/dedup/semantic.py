"""`semantic_dedup`: remove rows whose embeddings (CLIP, by default) are near-identical.

Pipeline (through the executor: Ray tasks under the runner; the driver holds k centroids'
worth of numbers, never a row-sized array):
1. scan: per block, the vector length of each row (mixed lengths or a `dim` mismatch fail here).
2. spherical k-means: k-means++ on a sample drawn from every block, then Lloyd steps where
   each block returns (K, D) partial sums against the current centroids (kmeans.py); a
   cluster over twice the mean size is then split by k-means on a sample of its members.
3. assignment: each row to its nearest centroid and, near the boundary with its second-nearest,
   to that one too (`boundary_margin`); clusters are packed into partitions
   of similar size and each row's vector is routed to its cluster's partition.
4. pairs: per cluster, cosine similarity in tiles (never the whole matrix), pairs at or above
   `threshold` merged into components there (pairwise.py); emitted as star edges.
5. connected components across clusters (a row in two clusters joins their components):
   the large-star / small-star rounds of `minhash_dedup` (components.py).
6. decision: members grouped by component, ordered by the keep policy of `minhash_dedup`;
   the best row represents the rows at or above the threshold to it, the best of the rest
   those similar to it, and so on (so `_duplicate_of` always names a row at least that similar).
7. the decisions go back to their blocks, which get `_reject`
   (`semantic_dup:near_duplicate: cosine 0.9731 >= 0.95 to KEY`), `_duplicate_of`,
   `semantic_cluster` (kept row's key, on every member of a duplicate group) and
   `semantic_similarity` (a removed row's cosine to the kept one). A row without a usable
   vector is rejected (`semantic_dup:no_embedding: ...`), never a crash.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from dataprep.columns import KEY
from dataprep.executor import Executor
from dataprep.stage import GlobalStage, StageParams
from dataprep.stages.dedup.semantic_steps import CLUSTER, SIMILARITY

log = logging.getLogger(__name__)

# Lloyd stops once no centroid moves more than this (1 - cosine): the partition no longer changes
# enough to matter, since clusters only bound the pairwise work.
_TOLERANCE = 1e-4
# k-means++ sample: 32 rows per cluster (each centroid seeded among enough candidates), at least
# 10,000; k-means++ costs sample x k dot products in one task, ~0.5 s for 1M rows.
_SAMPLE_PER_CLUSTER, _SAMPLE_MIN = 32, 10_000
# A cluster above this many times the mean size is split (see `_split_oversized`): 2 bounds the
# pairwise work at about twice that of equal clusters.
_MAX_CLUSTER = 2.0
# Bytes of vectors per partition when `num_partitions` is not set: one pairwise task's memory.
_PARTITION_BYTES = 128 << 20


class SemanticDedupParams(StageParams):
    """Options of `semantic_dedup`."""

    column: str = Field("clip_embedding", description="Column of embedding vectors (a list of floats per "
                                                      "row, as `clip_embed` writes); any scale, vectors are "
                                                      "normalized here.")
    threshold: float = Field(0.95, description="Cosine similarity (0-1) from which two rows are duplicates "
                                               "(SemDeDup's eps = 1 - threshold = 0.05). 0.95: the low end of the "
                                               "0.95-0.99 range in use for CLIP near-duplicates, so resizes, "
                                               "re-encodes and light crops of one picture go too, not only exact "
                                               "copies; raise it toward 0.99 to remove only copies. Not "
                                               "calibrated here on real ViT-B/32 vectors (no weights offline).")
    n_clusters: int | None = Field(None, description="k-means clusters. None: sqrt(rows / (iterations + 1)), "
                                                     "302 for 1M rows at 10 iterations, which minimizes Lloyd's "
                                                     "work (iterations x rows x k) plus the pairwise work "
                                                     "(rows^2 / k); clusters over twice the mean size are then "
                                                     "split.")
    iterations: int = Field(10, description="Lloyd iterations at most, each one pass over every vector; "
                                            "stops earlier once no centroid moves by 1e-4 in cosine. 10: "
                                            "clusters only bound the pairwise work, a roughly converged "
                                            "partition is enough.")
    boundary_margin: float = Field(0.1, description="Also put a row into its second-nearest cluster when it "
                                                    "lies within this fraction of the duplicate distance "
                                                    "(sqrt(2 - 2 threshold)) of the boundary between the two, so "
                                                    "a pair split by that boundary still meets (kmeans.assign). "
                                                    "0.1: in the 100k-row benchmark recall 0.999 against 0.943 "
                                                    "with 0, for ~47% extra rows; 0.25 and 1 (no pair whose "
                                                    "clusters are each other's second missed) found no more, for "
                                                    "67% and 94%. 0: off.")
    seed: int = Field(42, description="Seed of the k-means samples and seeding; the same seed and the same "
                                      "input blocks give the same clusters and decisions.")
    keep: Literal["score", "duration", "resolution", "key"] = Field(
        "resolution", description="Which row of a duplicate group survives, as in `minhash_dedup`: highest "
                                  "`score_column`, longest duration, most pixels, or (`key`) the smallest key, "
                                  "which needs no column. Ties go to the smallest key.")
    score_column: str | None = Field(None, description="Column whose highest value wins when keep=score.")
    dim: int | None = Field(None, description="Expected vector length (512 for CLIP ViT-B/32). None: whatever "
                                              "the rows hold, as long as they all agree; set it to fail before "
                                              "any work when the embedding model is not the one you meant.")
    num_partitions: int | None = Field(None, description="Partitions of the clusters, edges and decisions. None: "
                                                         "enough that each holds ~128 MiB of vectors, the memory "
                                                         "of one pairwise task; more spread small inputs over "
                                                         "more cores.")
    max_rounds: int = Field(64, description="Cap on connected-component rounds (they converge in a few).")

    @field_validator("threshold")
    @classmethod
    def _unit_open(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError(f"`threshold` must be in (0, 1), got {v}")
        return v

    @field_validator("boundary_margin")
    @classmethod
    def _unit_closed(cls, v: float) -> float:
        if not 0 <= v <= 1:
            raise ValueError(f"`boundary_margin` must be in [0, 1], got {v}")
        return v

    @field_validator("n_clusters", "iterations", "dim", "num_partitions", "max_rounds")
    @classmethod
    def _positive(cls, v: int | None, info) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"`{info.field_name}` must be >= 1, got {v}")
        return v

    @model_validator(mode="after")
    def _check(self) -> SemanticDedupParams:
        if self.keep == "score" and not self.score_column:
            raise ValueError("keep=score needs `score_column`, the column whose highest value wins")
        return self


class SemanticDedup(GlobalStage):
    """Near-duplicate removal by cosine similarity of embeddings, within k-means clusters."""

    name: ClassVar[str] = "semantic_dedup"
    # The key and the default embedding column; an instance's `reads` follows its options
    # (`column`, and the keep-policy columns); `run` checks them first.
    reads: ClassVar[tuple[str, ...]] = (KEY, "clip_embedding")
    writes: ClassVar[tuple[str, ...]] = (CLUSTER, SIMILARITY)
    Params: ClassVar[type[StageParams]] = SemanticDedupParams
    one_task_when_small: ClassVar[bool] = True  # `run` uses only the executor

    def __init__(self, params: SemanticDedupParams | None = None, **options: Any) -> None:
        super().__init__(params, **options)
        p: SemanticDedupParams = self.params
        policy = {"score": [p.score_column], "duration": ["duration"], "resolution": ["width", "height"],
                  "key": []}[p.keep]
        self.reads = (KEY, p.column, *policy)
        self.stats: dict[str, Any] = {}  # filled by run(): clusters, partitions, work, seconds per phase

    def tiny_params(self, cache_dir: str) -> StageParams:
        """Under --tiny-models the embeddings come from a random CLIP, which maps distinct pictures close
        together: only copies whose embeddings are the same count as duplicates then."""
        return self.params.model_copy(update={"threshold": 0.9999})

    def _dimension(self, lengths: Counter) -> int:
        """The vector length of every row; a clear error when rows disagree or differ from `dim`."""
        p: SemanticDedupParams = self.params
        if len(lengths) > 1:
            raise ValueError(f"semantic_dedup: `{p.column}` holds vectors of different lengths (length: rows) "
                             f"{dict(sorted(lengths.items()))}; embeddings of different models cannot be "
                             "compared; fix: embed every row with one model (one `clip_embed` configuration)")
        d = next(iter(lengths), 0)
        if p.dim is not None and lengths and d != p.dim:
            raise ValueError(f"semantic_dedup: `dim` is {p.dim} but `{p.column}` holds vectors of length {d}; "
                             f"fix: set `dim: {d}`, or embed with the model whose vectors have {p.dim} values")
        return d

    def _split_oversized(self, ex: Executor, blocks: list, centroids: Any, sizes: np.ndarray,
                         mean: float) -> tuple[Any, int]:
        """Centroids with every cluster above `_MAX_CLUSTER` x the mean size replaced by
        size / mean centroids fitted on a sample of its members; and how many were split.

        Dense regions of the data (a popular subject) draw clusters many times the mean, and a
        cluster of m rows costs m^2 / 2 pairs; the assignment that follows takes any set of
        centroids, so the boundary argument of `kmeans.assign` still holds."""
        from dataprep.stages.dedup import semantic_steps as S

        big = np.flatnonzero(sizes > _MAX_CLUSTER * mean)
        if len(big) == 0:
            return centroids, 0
        pieces = {int(c): math.ceil(sizes[c] / mean) for c in big}
        rate = np.zeros(len(sizes))
        for c, k in pieces.items():
            rate[c] = min(1.0, _SAMPLE_PER_CLUSTER * k / sizes[c])
        samples = [ex.call(S.sample_members, b, self.params.column, centroids, rate, [self.params.seed, 1, i])
                   for i, b in enumerate(blocks)]
        return ex.call(S.split_clusters, centroids, pieces, self.params.seed, *samples), len(big)

    def run(self, ds: Any, executor: Executor) -> Any:
        """Return every row of `ds` with `_reject`, `_duplicate_of`, `semantic_cluster` and
        `semantic_similarity` set."""
        from dataprep.stages.dedup import semantic_steps as S

        ex = executor
        p: SemanticDedupParams = self.params
        missing = [c for c in self.reads if c not in ex.columns(ds)]
        if missing:
            raise ValueError(f"semantic_dedup (column={p.column}, keep={p.keep}) reads {missing}, which the rows "
                             "do not have; fix: add the stage that writes them (clip_embed for the embeddings, "
                             "probe for width/height/duration) or change `column`/`keep`")
        t0 = time.perf_counter()
        # Materialize once: the upstream pipeline must not run again for each pass over the vectors.
        blocks = ex.blocks(ds)
        if not blocks:
            return ds
        scans = ex.get([ex.call(S.scan_block, b, p.column) for b in blocks])
        dim = self._dimension(S.dims(scans))
        valid = [sum(s["lengths"].values()) for s in scans]
        self.stats = {"blocks": len(blocks), "rows": sum(s["rows"] for s in scans), "valid_rows": sum(valid),
                      "dim": dim}
        if sum(valid) < 2:  # nothing to compare: only rows without a vector are rejected
            return ex.dataset([ex.call(S.annotate_block, b, i, p.column, p.threshold) for i, b in enumerate(blocks)])
        centroids = self._kmeans(ex, blocks, valid)
        t_kmeans = time.perf_counter()
        edge_parts = self._pairs(ex, blocks, centroids, dim, sum(valid))
        t_pairs = time.perf_counter()
        edge_parts = self._components(ex, edge_parts)
        t_cc = time.perf_counter()
        out = self._decide(ex, blocks, edge_parts)
        self.stats["seconds"] = {"kmeans": round(t_kmeans - t0, 1), "pairs": round(t_pairs - t_kmeans, 1),
                                 "components": round(t_cc - t_pairs, 1),
                                 "decide_annotate": round(time.perf_counter() - t_cc, 1)}
        log.info("semantic_dedup: %s", self.stats)
        return ex.dataset(out)

    def _kmeans(self, ex: Executor, blocks: list, valid: list[int]) -> Any:
        """Centroids (a handle): k-means++ on a sample of every block, Lloyd steps, oversized
        clusters split."""
        from dataprep.stages.dedup import semantic_steps as S
        from dataprep.stages.dedup.kmeans import auto_clusters

        p: SemanticDedupParams = self.params
        n_valid = sum(valid)
        k = min(p.n_clusters or auto_clusters(n_valid, p.iterations), n_valid)
        want = min(n_valid, max(_SAMPLE_MIN, _SAMPLE_PER_CLUSTER * k))
        samples = [ex.call(S.sample_block, b, p.column, math.ceil(want * v / n_valid), [p.seed, i])
                   for i, (b, v) in enumerate(zip(blocks, valid, strict=True)) if v]
        centroids = ex.call(S.init_centroids, k, p.seed, *samples)
        iterations, shift = 0, float("nan")
        for _ in range(p.iterations):
            partials = [ex.call(S.lloyd_block, b, p.column, centroids) for b in blocks]
            centroids, shift_ref = ex.call(S.update_centroids, centroids, *partials, num_returns=2)
            iterations += 1
            shift = ex.get([shift_ref])[0]
            if shift < _TOLERANCE:
                break
        sizes = ex.get([ex.call(S.total_counts, *partials)])[0]               # (K,) small
        centroids, n_split = self._split_oversized(ex, blocks, centroids, sizes, n_valid / k)
        self.stats.update({"kmeans_iterations": iterations, "last_centroid_shift": round(shift, 6),
                           "clusters_split": n_split})
        return centroids

    def _pairs(self, ex: Executor, blocks: list, centroids: Any, dim: int, n_valid: int) -> list[list]:
        """Each row routed to its cluster(s), clusters packed into partitions, similar pairs found
        per cluster: star edges per node partition (P lists of handles)."""
        from dataprep.stages.dedup import semantic_steps as S
        from dataprep.stages.dedup.kmeans import duplicate_radius

        p: SemanticDedupParams = self.params
        margin = p.boundary_margin * duplicate_radius(p.threshold)
        assigned = [ex.call(S.assign_block, b, p.column, centroids, margin, num_returns=2) for b in blocks]
        counts = np.sum(ex.get([a[1] for a in assigned]), axis=0)              # (K,) rows per cluster
        P = p.num_partitions or max(1, math.ceil(int(counts.sum()) * dim * 4 / _PARTITION_BYTES))
        cluster_part = ex.put(S.plan_partitions(counts, P))
        routes = [ex.call(S.route_block, b, i, p.column, a[0], cluster_part, P, num_returns=P + 1)
                  for i, (b, a) in enumerate(zip(blocks, assigned, strict=True))]
        pairs = [ex.call(S.pairs_partition, p.threshold, P, *[r[j] for r in routes], num_returns=P + 1)
                 for j in range(P)]
        work = ex.get([q[P] for q in pairs])
        self.stats.update({
            "clusters": len(counts), "largest_cluster": int(counts.max()),
            "second_assignments": int(counts.sum()) - n_valid, "partitions": P,
            "rows_per_partition": [w["records"] for w in work],
            "pairs_compared": sum(w["pairs_compared"] for w in work), "star_edges": sum(w["edges"] for w in work)})
        return [[q[i] for q in pairs] for i in range(P)]

    def _components(self, ex: Executor, edge_parts: list[list]) -> list[list]:
        """Large-star / small-star rounds until the edge set stops changing: stars per partition."""
        from dataprep.stages.dedup.steps import star_partition

        P = len(edge_parts)
        prev, rounds = None, 0
        while rounds < self.params.max_rounds:
            rounds += 1
            for large in (True, False):
                res = [ex.call(star_partition, large, P, *parts, num_returns=P + 1) for parts in edge_parts]
                edge_parts = [[r[i] for r in res] for i in range(P)]
            # Fingerprint of the edge set that entered small-star: unchanged means a fixpoint.
            total = sum(ex.get([r[P] for r in res])) % (1 << 64)
            if total == prev:
                break
            prev = total
        self.stats["cc_rounds"] = rounds
        return edge_parts

    def _decide(self, ex: Executor, blocks: list, edge_parts: list[list]) -> list:
        """Members of each component gathered from their blocks, decided by the keep policy, and
        the decisions written into their blocks: the output blocks (handles)."""
        from dataprep.stages.dedup import semantic_steps as S

        p: SemanticDedupParams = self.params
        P = len(edge_parts)
        members = [ex.call(S.members_partition, P, *edge_parts[i], num_returns=P + 1) for i in range(P)]
        gathered = [ex.call(S.gather_block, b, i, p.column, p, P, *[m[i % P] for m in members], num_returns=P + 1)
                    for i, b in enumerate(blocks)]
        decisions = [ex.call(S.decide_partition, p.threshold, P, *[g[j] for g in gathered], num_returns=P + 1)
                     for j in range(P)]
        out = [ex.call(S.annotate_block, b, i, p.column, p.threshold, *[d[i % P] for d in decisions])
               for i, b in enumerate(blocks)]
        self.stats["removed"] = sum(ex.get([d[P] for d in decisions]))
        ex.wait(out)
        return out
